"""A large synthetic log written in chunks of users: the planted structure of :mod:`rectorch.data.synthetic` at
tens of millions of interactions, in memory bounded by the chunk size.

Output folder (``LargeSyntheticWriter(...).write(out)``)::

    interactions/part-00000.parquet ...  one part per chunk of users: user_id, item_id, timestamp (int64 seconds),
                                         rows in time order within a part, like a shard of a log
    items.parquet                        item_id, category (string)
    users.parquet                        user_id, segment (string)
    meta.json                            the arguments, rows per part, seconds taken

Planted structure, as in :class:`~rectorch.data.synthetic.SyntheticSource` (the same catalogue code):
- items belong to categories and have Zipf-like popularity;
- users belong to taste segments that prefer ``categories_per_segment`` categories (per-user gamma weights);
  off-taste mass 0.4 goes to a uniformly drawn category, as in the default small dataset, whatever
  ``num_categories`` is, so segments stay visible with a thousand categories;
- each item has one fixed successor in its category (a random cycle per category); with probability
  ``follow_prob`` a user's next item is the successor of the last one;
- timestamps strictly increase per user (a start within 180 days, then ~1 day gaps);
- no user sees an item twice (exact: every draw is checked against the user's earlier items).

Ids are external and not ``0..N-1`` in order: user ids are a multiplicative hash of the user's index (a bijection,
so unique), item ids a seeded permutation, spread out and offset; a preparation must build its own id maps.

Determinism: the catalogue and segments come from the first child of ``SeedSequence(seed)``, chunk ``c`` from
child ``c + 1``, so the files depend on ``seed`` and ``users_per_chunk`` only (not on memory or timing). Another
``users_per_chunk`` gives other rows with the same distribution: a user's draws come from its chunk's stream.
Lengths are ``4 + Geometric(1 / (seq_len_mean - 4))`` (mean ``seq_len_mean``), capped at ``5 * seq_len_mean`` and
at ``num_items``. Memory: the catalogue (O(num_items)) plus one chunk's (users_per_chunk, max length) matrices; about
0.6 GB at 1M items and 100k users per chunk, whatever ``num_users`` is.
"""

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rectorch.data import columns as C
from rectorch.data.arguments import positive_int
from rectorch.data.cells import short
from rectorch.data.errors import DataError
from rectorch.data.synthetic import DAY, EPOCH, _Catalog, check_generator

OFF_TASTE = 0.4  # taste mass on a uniform category: 0.02 × 20 categories, as in SyntheticSource's default
USER_BITS = 40  # user ids hash the index with a bijection of [0, 2**40): odd multipliers and xor-shifts
USER_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9)
USER_OFFSET = 10**13
ITEM_OFFSET = 10**9
ITEM_SPREAD = 7  # item ids are ITEM_OFFSET + ITEM_SPREAD × a permutation: gaps between them
INTERACTIONS = pa.schema([(C.USER, pa.int64()), (C.ITEM, pa.int64()), (C.TIME, pa.int64())])
USERS = pa.schema([(C.USER, pa.int64()), ("segment", pa.string())])


@dataclasses.dataclass
class _World:
    """What every chunk shares: the catalogue, the external item ids and each segment's liked categories."""

    catalog: _Catalog
    item_ids: np.ndarray  # (items,) external id per 0-based item
    liked: np.ndarray  # (segments, categories_per_segment)


