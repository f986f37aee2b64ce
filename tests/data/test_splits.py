"""Leave-one-out and temporal splits: exact contents on hand-made data, and the leakage guard."""

import numpy as np
import pytest

from rectorch.data.csr import Csr
from rectorch.data.errors import DataError
from rectorch.data.prepared import PreparedDataset
from rectorch.data.splits import EvalSet, LeaveOneOut, SplitData, TemporalSplit, check_leakage


def dataset(rows: list[list[int]], times: list[list[int]] | None = None) -> PreparedDataset:
    """Users 1..n from item rows (row 0 is the padding user)."""
    lengths = [0] + [len(r) for r in rows]
    items = np.array([i for r in rows for i in r], dtype=np.int64)
    stamps = None if times is None else np.array([t for r in times for t in r], dtype=np.int64)
    num_items = int(items.max())
    return PreparedDataset(
        name="toy",
        fingerprint="x",
        user_ids=np.array([""] + [f"u{i}" for i in range(len(rows))]),
        item_ids=np.array([""] + [f"i{i}" for i in range(1, num_items + 1)]),
        indptr=np.cumsum([0, *lengths]).astype(np.int64),
        items=items,
        timestamps=stamps,
    )


def rows_of(csr: Csr) -> list[list[int]]:
    return [csr.row(r).tolist() for r in range(csr.num_rows)]


def test_leave_one_out_exact_contents() -> None:
    split = LeaveOneOut()(dataset([[1, 2, 3, 4], [5, 6], [7, 8, 9]]))
    assert rows_of(split.train) == [[], [1, 2], [5, 6], [7]]  # user 2 has too few items to evaluate
    assert split.val.users.tolist() == [1, 3]
    assert rows_of(split.val.history) == [[1, 2], [7]]
    assert rows_of(split.val.targets) == [[3], [8]]
    assert rows_of(split.test.history) == [[1, 2, 3], [7, 8]]  # the test history includes the validation item
    assert rows_of(split.test.targets) == [[4], [9]]


def test_leakage_guard_catches_a_target_in_training() -> None:
    split = LeaveOneOut()(dataset([[1, 2, 3, 4], [5, 6, 7]]))
    leaked = SplitData(
        kind="loo",
        train=split.train,
        val=split.val,
        test=EvalSet(split.test.users, split.test.history, Csr(split.test.targets.indptr, np.array([2, 7]))),
    )
    with pytest.raises(DataError, match="test target item 2 of user 1"):
        check_leakage(leaked, num_items=7)


def test_temporal_split_respects_the_cuts() -> None:
    ds = dataset(
        [[1, 2, 3, 4], [5, 1, 6], [2, 7]],
        times=[[1, 2, 8, 10], [3, 5, 9], [4, 6]],
    )
    split = TemporalSplit(val_cut=5, test_cut=8)(ds)
    assert int(split.train.timestamps.max()) <= 5
    assert rows_of(split.train) == [[], [1, 2], [5, 1], [2]]
    assert split.val.users.tolist() == [1, 3] and rows_of(split.val.targets) == [[3], [7]]
    assert split.test.users.tolist() == [1, 2]
    assert rows_of(split.test.history) == [[1, 2, 3], [5, 1]]
    assert rows_of(split.test.targets) == [[4], [6]]


def test_temporal_split_needs_timestamps() -> None:
    with pytest.raises(DataError, match="needs timestamps"):
        TemporalSplit()(dataset([[1, 2, 3]]))
