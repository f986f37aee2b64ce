"""The ranking-stage rows of ``bench_serving.py``: two-stage bundles over its synthetic catalog, then their timings.

From the retrieval bundle ``bench_serving.py`` built (ONNX encoder, FAISS index, catalog, ``bench_cluster.npy``)
this writes one two-stage bundle per channel set (:data:`CHANNEL_SETS`, ``max_candidates`` 500):
``ann+popular`` (ann n=300, popular n=100: the two-channel bar), ``ann+popular+covisit`` (+ covisit n=100,
3 anchors; the lists overlap, so about 415 candidates remain) and ``ann400+popular+covisit`` (ann n=400,
which fills the 500 candidates). Each holds:

- :class:`ItemStats` from synthetic interactions with the bench's cluster structure (each user in two
  clusters, one event in four drawn by catalog popularity, timestamps over the last year), the bundle's own
  item vectors for the similarity features;
- a LightGBM LambdaRank ranker (``LightGBMRanker.fit`` / ``to_onnx``) on feature rows from the served
  channels and the real :class:`FeatureBuilder` for synthetic queries, labelled by a planted function of the
  features (the top 5 of each query by similarity, recency, popularity and co-visitation, plus Gumbel noise).
  Early stopping watches the training queries themselves, so the ranker keeps (nearly) every tree: the
  benchmark measures latency at a fixed model size (``trees`` in each row is the count kept). Sets whose
  feature names are equal share the ranker trained first in a run; rankers with the further ``--leaves``
  are trained for the first set only.

Everything is cached next to the retrieval bundle, in ``<bundle>-ranking-<set>-<sizes>-<seed>``.
Rows (``stage``): ``ranker`` (``RankerModel.score`` on 500 feature rows), ``channels`` (the channels and
their merge), ``features`` (``FeatureBuilder.build``), ``ranking_stage`` (channels → merge → filters →
features → ranker: ``Recommender._rank_request``, what ``explain`` runs after the search) and
``recommend_two_stage`` (the whole ``Recommender.recommend``: encode, search, ranking stage, re-ranking; per
precision). Each also carries ``cpu_p50_ms``… (the calling thread's CPU time), which a shared machine
inflates far less than wall time.
"""

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from rectorch.ranking.data import RankingData
from rectorch.ranking.lightgbm_ranker import LightGBMRanker
from rectorch.serving import Catalog, Recommender, stages
from rectorch.serving.bundle import write_bundle
from rectorch.serving.features import SECONDS_PER_DAY, FeatureBuilder, ItemStats, Request
from rectorch.serving.manifest import open_manifest, read_files
from rectorch.serving.merge import Merged
from rectorch.serving.ranker import RankerModel
from rectorch.serving.ranking_stage import RankingStage
from rectorch.serving.recommender import _Request

ANN, POPULAR, COVISIT = (
    {"name": "ann", "kind": "ann", "n": 300},
    {"name": "popular", "kind": "popular", "n": 100},
    {"name": "covisit", "kind": "covisit", "n": 100, "anchors": 3},
)
CHANNEL_SETS = {
    "ann+popular": [ANN, POPULAR],
    "ann+popular+covisit": [ANN, POPULAR, COVISIT],
    "ann400+popular+covisit": [{**ANN, "n": 400}, POPULAR, COVISIT],  # merged to max_candidates = 500
}
MAX_CANDIDATES, LAST_N, POSITIVES, WARMUP = 500, 5, 5, 50
RANKER_FILE, STATS_FILE = "ranker.onnx", "features.npz"


@dataclass
class Options:
    """Sizes of the two-stage build and of the timed loops."""

    channel_sets: Sequence[str] = tuple(CHANNEL_SETS)
    users: int = 200_000
    interactions: int = 2_000_000
    queries: int = 2000
    trees: int = 300
    leaves: Sequence[int] = (63, 31)  # the first one is the bundle's ranker
    calls: int = 2000
    rounds: int = 1
    seed: int = 0


@dataclass
class Query:
    """One request as the timed loops send it: external ids and event times, oldest first."""

    history: list[str]
    times: list[float]


@dataclass
class Prepared:
    """One query after parsing and the index search, with the merged, filtered candidates the features read."""

    parsed: _Request
    found: tuple[np.ndarray, np.ndarray]  # the index's rows and scores, best first
    merged: Merged
    request: Request


