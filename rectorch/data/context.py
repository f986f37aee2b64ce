"""``TrainContext``: what a model may know about its data, handed to it once instead of a trainer reach-back."""

from dataclasses import dataclass

import numpy as np

from rectorch.data.csr import Csr
from rectorch.data.prepared import FeatureTable
from rectorch.data.spec import DataSpec


@dataclass(frozen=True)
class TrainContext:
    """Sizes and tables known only after preparation and splitting; built once by the datamodule.

    Args:
        spec: dataset sizes and feature cardinalities (what a model is built from).
        split: the split kind (``loo``, ``temporal``, ``loo-cold``).
        train: training interactions, CSR over users (no validation or test target).
        user_features: encoded user features (row 0 = unknown user).
        item_features: encoded item features (row 0 = padding).
        item_popularity: training interactions per item id.
        item_category: the category code of every item id (0 = unknown), or ``None``.
        eval_users: users with a target per evaluation stage (``{"val": n, "test": m}``).

    Shapes:
        item_popularity ``(num_items + 1,)`` int64; item_category ``(num_items + 1,)`` int64.
    """

    spec: DataSpec
    split: str
    train: Csr
    user_features: FeatureTable
    item_features: FeatureTable
    item_popularity: np.ndarray
    item_category: np.ndarray | None
    eval_users: dict[str, int]

    @property
    def features(self) -> tuple[FeatureTable, FeatureTable]:
        """``(user_features, item_features)``, the pair views read."""
        return self.user_features, self.item_features
