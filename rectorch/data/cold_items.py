"""Cold-start splits: items (and optionally users) held out of training entirely.

``ColdItemSplit`` drops every interaction with a random set of items and, optionally, every
interaction of a random set of users, then runs leave-one-out on what is left (so training, early
stopping and the usual test metrics work unchanged on the warm part). What was held out comes back
as evaluation material: an ``EvalSet`` of users and their cold items, and the warm sequences of the
held-out users for new-user evaluation.
"""

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from rectorch.data.csr import Csr
from rectorch.data.errors import DataError
from rectorch.data.prepared import PreparedDataset
from rectorch.data.splits import EvalSet, LeaveOneOut, SplitData


def _empty_csr() -> Csr:
    return Csr(np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64))


@dataclass
class ColdSplitData(SplitData):
    """A leave-one-out split of the warm data plus what was held out of training.

    ``cold_items``: the held-out item ids. ``cold_item_eval``: warm users who interacted with cold items;
    history = their warm interactions (chronological), targets = their cold items (each once).
    ``new_users``: the held-out user ids; ``new_user_sequences``: their warm interactions,
    chronological, row ``i`` for ``new_users[i]``.
    """

    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cold_item_eval: EvalSet | None = None
    new_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    new_user_sequences: Csr = field(default_factory=_empty_csr)


class ColdItemSplit:
    """Hold out ``holdout_fraction`` of the items (and ``user_fraction`` of the users), then leave-one-out.

    Args:
        holdout_fraction: share of the items that occur in the data to hold out (never seen in training).
        user_fraction: share of the users to hold out as new users (0 = none).
        seed: seed of the item and user draws.
        min_interactions: leave-one-out's minimum warm interactions for a user to be evaluated.
    """

    def __init__(
        self, holdout_fraction: float = 0.1, user_fraction: float = 0.0, seed: int = 0, min_interactions: int = 3
    ) -> None:
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        if not 0.0 <= user_fraction < 1.0:
            raise ValueError(f"user_fraction must be in [0, 1), got {user_fraction}")
        self.holdout_fraction, self.user_fraction, self.seed = holdout_fraction, user_fraction, seed
        self.warm_split = LeaveOneOut(min_interactions)
        self.kind = "loo-cold"

    def __call__(self, ds: PreparedDataset) -> ColdSplitData:
        rng = np.random.default_rng(self.seed)
        present = np.unique(ds.items)
        size = max(1, round(self.holdout_fraction * len(present)))
        cold_items = np.sort(rng.choice(present, size=size, replace=False))
        active = np.flatnonzero(ds.lengths() > 0)
        new_users = np.sort(rng.choice(active, size=round(self.user_fraction * len(active)), replace=False))
        full = Csr(ds.indptr, ds.items, ds.timestamps)
        is_cold_item = np.isin(ds.items, cold_items)
        is_new_user = np.isin(full.row_ids(), new_users)
        warm_rows = full.select(~is_cold_item & ~is_new_user)
        warm_ds = dataclasses.replace(
            ds, indptr=warm_rows.indptr, items=warm_rows.items, timestamps=warm_rows.timestamps
        )
        warm = self.warm_split(warm_ds)
        split = ColdSplitData(
            kind=self.kind,
            train=warm.train,
            val=warm.val,
            test=warm.test,
            repeats=warm.repeats,
            cold_items=cold_items,
            cold_item_eval=_cold_item_eval(full, is_cold_item, is_new_user),
            new_users=new_users,
            new_user_sequences=full.select(~is_cold_item).take(new_users),
        )
        _check_held_out(split)
        return split


def _cold_item_eval(full: Csr, is_cold_item: np.ndarray, is_new_user: np.ndarray) -> EvalSet:
    """Warm users with cold-item interactions: warm history, unique cold items as targets."""
    cold = full.select(is_cold_item & ~is_new_user)
    users = np.flatnonzero(cold.lengths() > 0)
    history = full.select(~is_cold_item).take(users)
    targets = cold.take(users)
    keys = targets.keys(int(full.items.max(initial=0)))
    _, first = np.unique(keys, return_index=True)
    unique = np.zeros(len(keys), dtype=bool)
    unique[first] = True
    return EvalSet(users, history, targets.select(unique))


def _check_held_out(split: ColdSplitData) -> None:
    """Raise if a held-out item or user has a training interaction."""
    if np.isin(split.train.items, split.cold_items).any():
        raise DataError("cold-item split: a held-out item occurs in the training interactions")
    if len(split.new_users) and (split.train.lengths()[split.new_users] > 0).any():
        raise DataError("cold-item split: a held-out user has training interactions")