def with_times(histories: Sequence[list[str]], now: float, rng: np.random.Generator) -> list[Query]:
    """Histories with event times: the newest 10 min to 2 days before ``now``, about 10 min apart."""
    out = []
    for history in histories:
        elapsed = np.cumsum(rng.exponential(600.0, len(history)))
        newest = now - rng.uniform(600.0, 2 * SECONDS_PER_DAY)
        out.append(Query(history, (newest - (elapsed[-1] - elapsed)).tolist()))
    return out


def interactions(cluster: np.ndarray, popularity: np.ndarray, options: Options, now: float, rng: np.random.Generator):
    """CSR ``(indptr, rows, times)`` of users' chronological sequences (item rows), ``interactions // users`` each."""
    items = len(cluster) - 1
    by_cluster = np.argsort(cluster[1:], kind="stable")
    starts = np.searchsorted(cluster[1:][by_cluster], np.arange(cluster.max() + 2))
    length = options.interactions // options.users
    user = np.repeat(np.arange(options.users), length)
    home = cluster[1 + rng.integers(0, items, (options.users, 2))]  # clusters of two random items: never empty
    picked = home[user, rng.integers(0, 2, len(user))]
    offset = (rng.random(len(user)) * (starts[picked + 1] - starts[picked])).astype(np.int64)
    rows = by_cluster[starts[picked] + offset]
    popular = rng.random(len(user)) < 0.25
    rows[popular] = rng.choice(items, int(popular.sum()), p=popularity / popularity.sum())
    start = now - rng.uniform(2, 365, options.users) * SECONDS_PER_DAY
    times = start[user] + rng.exponential(3600.0, (options.users, length)).cumsum(1).ravel()
    return np.arange(options.users + 1) * length, rows.astype(np.int64), times


def item_stats(base: Recommender, cluster: np.ndarray, options: Options, now: float) -> ItemStats:
    """Statistics of :func:`interactions`, with the index's item vectors for the similarity features."""
    catalog, rng = base.catalog, np.random.default_rng(options.seed + 11)
    indptr, rows, times = interactions(cluster, catalog.popularity.astype(np.float64), options, now, rng)
    vectors = base.index.vectors(np.arange(len(catalog)))
    return ItemStats.from_interactions(indptr, rows, times, len(catalog), catalog.category, vectors)


def section_for(channels: list[dict], stats: ItemStats) -> dict:
    names = FeatureBuilder(stats, [c["name"] for c in channels], last_n=LAST_N).names
    return {
        "channels": channels,
        "features": names,
        "ranker": RANKER_FILE,
        "stats": STATS_FILE,
        "last_n": LAST_N,
        "user_fields": [],
        "max_candidates": MAX_CANDIDATES,
    }


def prepare(recommender: Recommender, stage: RankingStage, queries: Sequence[Query], now: float) -> list[Prepared]:
    """Parse, encode and search in batches of 256 (the search as wide as ``recommend``'s), then merge and filter."""
    out = []
    for start in range(0, len(queries), 256):
        batch = [recommender._parse(history=q.history, history_times=q.times, now=now) for q in queries[start:][:256]]
        offset = recommender.manifest.id_offset
        vectors = recommender.encoder.encode([p.history + offset for p in batch], [None] * len(batch))
        scores, rows = recommender.index.search(vectors, stage.ann_n + max(len(np.unique(p.history)) for p in batch))
        for parsed, found in zip(batch, zip(rows, scores, strict=True), strict=True):
            lists = stage.lists(parsed.history, np.unique(parsed.history), found)
            keep = stages.allowed(recommender.catalog, lists.rows, parsed.blocked, None)
            merged = Merged(lists.rows[keep], lists.scores[:, keep], lists.ranks[:, keep])
            out.append(Prepared(parsed, found, merged, Request(parsed.history, parsed.times, parsed.now)))
    return out


def planted_labels(features: np.ndarray, groups: np.ndarray, names: list[str], rng: np.random.Generator):
    """1 for the top :data:`POSITIVES` rows of each group by a hidden function of the features (with noise)."""
    column = {name: np.nan_to_num(features[:, names.index(name)]) for name in names}
    hidden = (
        3.0 * column["sim_last_max"]
        + 1.5 * column["category_share_recent"]
        + 0.3 * column["item_log_recent_popularity"]
        + 0.5 * np.minimum(column["covisit_recent"], 2.0)
        - 0.2 * np.abs(column["item_age_days"] - 90.0) / 90.0
        + 0.3 * rng.gumbel(size=len(features))
    )
    labels = np.zeros(len(features), np.float32)
    for start, end in zip(np.cumsum(groups) - groups, np.cumsum(groups), strict=True):
        labels[start + np.argsort(-hidden[start:end])[:POSITIVES]] = 1.0
    return labels


