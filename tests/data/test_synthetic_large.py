"""The chunked synthetic writer: files, determinism, the planted structure, and what it refuses."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rectorch.data import columns as C
from rectorch.data.errors import DataError
from rectorch.data.parquet_source import ParquetSource
from rectorch.data.prepare import Preprocessing
from rectorch.data.synthetic_large import LargeSyntheticWriter

SMALL = {
    "num_users": 3000,
    "num_items": 2000,
    "num_categories": 20,
    "num_segments": 8,
    "categories_per_segment": 3,
    "seq_len_mean": 20,
    "users_per_chunk": 700,
}
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_synthetic_large.py"


def read(out: Path) -> pd.DataFrame:
    """Every interaction, sorted by user then time."""
    frame = pq.read_table(out / "interactions").to_pandas()
    return frame.sort_values([C.USER, C.TIME], kind="stable", ignore_index=True)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[LargeSyntheticWriter, Path, dict]:
    writer = LargeSyntheticWriter(**SMALL)
    out = tmp_path_factory.mktemp("large") / "out"
    return writer, out, writer.write(out)


def test_layout_schema_and_external_ids(written):
    _, out, meta = written
    assert sorted(p.name for p in out.iterdir()) == ["interactions", "items.parquet", "meta.json", "users.parquet"]
    parts = sorted((out / "interactions").iterdir())
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(5)]  # 3000 users / 700 per chunk
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["arguments"]["users_per_chunk"] == 700 and meta["rows"] == sum(meta["part_rows"])
    for part, rows in zip(parts, meta["part_rows"], strict=True):
        table = pq.read_table(part)
        assert table.schema.types == [pa.int64()] * 3 and table.schema.names == [C.USER, C.ITEM, C.TIME]
        assert table.num_rows == rows and np.all(np.diff(table[C.TIME].to_numpy()) >= 0)  # a part is in time order
    frame, users, items = read(out), pq.read_table(out / "users.parquet"), pq.read_table(out / "items.parquet")
    assert users.num_rows == 3000 and len(np.unique(users[C.USER])) == 3000
    assert items.num_rows == 2000 and len(np.unique(items[C.ITEM])) == 2000
    assert set(frame[C.USER]) == set(users[C.USER].to_pylist()) and set(frame[C.ITEM]) <= set(items[C.ITEM].to_pylist())
    for ids in (users[C.USER].to_numpy(), items[C.ITEM].to_numpy()):
        assert ids.min() >= len(ids) and not np.all(np.diff(ids) > 0)  # neither 0..N-1 nor in order


def test_same_seed_same_files_other_seed_or_chunking_other_rows(written, tmp_path):
    writer, out, _ = written
    LargeSyntheticWriter(**SMALL).write(tmp_path / "again")
    for name in ["items.parquet", "users.parquet", *(f"interactions/part-{i:05d}.parquet" for i in range(5))]:
        assert pq.read_table(tmp_path / "again" / name).equals(pq.read_table(out / name)), name
    LargeSyntheticWriter(**SMALL, seed=1).write(tmp_path / "seed1")
    assert not read(tmp_path / "seed1").equals(read(out))
    rechunked = LargeSyntheticWriter(**(SMALL | {"users_per_chunk": 1000}))
    rechunked.write(tmp_path / "rechunked")
    # the catalogue and the user ids stay; the rows come from other streams (documented)
    assert pq.read_table(tmp_path / "rechunked" / "items.parquet").equals(pq.read_table(out / "items.parquet"))
    assert set(read(tmp_path / "rechunked")[C.USER]) == set(read(out)[C.USER])
    planted = zip(rechunked.planted_successors(), writer.planted_successors(), strict=True)
    assert all(np.array_equal(a, b) for a, b in planted)


def test_no_repeats_increasing_times_and_lengths(written):
    _, out, meta = written
    frame = read(out)
    assert not frame.duplicated([C.USER, C.ITEM]).any()
    same_user = frame[C.USER].to_numpy()[1:] == frame[C.USER].to_numpy()[:-1]
    assert np.all(np.diff(frame[C.TIME].to_numpy())[same_user] > 0)
    lengths = frame.groupby(C.USER).size()
    assert lengths.min() >= 5 and lengths.max() <= 5 * SMALL["seq_len_mean"]
    assert abs(meta["rows"] / SMALL["num_users"] - SMALL["seq_len_mean"]) < 1.5


def successor_share(writer: LargeSyntheticWriter, frame: pd.DataFrame) -> tuple[float, float]:
    """Share of consecutive pairs of a user that are (item, planted successor); the same with the next items
    shuffled, as a control."""
    ids, successors = writer.planted_successors()
    order = np.argsort(ids)
    users, items = frame[C.USER].to_numpy(), frame[C.ITEM].to_numpy()
    same_user = users[1:] == users[:-1]
    expected = successors[order][np.searchsorted(ids[order], items[:-1][same_user])]
    nxt = items[1:][same_user]
    return float(np.mean(expected == nxt)), float(np.mean(expected == np.random.default_rng(0).permutation(nxt)))


def test_successor_pairs_match_follow_prob(written, tmp_path):
    writer, out, _ = written
    share, control = successor_share(writer, read(out))
    assert abs(share - 0.5) < 0.03 and control < 0.01
    other = LargeSyntheticWriter(**(SMALL | {"follow_prob": 0.2, "num_users": 1000}))
    other.write(tmp_path / "f02")
    share, _ = successor_share(other, read(tmp_path / "f02"))
    assert abs(share - 0.2) < 0.03


def test_popularity_skew_and_segment_tastes(written):
    _, out, _ = written
    frame = read(out)
    counts = np.sort(frame[C.ITEM].value_counts().to_numpy())[::-1]
    assert counts[: SMALL["num_items"] // 100].sum() / len(frame) > 0.08  # the top 1 % of items: over 8x their share
    users, items = pq.read_table(out / "users.parquet").to_pandas(), pq.read_table(out / "items.parquet").to_pandas()
    joined = frame.merge(users, on=C.USER).merge(items, on=C.ITEM)
    for _, rows in joined.groupby("segment"):
        top = rows["category"].value_counts(normalize=True).iloc[: SMALL["categories_per_segment"]].sum()
        assert top > 0.7  # 3 of 20 categories would hold 0.15 without tastes


def test_prepares_through_parquet_source(written):
    _, out, meta = written
    source = ParquetSource(out / "interactions", item_features_path=out / "items.parquet", category_feature="category")
    dataset = Preprocessing(dedup="none")(source.load())
    assert dataset.num_interactions == meta["rows"] and dataset.num_users == SMALL["num_users"]


def test_refuses_a_folder_that_holds_anything_and_touches_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"not empty.*notes\.txt"):
        LargeSyntheticWriter(**SMALL).write(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="not a folder"):
        LargeSyntheticWriter(**SMALL).write(tmp_path / "notes.txt")


def test_a_failed_write_removes_only_what_it_created(tmp_path, monkeypatch):
    chunk = LargeSyntheticWriter._chunk

    def fail_on_third(self, world, index):
        if index == 2:
            raise RuntimeError("disk full")
        return chunk(self, world, index)

    monkeypatch.setattr(LargeSyntheticWriter, "_chunk", fail_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        LargeSyntheticWriter(**SMALL).write(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="disk full"):
        LargeSyntheticWriter(**SMALL).write(tmp_path / "empty")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


@pytest.mark.parametrize(
    ("key", "value"),
    [("num_users", 0), ("seq_len_mean", 4), ("follow_prob", 1.5), ("users_per_chunk", 0), ("num_categories", 5000)],
)
def test_bad_arguments_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        LargeSyntheticWriter(**(SMALL | {key: value}))


def test_cli_prints_one_json_line_and_exits_2_on_a_used_folder(tmp_path):
    args = [sys.executable, str(SCRIPT), "--out", str(tmp_path / "cli"), "--users", "300", "--items", "200"]
    done = subprocess.run([*args, "--users-per-chunk", "100"], capture_output=True, text=True, check=True)
    line = json.loads(done.stdout)
    meta = json.loads((tmp_path / "cli" / "meta.json").read_text())
    assert line["rows"] == meta["rows"] and line["parts"] == 3 and line["files"] == 6 and line["bytes"] > 0
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "not empty" in again.stderr
