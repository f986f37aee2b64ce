"""One stage's ranking queries: who asks, what they have seen, when they ask, and what they will pick."""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rectorch.data.csr import Csr
from rectorch.data.prepared import FeatureTable
from rectorch.data.splits import EvalSet, SplitData
from rectorch.serving.features import Request

#: model item id of catalog row 0 (row = item id − 1; id 0 is padding)
ID_OFFSET = 1


@dataclass
class StageQueries:
    """The queries of one evaluation stage, as the channels and the feature builder read them.

    A query's time is that of its first target interaction (the moment the user asks), NaN without
    timestamps; its history is what the split lets it read (validation: the training rows; test: those
    plus the validation item). Item ids here are model ids (1..n); :meth:`request` turns them into rows.

    Args:
        stage: ``val`` or ``test``.
        users: internal user id per query.
        history: CSR over the queries, oldest first, with timestamps when the data has them.
        targets: CSR over the queries.
        now: unix seconds per query, NaN unknown.
    """

    stage: str
    users: np.ndarray
    history: Csr
    targets: Csr
    now: np.ndarray

    @classmethod
    def from_split(cls, split: SplitData, stage: str) -> "StageQueries":
        es: EvalSet = split.eval_set(stage)
        first = es.targets.indptr[:-1]
        times = es.targets.timestamps
        now = np.full(len(es), np.nan) if times is None else times[first].astype(np.float64)
        return cls(stage, es.users, es.history, es.targets, now)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, positions: np.ndarray) -> "StageQueries":
        """The queries at ``positions``, in that order."""
        return StageQueries(
            self.stage,
            self.users[positions],
            self.history.take(positions),
            self.targets.take(positions),
            self.now[positions],
        )

    def eval_set(self) -> EvalSet:
        """These queries as an :class:`EvalSet` (what a model's view builds query tensors from)."""
        return EvalSet(self.users, self.history, self.targets)

    def request(self, i: int, user_table: FeatureTable, user_fields: tuple[str, ...] = ()) -> Request:
        """Query ``i`` as the serving feature builder's :class:`Request` (rows, not ids)."""
        start, end = self.history.indptr[i], self.history.indptr[i + 1]
        times = self.history.timestamps
        return Request(
            history=self.history.items[start:end].astype(np.int64) - ID_OFFSET,
            history_times=None if times is None else times[start:end].astype(np.float64),
            now=float(self.now[i]),
            context={},
            user=user_values(user_table, int(self.users[i]), user_fields),
        )


def user_values(table: FeatureTable, user: int, fields: tuple[str, ...]) -> Mapping[str, float]:
    """Numeric values of a user's ``fields`` (categorical ones as their code), as a request carries them."""
    values: dict[str, float] = {}
    for name in fields:
        if name not in table.columns:
            raise ValueError(f"user feature {name!r} is not in the data; it has {sorted(table.columns)}")
        column = table.columns[name]
        if column.ndim != 1:
            raise ValueError(f"user feature {name!r} is multi-valued; the ranker reads scalar user features only")
        values[name] = float(column[user])
    return values