def train_ranker(data: RankingData, trees: int, leaves: int) -> tuple[bytes, int]:
    """The ONNX ranker and its tree count; valid = train, so early stopping keeps (nearly) all ``trees``."""
    ranker = LightGBMRanker(num_leaves=leaves, num_boost_round=trees, early_stopping_rounds=trees, num_threads=1)
    report = ranker.fit(data, data)
    return ranker.to_onnx(), int(report["trees"])


def write_two_stage(base: Path, out: Path, section: dict, stats: ItemStats, ranker: bytes) -> None:
    """The retrieval bundle's encoders, index and catalog, plus the ranking section, its ranker and statistics."""
    root, manifest, _ = open_manifest(base)
    blobs = read_files(root, manifest)
    ids, items = manifest.item_ids, manifest.items
    write_bundle(
        out,
        family=manifest.family,
        encoders={precision: blobs[name] for precision, name in manifest.encoders.items()},
        inputs=manifest.inputs,
        index=faiss.deserialize_index(np.frombuffer(blobs[manifest.index["file"]], np.uint8)),
        catalog=Catalog.from_bytes((ids, blobs[ids]), (items, blobs[items]), manifest.categories, manifest.num_items),
        metric=manifest.metric,
        precision=manifest.precision,
        precision_reason=manifest.precision_reason,
        index_info={k: v for k, v in manifest.index.items() if k != "file"},
        reports={"validation": manifest.validation, "quantization": manifest.quantization},
        ranking=section,
        extra_files={RANKER_FILE: ranker, STATS_FILE: stats.to_bytes()},
    )


def ranking_dir(base: Path, name: str, options: Options) -> Path:
    """Where one channel set's bundle (``bundle/``), extra rankers, tree counts and ranker rows are cached."""
    sizes = f"{options.trees}x{options.leaves[0]}-{options.queries}q-{options.users}u-{options.interactions}i"
    return base.with_name(f"{base.name}-ranking-{name}-{sizes}-{options.seed}")


def leaves_for(name: str, options: Options) -> Sequence[int]:
    """Every ``--leaves`` for the first channel set, only the served one (the first) for the others."""
    return options.leaves if name == options.channel_sets[0] else options.leaves[:1]


def ranker_file(out: Path, leaves: int, options: Options) -> Path:
    return out / "bundle" / "manifest.json" if leaves == options.leaves[0] else out / f"ranker-{leaves}.onnx"


def build(base: Path, options: Options, train: Sequence[Query], now: float) -> Iterator[dict]:
    """Write every missing two-stage bundle and ranker; yields one ``build`` row per step (seconds taken)."""
    missing = {}
    for name in options.channel_sets:
        out = ranking_dir(base, name, options)
        todo = [leaves for leaves in leaves_for(name, options) if not ranker_file(out, leaves, options).is_file()]
        missing |= {name: todo} if todo else {}
    if not missing:
        return
    retrieval = Recommender.from_bundle(base, threads=1)
    started = time.perf_counter()
    stats = item_stats(retrieval, np.load(base / "bench_cluster.npy"), options, now)
    yield {"stage": "build", "step": "item_stats", "seconds": round(time.perf_counter() - started, 1)}
    trained: dict[tuple, tuple[bytes, int]] = {}  # (feature names, leaves) → ranker: sets with equal names share it
    for name, todo in missing.items():
        out, section = ranking_dir(base, name, options), section_for(CHANNEL_SETS[name], stats)
        stage = RankingStage(section, stats, None, stats.num_items)  # lists and features only: no ranker yet
        started = time.perf_counter()
        prepared = prepare(retrieval, stage, train, now)
        features = stage.builder.build_many([p.request for p in prepared], [p.merged for p in prepared])
        groups = np.asarray([len(p.merged) for p in prepared])
        labels = planted_labels(features, groups, section["features"], np.random.default_rng(options.seed + 13))
        data = RankingData(features, labels, groups, section["features"])
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "rows.npy", features[:MAX_CANDIDATES])
        seconds = round(time.perf_counter() - started, 1)
        yield {"stage": "build", "step": f"features {name}", "rows": len(features), "seconds": seconds}
        for leaves in todo:
            started, key = time.perf_counter(), (*section["features"], leaves)
            shared = key in trained
            trained[key] = trained[key] if shared else train_ranker(data, options.trees, leaves)
            ranker, trees = trained[key]
            counts = json.loads((out / "trees.json").read_text()) if (out / "trees.json").is_file() else {}
            (out / "trees.json").write_text(json.dumps({**counts, str(leaves): trees}))
            if leaves == options.leaves[0]:
                write_two_stage(base, out / "bundle", section, stats, ranker)
            else:
                (out / f"ranker-{leaves}.onnx").write_bytes(ranker)
            seconds = round(time.perf_counter() - started, 1)
            yield {"stage": "build", "step": f"ranker {name}", "leaves": leaves, "trees": trees, "shared": shared,
                   "seconds": seconds}  # fmt: skip


