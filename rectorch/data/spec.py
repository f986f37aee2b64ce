"""Sizes known only after data preparation, handed to every model as one object."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

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

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able record a saved run keeps (``run.json``), read back by :meth:`from_dict`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "DataSpec":
        """The spec written by :meth:`as_dict`; an unknown or missing key is a ``ValueError`` naming it."""
        try:
            features = {
                side: {name: FeatureSpec(**feature) for name, feature in (record.get(side) or {}).items()}
                for side in ("item_features", "user_features")
            }
            return cls(**{**record, **features})
        except TypeError as error:
            raise ValueError(f"not a dataset spec record: {error}") from error