@dataclasses.dataclass
class LargeSyntheticWriter:
    """Writes the synthetic log described in the module docstring into a new or empty folder.

    Args:
        num_users: users generated (all appear, each with at least 5 interactions).
        num_items: catalogue size (rarely chosen tail items may not appear).
        num_categories: item categories; ``num_items`` are spread evenly over them.
        num_segments: user taste segments; each prefers ``categories_per_segment`` categories.
        categories_per_segment: preferred categories per segment.
        seq_len_mean: mean interactions per user (at least 5).
        follow_prob: probability that the next item is the last item's successor.
        zipf_exponent: popularity exponent within a category.
        seed: seeds everything (see the module docstring).
        users_per_chunk: users per part file; memory grows with it, not with ``num_users``.
    """

    num_users: int = 2_000_000
    num_items: int = 1_000_000
    num_categories: int = 1_000
    num_segments: int = 100
    categories_per_segment: int = 5
    seq_len_mean: int = 25
    follow_prob: float = 0.5
    zipf_exponent: float = 1.0
    seed: int = 0
    users_per_chunk: int = 100_000

    def __post_init__(self) -> None:
        check_generator(self, shares=("follow_prob",), min_seq_len=5)
        positive_int("users_per_chunk", self.users_per_chunk)
        if self.num_users > 2**USER_BITS:
            raise ValueError(f"num_users must be at most 2**{USER_BITS}, got {self.num_users}")

    @property
    def num_chunks(self) -> int:
        return -(-self.num_users // self.users_per_chunk)

    def user_ids(self, index: np.ndarray) -> np.ndarray:
        """External ids of 0-based user indices (unique, not in index order)."""
        mask = np.uint64((1 << USER_BITS) - 1)
        hashed = index.astype(np.uint64)
        for multiplier in USER_MULTIPLIERS:  # uint64 products wrap modulo 2**64, so modulo 2**40 too
            hashed = (hashed * np.uint64(multiplier)) & mask
            hashed ^= hashed >> np.uint64(USER_BITS // 2)
        return USER_OFFSET + hashed.astype(np.int64)

    def planted_successors(self) -> tuple[np.ndarray, np.ndarray]:
        """External item ids and, aligned, the external id of each one's planted successor."""
        world = self._world()
        return world.item_ids, world.item_ids[world.catalog.successor]

    def write(self, out: str | Path) -> dict[str, Any]:
        """Writes every file into ``out`` (created if missing; refused unless empty) and returns ``meta.json``'s
        content. A failure removes what this call created, and nothing else."""
        start = time.perf_counter()
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        if out.is_dir() and (held := sorted(p.name for p in out.iterdir())):
            raise DataError(f"{out}: folder is not empty (holds {short(held[:3])}); give a new or empty folder")
        world = self._world()
        width = max(5, len(str(self.num_chunks - 1)))
        with _Created() as created:
            parts = created.folder(out / "interactions")
            names = np.char.add("c", np.arange(self.num_categories).astype(str))
            items = pa.table({C.ITEM: world.item_ids, "category": names[world.catalog.category]})
            created.publish(out / "items.parquet", items)
            part_rows = []
            with created.streaming(out / "users.parquet", USERS) as users:
                for chunk in range(self.num_chunks):
                    interactions, user_table = self._chunk(world, chunk)
                    name = f"part-{chunk:0{width}d}.parquet"
                    created.publish(parts / name, interactions)
                    users.write_table(user_table)
                    part_rows.append(interactions.num_rows)
            meta = {
                "generator": f"{__name__}.{type(self).__name__}",
                "arguments": dataclasses.asdict(self),
                "rows": sum(part_rows),
                "users": self.num_users,
                "items": self.num_items,
                "parts": [f"interactions/part-{c:0{width}d}.parquet" for c in range(self.num_chunks)],
                "part_rows": part_rows,
                "seconds": round(time.perf_counter() - start, 2),
            }
            created.publish(out / "meta.json", json.dumps(meta, indent=2) + "\n")
        return meta

    def _world(self) -> _World:
        # SeedSequence(seed, spawn_key=(k,)) is SeedSequence(seed).spawn(k + 1)[k], without building the others
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))
        catalog = _Catalog.generate(rng, self.num_items, self.num_categories, self.zipf_exponent)
        item_ids = ITEM_OFFSET + ITEM_SPREAD * rng.permutation(self.num_items).astype(np.int64)
        liked = np.argsort(rng.random((self.num_segments, self.num_categories)), axis=1)
        return _World(catalog, item_ids, liked[:, : self.categories_per_segment])

    def _chunk(self, world: _World, chunk: int) -> tuple[pa.Table, pa.Table]:
        """Interactions (in time order) and user rows of the users ``chunk × users_per_chunk`` onwards."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(chunk + 1,)))
        first = chunk * self.users_per_chunk
        size = min(self.users_per_chunk, self.num_users - first)
        segment = rng.integers(0, self.num_segments, size)
        weights = np.cumsum(rng.gamma(2.0, size=(size, self.categories_per_segment)), axis=1)
        lengths = 4 + rng.geometric(1 / (self.seq_len_mean - 4), size)
        lengths = np.minimum(lengths, min(5 * self.seq_len_mean, self.num_items))
        order = np.argsort(-lengths, kind="stable")  # longest first: the users still active are a prefix
        taste = _Taste(world.liked[segment[order]], weights[order], self.num_categories, world.catalog)
        sequences = self._sequences(rng, world, taste, lengths[order])
        lengths = lengths[order]
        active = np.arange(sequences.shape[1]) < lengths[:, None]
        owner = np.repeat(np.arange(size), lengths)
        gaps = 1 + np.floor(rng.exponential(DAY, owner.size)).astype(np.int64)
        starts = EPOCH + rng.integers(0, 180 * DAY, size)
        ends = np.cumsum(gaps)
        before = (ends - gaps)[np.cumsum(lengths) - lengths]  # gaps summed over earlier users
        times = starts[owner] + ends - before[owner]
        by_time = np.argsort(times, kind="stable")
        interactions = pa.table(
            {
                C.USER: self.user_ids(first + order[owner[by_time]]),
                C.ITEM: world.item_ids[sequences[active][by_time]],
                C.TIME: times[by_time],
            },
            schema=INTERACTIONS,
        )
        names = np.char.add("s", np.arange(self.num_segments).astype(str))
        users = pa.table({C.USER: self.user_ids(first + np.arange(size)), "segment": names[segment]}, schema=USERS)
        return interactions, users

    def _sequences(self, rng: np.random.Generator, world: _World, taste: "_Taste", lengths: np.ndarray) -> np.ndarray:
        """(users, max length) 0-based items for users sorted by decreasing length; padding past each length."""
        sequences = np.zeros((len(lengths), int(lengths.max())), np.int32)
        successor = world.catalog.successor.astype(np.int32)
        for step in range(sequences.shape[1]):
            active = int(np.count_nonzero(lengths > step))
            choice = taste.sample(rng, np.arange(active))
            if step:
                follow = rng.random(active) < self.follow_prob
                choice = np.where(follow, successor[sequences[:active, step - 1]], choice)
            blocked = np.flatnonzero((sequences[:active, :step] == choice[:, None]).any(axis=1))
            tries = 0
            while blocked.size:  # seen before: redraw by taste, then uniformly (always ends: lengths <= items)
                if tries < 5:
                    redraw = taste.sample(rng, blocked)
                else:
                    redraw = rng.integers(0, self.num_items, blocked.size, dtype=np.int32)
                choice[blocked] = redraw
                blocked = blocked[(sequences[blocked, :step] == redraw[:, None]).any(axis=1)]
                tries += 1
            sequences[:active, step] = choice
        return sequences


@dataclasses.dataclass
class _Taste:
    """Per user of a chunk: liked categories and cumulative gamma weights over them; ``OFF_TASTE`` elsewhere."""

    liked: np.ndarray  # (users, categories_per_segment)
    cumulative: np.ndarray  # (users, categories_per_segment)
    num_categories: int
    catalog: _Catalog

    def sample(self, rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
        """One 0-based item per row: a category from the row's taste, then an item by popularity within it."""
        cumulative = self.cumulative[rows]
        draw = rng.random(len(rows)) * (cumulative[:, -1] + OFF_TASTE)
        pick = (cumulative < draw[:, None]).sum(axis=1)
        liked = self.liked[rows, np.minimum(pick, self.liked.shape[1] - 1)]
        anywhere = rng.integers(0, self.num_categories, len(rows))
        category = np.where(pick < self.liked.shape[1], liked, anywhere)
        position = np.searchsorted(self.catalog.keys, category + rng.random(len(rows)), side="right")
        return self.catalog.order[np.minimum(position, len(self.catalog.order) - 1)].astype(np.int32)


