"""Sizes known only after data preparation, handed to every model as one object."""

from dataclasses import dataclass, field
from typing import Literal

FeatureKind = Literal["categorical", "multi", "numeric"]


@dataclass(frozen=True)
class FeatureSpec:
    """One encoded side feature.

    Args:
        kind: ``categorical`` (one code per row, 0 = unknown), ``multi`` (padded codes, 0 = pad),
            ``numeric`` (float32 column).
        cardinality: number of codes including 0 (categorical/multi); 1 for numeric.
        width: codes per row for ``multi`` (padded width); 1 otherwise.
    """

    kind: FeatureKind
    cardinality: int = 1
    width: int = 1


@dataclass(frozen=True)
class DataSpec:
    """Dataset sizes for model construction: ``instantiate(cfg.model, spec=datamodule.spec)``.

    Internal item ids run 1..num_items and user ids 1..num_users; 0 is padding / unknown.
    """

    name: str
    num_users: int
    num_items: int
    item_features: dict[str, FeatureSpec] = field(default_factory=dict)
    user_features: dict[str, FeatureSpec] = field(default_factory=dict)
    max_history: int = 0
    has_timestamps: bool = False