def timed(items: Sequence, run: Callable[[object], object]) -> tuple[list[float], float, list[float]]:
    """Per-call wall seconds of ``run(item)`` for each item (after :data:`WARMUP` untimed calls), their sum, and
    per-call CPU seconds of this thread (what the call costs without the waits a shared machine adds)."""
    for item in items[:WARMUP]:
        run(item)
    seconds, cpu = [], []
    for item in items:
        start, start_cpu = time.perf_counter(), time.thread_time()
        run(item)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return seconds, math.fsum(seconds), cpu


def rows(base: Path, precisions: Sequence[str], queries: Sequence[Query], options: Options, now: float):
    """The timed rows as ``bench_serving.emit`` keywords (``cpu``: per-call CPU seconds); each section runs
    ``options.rounds`` times."""
    for name in options.channel_sets:
        for number, precision in enumerate(precisions):
            yield from bundle_rows(
                ranking_dir(base, name, options), name, precision, number == 0, queries, options, now
            )


def bundle_rows(
    out: Path, name: str, precision: str, everything: bool, queries: Sequence[Query], options: Options, now: float
) -> Iterator[dict]:
    """One two-stage bundle served at ``precision``: ``recommend_two_stage``, and with ``everything`` the rest."""
    trees = {int(k): v for k, v in json.loads((out / "trees.json").read_text()).items()}
    recommender = Recommender.from_bundle(out / "bundle", precision=precision, threads=1)
    prepared = prepare(recommender, recommender.ranking, queries, now)
    common = {
        "items": recommender.manifest.num_items,
        "concurrency": 1,
        "channels": name,
        "candidates": round(float(np.mean([len(p.merged) for p in prepared])), 1),
        "features": len(recommender.ranking.builder.names),
    }
    for round_ in range(options.rounds):
        if everything:
            for row in stage_rows(recommender, name, out, prepared, options, trees):
                yield {**common, **row, "round": round_}
        seconds, wall, cpu = timed(queries, lambda q: recommender.recommend(q.history, now=now, history_times=q.times))
        leaves = options.leaves[0]
        yield {"stage": "recommend_two_stage", "precision": precision, "seconds": seconds, "wall": wall, "cpu": cpu,
               **common, "trees": trees[leaves], "leaves": leaves, "round": round_}  # fmt: skip


def stage_rows(
    recommender: Recommender, name: str, out: Path, prepared: list[Prepared], options: Options, trees: dict[int, int]
) -> Iterator[dict]:
    """The rows the encoder's precision does not change: ranker (per leaves), channels, features, ranking stage."""
    stage = recommender.ranking
    sample = np.load(out / "rows.npy")
    for leaves in leaves_for(name, options):
        model = stage.ranker
        if leaves != options.leaves[0]:
            model = RankerModel((out / f"ranker-{leaves}.onnx").read_bytes(), stage.builder.names, threads=1)
        seconds, wall, cpu = timed(range(options.calls), lambda _, model=model: model.score(sample))
        yield {"stage": "ranker", "precision": "fp32", "seconds": seconds, "wall": wall, "cpu": cpu,
               "candidates": len(sample), "trees": trees[leaves], "leaves": leaves}  # fmt: skip
    sections = {
        "channels": lambda p: stage.lists(p.parsed.history, np.unique(p.parsed.history), p.found),
        "features": lambda p: stage.builder.build(p.request, p.merged),
        "ranking_stage": lambda p: recommender._rank_request(p.parsed, *p.found),
    }
    for section, run in sections.items():
        seconds, wall, cpu = timed(prepared, run)
        yield {"stage": section, "precision": None, "seconds": seconds, "wall": wall, "cpu": cpu}
