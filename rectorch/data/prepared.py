"""The prepared dataset every model consumes: internal ids, per-user chronological sequences, features."""

from dataclasses import dataclass, field

import numpy as np

from rectorch.data.spec import DataSpec, FeatureSpec


@dataclass
class FeatureTable:
    """Encoded side features for rows 0..n (row 0 = padding / unknown entity).

    ``columns[name]`` is int64 ``(n+1,)`` for categorical, int64 ``(n+1, width)`` for multi (0 = pad),
    float32 ``(n+1,)`` for numeric. ``vocab[name]`` lists the external value of code ``i`` at
    position ``i`` (position 0 = ``""``), for categorical and multi features.
    """

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, FeatureSpec] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class PreparedDataset:
    """Interactions after filtering and id mapping, as CSR over users.

    User ``u`` (1..num_users) owns ``items[indptr[u]:indptr[u+1]]`` in chronological order (ties keep
    file order). Row 0 of ``indptr`` is an empty padding user, so ``len(indptr) == num_users + 2``.
    ``user_ids[u]`` / ``item_ids[i]`` are the external ids (as str; index 0 = ``""``).
    """

    name: str
    fingerprint: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    indptr: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None
    item_features: FeatureTable = field(default_factory=FeatureTable)
    user_features: FeatureTable = field(default_factory=FeatureTable)
    category_feature: str | None = None

    @property
    def num_users(self) -> int:
        return len(self.user_ids) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def num_interactions(self) -> int:
        return len(self.items)

    def lengths(self) -> np.ndarray:
        """Interactions per user, index 0 = padding user."""
        return np.diff(self.indptr)

    def spec(self) -> DataSpec:
        return DataSpec(
            name=self.name,
            num_users=self.num_users,
            num_items=self.num_items,
            item_features=dict(self.item_features.kinds),
            user_features=dict(self.user_features.kinds),
            max_history=int(self.lengths().max(initial=0)),
            has_timestamps=self.timestamps is not None,
        )
