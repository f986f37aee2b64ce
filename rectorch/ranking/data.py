"""``RankingData``: candidate rows grouped by query, with their features and labels, as a ranker reads them."""

from dataclasses import dataclass

import numpy as np


@dataclass
class RankingData:
    """Rows of candidate features, consecutive per query.

    Args:
        features: one row per candidate; columns named by ``names``; NaN = missing.
        labels: 1.0 for a target, else 0.0.
        groups: rows per query, in order (``groups.sum() == len(features)``).
        names: feature names, one per column.

    Shapes:
        features ``(N, F)`` float32; labels ``(N,)`` float32; groups ``(Q,)`` int64.
    """

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    names: list[str]

    def __post_init__(self) -> None:
        self.features = np.ascontiguousarray(self.features, np.float32)
        self.labels = np.asarray(self.labels, np.float32)
        self.groups = np.asarray(self.groups, np.int64)
        rows, width = self.features.shape
        if width != len(self.names):
            raise ValueError(f"features have {width} columns but {len(self.names)} names")
        if self.labels.shape != (rows,) or int(self.groups.sum()) != rows or (self.groups <= 0).any():
            raise ValueError(
                f"labels {self.labels.shape} and groups (sum {int(self.groups.sum())}) must cover the {rows} rows"
            )

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def offsets(self) -> np.ndarray:
        """Start row of every query, plus the end: ``(Q + 1,)``."""
        return np.concatenate([[0], np.cumsum(self.groups)])

    def with_positive(self) -> "RankingData":
        """Only the queries whose candidates hold a target (the others give a ranker no signal)."""
        offsets = self.offsets
        positive = np.add.reduceat(self.labels, offsets[:-1]) > 0 if len(self.groups) else np.zeros(0, bool)
        keep = np.repeat(positive, self.groups)
        return RankingData(self.features[keep], self.labels[keep], self.groups[positive], list(self.names))
