"""Leave-one-out and global temporal splits, each checked for leakage every time it is built."""

from dataclasses import dataclass

import numpy as np

from rectorch.data.csr import Csr
from rectorch.data.errors import DataError
from rectorch.data.prepared import PreparedDataset
from rectorch.data.sorted_sets import has_duplicates, member_of


@dataclass
class EvalSet:
    """Users to evaluate, what each query may read, and what it must retrieve.

    ``history`` and ``targets`` are CSR over the ``users`` in order: row ``i`` belongs to ``users[i]``.
    ``history`` is both the query input and, with ``mask_seen``, the items removed from the ranking.
    """

    users: np.ndarray
    history: Csr
    targets: Csr

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class SplitData:
    """Training interactions (CSR over all users, row 0 empty) plus validation and test sets."""

    kind: str
    train: Csr
    val: EvalSet
    test: EvalSet
    cut: int | None = None
    repeats: bool = False

    def eval_set(self, stage: str) -> EvalSet:
        return self.val if stage == "val" else self.test


def _full_csr(ds: PreparedDataset) -> Csr:
    return Csr(ds.indptr, ds.items, ds.timestamps)


class LeaveOneOut:
    """Last interaction = test, second-to-last = validation; the test history includes the validation item.

    Users with fewer than ``min_interactions`` interactions stay in training and are not evaluated.
    """

    def __init__(self, min_interactions: int = 3) -> None:
        if min_interactions < 3:
            raise ValueError(f"LeaveOneOut needs min_interactions >= 3, got {min_interactions}")
        self.min_interactions = min_interactions
        self.kind = "loo"

    def __call__(self, ds: PreparedDataset) -> SplitData:
        full = _full_csr(ds)
        lengths = full.lengths()
        users = np.flatnonzero(lengths >= self.min_interactions)
        if len(users) == 0:
            raise DataError(
                f"{ds.name}: no user has >= {self.min_interactions} interactions; leave-one-out has nothing to evaluate"
            )
        ends = full.indptr[users + 1]
        held_out = np.zeros(ds.num_interactions, dtype=bool)
        held_out[ends - 1] = True
        held_out[ends - 2] = True
        train = full.select(~held_out)
        one_each = np.arange(len(users) + 1, dtype=np.int64)
        times = ds.timestamps
        val_targets = Csr(one_each, ds.items[ends - 2], None if times is None else times[ends - 2])
        test_targets = Csr(one_each, ds.items[ends - 1], None if times is None else times[ends - 1])
        not_test = np.ones(ds.num_interactions, dtype=bool)
        not_test[ends - 1] = False
        test_history = full.select(not_test).take(users)
        split = SplitData(
            kind=self.kind,
            train=train,
            val=EvalSet(users, train.take(users), val_targets),
            test=EvalSet(users, test_history, test_targets),
            repeats=_has_repeats(full, ds.num_items),
        )
        check_leakage(split, ds.num_items)
        return split


class TemporalSplit:
    """Global temporal split: train up to ``val_cut``, validate on ``(val_cut, test_cut]``, test after ``test_cut``.

    Cuts are given as timestamps or as quantiles of all timestamps. Validation queries read the
    training interactions; test queries read everything up to ``test_cut``. Targets are each user's
    items after the cut that are not already in their history.
    """

    def __init__(
        self,
        test_quantile: float = 0.9,
        val_quantile: float = 0.8,
        test_cut: int | None = None,
        val_cut: int | None = None,
    ) -> None:
        if not 0.0 < val_quantile < test_quantile < 1.0:
            raise ValueError(
                f"TemporalSplit needs 0 < val_quantile < test_quantile < 1, got {val_quantile}, {test_quantile}"
            )
        self.test_quantile, self.val_quantile = test_quantile, val_quantile
        self.test_cut, self.val_cut = test_cut, val_cut
        self.kind = "temporal"

    def __call__(self, ds: PreparedDataset) -> SplitData:
        if ds.timestamps is None:
            raise DataError(f"{ds.name}: the temporal split needs timestamps and this dataset has none; use split=loo")
        times = ds.timestamps
        test_cut = self.test_cut if self.test_cut is not None else int(np.quantile(times, self.test_quantile))
        val_cut = self.val_cut if self.val_cut is not None else int(np.quantile(times, self.val_quantile))
        if val_cut >= test_cut:
            raise DataError(f"{ds.name}: val_cut {val_cut} must be earlier than test_cut {test_cut}")
        full = _full_csr(ds)
        train = full.select(times <= val_cut)
        val = _after_cut(full, full.select(times <= val_cut), (times > val_cut) & (times <= test_cut), ds.num_items)
        test = _after_cut(full, full.select(times <= test_cut), times > test_cut, ds.num_items)
        if len(test) == 0 or len(val) == 0:
            raise DataError(f"{ds.name}: temporal cuts {val_cut}/{test_cut} leave no user with history and targets")
        split = SplitData(kind=self.kind, train=train, val=val, test=test, cut=val_cut)
        check_leakage(split, ds.num_items)
        return split


def _after_cut(full: Csr, history: Csr, target_mask: np.ndarray, num_items: int) -> EvalSet:
    """Users with history and at least one new target item in ``target_mask``."""
    candidates = full.select(target_mask)
    fresh = ~member_of(candidates.keys(num_items), history.keys(num_items))
    candidates = candidates.select(fresh)
    users = np.flatnonzero((candidates.lengths() > 0) & (history.lengths() > 0))
    return EvalSet(users, history.take(users), candidates.take(users))


def _has_repeats(full: Csr, num_items: int) -> bool:
    return has_duplicates(full.keys(num_items))


def check_leakage(split: SplitData, num_items: int) -> None:
    """Raise if a target sits in its own user's training rows or a training interaction is after the cut.

    With repeated (user, item) pairs in the data a target may legitimately equal an earlier training
    item (a repeat purchase), so the membership check runs only on data without repeats.
    """
    train_keys = split.train.keys(num_items)
    for stage in () if split.repeats else ("val", "test"):
        es = split.eval_set(stage)
        target_keys = es.targets.keys(num_items, es.users)
        inside = member_of(target_keys, train_keys)
        if inside.any():
            leaked = target_keys[inside][0]
            raise DataError(
                f"leakage in {split.kind} split: {stage} target item {leaked % (num_items + 1)} of user "
                f"{leaked // (num_items + 1)} is also in that user's training interactions"
            )
    if split.kind == "temporal" and split.train.timestamps is not None and len(split.train.timestamps):
        latest = int(split.train.timestamps.max())
        if split.cut is not None and latest > split.cut:
            raise DataError(
                f"leakage in temporal split: a training interaction at {latest} is after the cut {split.cut}"
            )