class _Created:
    """The folders and files one ``write`` created, removed again (and only they) if the write fails."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __enter__(self) -> "_Created":
        return self

    def __exit__(self, kind: type | None, *_: Any) -> None:
        if kind is None:
            return
        for path in reversed(self.paths):
            if path.is_dir():
                with suppress(OSError):  # something else appeared in it: the folder stays
                    path.rmdir()
            else:
                path.unlink(missing_ok=True)

    def folder(self, path: Path) -> Path:
        for folder in (path.parent, path):
            if not folder.exists():
                folder.mkdir()
                self.paths.append(folder)
        return path

    def _temporary(self, final: Path) -> Path:
        """A new empty file next to ``final`` (a name no reader of ``*.parquet`` picks up)."""
        temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        temporary.touch(exist_ok=False)  # created here (refused if it exists), with the usual permissions
        self.paths.append(temporary)
        return temporary

    def _rename(self, temporary: Path, final: Path) -> None:
        if final.exists():
            raise DataError(f"{final}: appeared while writing; not overwritten")
        temporary.rename(final)
        self.paths.append(final)

    def publish(self, final: Path, content: pa.Table | str) -> None:
        """``content`` (a table as Parquet, or text) written to a temporary file, then renamed to ``final``."""
        temporary = self._temporary(final)
        if isinstance(content, str):
            temporary.write_text(content)
        else:
            pq.write_table(content, temporary, compression="zstd")
        self._rename(temporary, final)

    @contextmanager
    def streaming(self, final: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """A Parquet writer on a temporary file, renamed to ``final`` once the block ends without error."""
        temporary = self._temporary(final)
        with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
            yield writer
        self._rename(temporary, final)
