"""Two-tower (DSSM-style) retrieval: a user tower and an item tower scored by a dot product.

Training reads ``PairView`` examples (the user's history up to ``t``, the item at ``t``) and an
injected retrieval loss (in-batch sampled softmax with logQ correction, optionally mixed with uniform
negatives). The catalog's item features live in buffers, so a checkpoint alone can embed the whole
catalog, and the item tower embeds items added after training from their features.
"""

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rectorch.data.csr import Csr
from rectorch.data.prepared import FeatureTable
from rectorch.data.spec import DataSpec, FeatureSpec
from rectorch.data.views import PairView
from rectorch.models.base import OptimizerFactory, RecModule, SchedulerFactory
from rectorch.models.components.towers import ItemTower, UserTower

USER_FEATURE_PREFIX = "user_"


def pair_target_counts(train: Csr, num_items: int) -> np.ndarray:
    """How often each item is a ``PairView`` positive: every training interaction but each user's first."""
    first = train.indptr[:-1][train.lengths() > 0]
    is_target = np.ones(len(train.items), dtype=bool)
    is_target[first] = False
    return np.bincount(train.items[is_target], minlength=num_items + 1)


def _example_feature(spec: FeatureSpec, batch: int) -> Tensor:
    if spec.kind == "numeric":
        return torch.randn(batch)
    shape = (batch, spec.width) if spec.kind == "multi" else (batch,)
    return torch.randint(0, spec.cardinality, shape)


class TwoTowerModule(RecModule):
    """Sampling-bias-corrected two-tower retrieval (Yi et al., RecSys 2019, https://doi.org/10.1145/3298689.3346996).

    ``encode_query`` is the user tower over the user's recent history (read through the item id
    embedding), user features and, optionally, a user id; ``item_vectors`` is the item tower over the
    whole catalog. Items and users without training interactions are encoded without their (untrained)
    id embedding, so their vectors depend only on features (items) or history and features (users).
    The in-batch sampling probability of each item (for logQ) is counted exactly from the training
    interactions in :meth:`setup` (the ``PairView`` positives), not stream-estimated.

    Args:
        spec: dataset sizes and feature specs.
        view: ``PairView(history_len)``.
        item_tower: partial ``ItemTower``, completed with ``num_items`` and the item feature specs.
        user_tower: partial ``UserTower``, completed with ``num_users`` and the user feature specs.
        loss: a retrieval loss (``rectorch.models.components.retrieval_losses``).
        optimizer: partial optimizer.
        scheduler: optional partial LR scheduler.

    Shapes:
        history ``(B, history_len)`` right-aligned item ids, user features ``{name: (B,) | (B, width)}``
        → query ``(B, D)``; item vectors ``(num_items + 1, D)``, both unit norm. With the item tower's
        ``item_bias``, both get one more coordinate: the item bias, and a constant 1 in the query.
    """

    family = "twotower"

    def __init__(
        self,
        spec: DataSpec,
        view: PairView,
        item_tower: Callable[..., ItemTower],
        user_tower: Callable[..., UserTower],
        loss: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(spec, view, optimizer, scheduler)
        self.item_tower = item_tower(num_items=spec.num_items, features=spec.item_features)
        self.user_tower = user_tower(num_users=spec.num_users, features=spec.user_features)
        self.loss = loss
        rows = spec.num_items + 1
        for name, feature in spec.item_features.items():
            shape = (rows, feature.width) if feature.kind == "multi" else (rows,)
            dtype = torch.float32 if feature.kind == "numeric" else torch.int64
            self.register_buffer(f"catalog_{name}", torch.zeros(shape, dtype=dtype))
        self.register_buffer("sampling_prob", torch.zeros(rows))
        self.register_buffer("item_known", torch.zeros(rows, dtype=torch.bool))
        self.register_buffer("user_known", torch.zeros(spec.num_users + 1, dtype=torch.bool))

    # --- catalog state ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Fill the catalog buffers from the bound context (a loaded checkpoint already carries them)."""
        if self.context is not None:
            self.fit_catalog(self.context.item_features, self.context.user_features, self.context.train)

    def fit_catalog(self, items: FeatureTable, users: FeatureTable, train: Csr) -> None:
        """Copy the catalog's item features, item sampling probabilities and known ids into buffers."""
        for name in self.spec.item_features:
            self.get_buffer(f"catalog_{name}").copy_(torch.as_tensor(items.columns[name]))
        self.item_tower.features.fit_numeric(items.columns)
        self.user_tower.features.fit_numeric(users.columns)
        counts = torch.as_tensor(pair_target_counts(train, self.spec.num_items), dtype=torch.float32)
        self.sampling_prob.copy_(counts / counts.sum().clamp_min(1.0))
        self.item_known.copy_(torch.as_tensor(np.bincount(train.items, minlength=self.spec.num_items + 1) > 0))
        self.user_known.copy_(torch.as_tensor(train.lengths() > 0))
        self.item_known[0] = self.user_known[0] = False

    def catalog_features(self, ids: Tensor) -> dict[str, Tensor]:
        """Item feature values of catalog ids, as the item tower reads them."""
        return {name: self.get_buffer(f"catalog_{name}")[ids] for name in self.spec.item_features}

    # --- the two towers ---------------------------------------------------------------------------
    def encode_items(self, ids: Tensor) -> Tensor:
        """Catalog items → vectors; items unseen in training are embedded from their features only."""
        return self.item_tower(ids * self.item_known[ids], self.catalog_features(ids))

    def encode_new_items(self, features: Mapping[str, Tensor]) -> Tensor:
        """Items that are not in the catalog (added after training) → vectors, from features alone.

        Shapes:
            features ``{name: (B,) | (B, width)}`` encoded like ``FeatureTable`` columns → ``(B, D)``.
        """
        batch = next(iter(features.values())).shape[0]
        return self.item_tower(torch.zeros(batch, dtype=torch.long, device=self.device), features)

    def item_vectors(self) -> Tensor:
        return self.encode_items(torch.arange(self.spec.num_items + 1, device=self.device))

    def encode_query(
        self,
        history: Tensor,
        users: Tensor | None = None,
        user_features: Mapping[str, Tensor] | None = None,
        **named_features: Tensor,
    ) -> Tensor:
        """The user tower. User features come as a dict or as ``user_<name>`` tensors (the ONNX inputs).

        History items unseen in training are ignored (treated as padding); unknown users get no id vector.
        """
        features = dict(user_features or {})
        features.update({k.removeprefix(USER_FEATURE_PREFIX): v for k, v in named_features.items()})
        history = history * self.item_known[history]
        users = torch.zeros_like(history[:, 0]) if users is None else users * self.user_known[users]
        embedded = self.item_tower.id_embedding(history)  # (B, N, id_dim)
        query = self.user_tower(embedded, history != 0, users, features)
        if self.item_tower.bias is None:
            return query
        return torch.cat([query, torch.ones_like(query[:, :1])], dim=-1)

    def export_inputs(self) -> dict[str, Tensor]:
        history = torch.randint(1, self.spec.num_items + 1, (2, self.view.history_len))
        inputs = {"history": history}
        if self.user_tower.user_embedding is not None:
            inputs["users"] = torch.randint(1, self.spec.num_users + 1, (2,))
        for name, feature in self.spec.user_features.items():
            inputs[USER_FEATURE_PREFIX + name] = _example_feature(feature, 2)
        return inputs

    # --- the objective ----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        queries = self.encode_query(batch["history"], batch["users"], batch["user_features"])
        loss = self.loss(queries, batch["item"], self.encode_items, self.sampling_prob)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(queries))
        return loss
