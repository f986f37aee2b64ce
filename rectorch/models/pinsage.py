"""PinSage: item embeddings from content features and random-walk neighbourhoods, trained on co-engaged pairs."""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rectorch.data.graph_view import GraphView
from rectorch.data.prepared import FeatureTable
from rectorch.data.spec import DataSpec
from rectorch.models.base import OptimizerFactory, RecModule, SchedulerFactory
from rectorch.models.components.pair_losses import HardNegativeCurriculum
from rectorch.models.components.pinsage_conv import PinSageConv


class ItemInputs(nn.Module):
    """Node inputs: a learnable id embedding plus every item content feature, projected to ``dim``.

    Feature values live in buffers sized from ``spec.item_features`` and are filled by ``fill`` (a
    checkpoint carries them), so an item with features but an untrained id row still gets a vector.

    Args:
        spec: dataset sizes and item feature kinds.
        dim: output size (and id embedding size).
        feature_dim: embedding size of each feature.

    Shapes:
        items ``(n,)`` → ``(n, dim)``.
    """

    def __init__(self, spec: DataSpec, dim: int, feature_dim: int) -> None:
        super().__init__()
        self.ids = nn.Embedding(spec.num_items + 1, dim, padding_idx=0)
        self.kinds = dict(spec.item_features)
        self.embeddings = nn.ModuleDict()
        rows = spec.num_items + 1
        for name, feature in self.kinds.items():
            if feature.kind == "numeric":
                self.embeddings[name] = nn.Linear(1, feature_dim)
                self.register_buffer(f"values_{name}", torch.zeros(rows))
            else:
                self.embeddings[name] = nn.Embedding(feature.cardinality, feature_dim, padding_idx=0)
                shape = (rows, feature.width) if feature.kind == "multi" else (rows,)
                self.register_buffer(f"values_{name}", torch.zeros(shape, dtype=torch.long))
        self.project = nn.Linear(dim + feature_dim * len(self.kinds), dim)

    def fill(self, table: FeatureTable) -> None:
        """Copy the encoded feature columns in; numeric columns are standardised."""
        for name in self.kinds:
            values = torch.as_tensor(table.columns[name])
            if values.is_floating_point():
                values = (values - values[1:].mean()) / values[1:].std().clamp_min(1e-6)
            self.get_buffer(f"values_{name}").copy_(values)

    def forward(self, items: Tensor) -> Tensor:
        parts = [self.ids(items)]
        for name, feature in self.kinds.items():
            values = self.get_buffer(f"values_{name}")[items]
            if feature.kind == "numeric":
                parts.append(self.embeddings[name](values.unsqueeze(-1)))
            elif feature.kind == "multi":
                present = (values > 0).unsqueeze(-1)  # (n, width, 1)
                summed = (self.embeddings[name](values) * present).sum(1)
                parts.append(summed / present.sum(1).clamp_min(1))
            else:
                parts.append(self.embeddings[name](values))
        return self.project(torch.cat(parts, dim=-1))


class RecencyQuery(nn.Module):
    """A user = the recency-weighted mean of their last items' vectors in a precomputed item table.

    The table is a buffer refreshed by ``PinSageModule.item_vectors``; this small module is what a user
    query costs at serving time (a gather and a weighted sum), and what ONNX exports.

    Args:
        num_items: catalog size (the table has ``num_items + 1`` rows, row 0 = padding).
        dim: item vector size.
        history_len: most recent items read.
        decay: weight of an item ``a`` positions before the last one is ``decay ** a``.

    Shapes:
        history ``(B, L)`` right-aligned, 0-padded, ``L <= history_len`` → ``(B, dim)``.
    """

    def __init__(self, num_items: int, dim: int, history_len: int, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"recency decay must be in (0, 1], got {decay}")
        self.register_buffer("items", torch.zeros(num_items + 1, dim))
        self.register_buffer("weights", decay ** torch.arange(history_len - 1, -1, -1, dtype=torch.float32))

    def forward(self, history: Tensor) -> Tensor:
        weights = self.weights[-history.shape[1] :] * (history > 0)  # (B, L)
        pooled = torch.einsum("bl,bld->bd", weights, self.items[history])
        return pooled / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)


def _edges(neighbors: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """``(source, target)`` edges and weights of a neighbour matrix whose row ``r`` belongs to target ``r``."""
    valid = (neighbors >= 0) & (weights > 0)
    rows = torch.arange(neighbors.shape[0], device=neighbors.device).unsqueeze(1).expand_as(neighbors)
    return torch.stack([neighbors[valid], rows[valid]]), weights[valid]


class PinSageModule(RecModule):
    """PinSage (Ying et al., KDD 2018, https://arxiv.org/abs/1806.01973) on an item–item objective.

    Node inputs are id embeddings plus content features; ``view.num_layers`` ``PinSageConv`` layers pool
    random-walk neighbourhoods by importance; a two-layer head and L2 normalisation give the item vectors.
    Training scores a query item against a co-engaged positive, shared random negatives and (after the
    curriculum starts) hard negatives; ``item_vectors`` runs every item through its full neighbourhood
    table in batches; ``encode_query`` is ``RecencyQuery`` over that table.

    Args:
        spec: dataset sizes and item feature kinds.
        view: the ``GraphView`` (neighbourhood walks, pairs, negatives, history length).
        loss: a loss from ``rectorch.models.components.pair_losses``.
        curriculum: how many hard negatives each epoch uses.
        dim: item vector size.
        feature_dim: embedding size of each content feature.
        recency_decay: per-position decay of the user query's weights.
        inference_batch: target items per batch of full-neighbourhood inference.
        optimizer: partial optimizer.
        scheduler: optional partial LR scheduler.

    Shapes:
        history ``(B, L)`` → query ``(B, dim)``; item vectors ``(num_items + 1, dim)`` (row 0 = zeros).
    """

    family = "pinsage"

    def __init__(
        self,
        spec: DataSpec,
        view: GraphView,
        loss: nn.Module,
        curriculum: HardNegativeCurriculum,
        dim: int = 64,
        feature_dim: int = 16,
        recency_decay: float = 0.6,
        inference_batch: int = 8192,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(spec, view, optimizer, scheduler)
        self.loss, self.curriculum, self.inference_batch = loss, curriculum, inference_batch
        self.inputs = ItemInputs(spec, dim, feature_dim)
        self.convs = nn.ModuleList(PinSageConv(dim, dim) for _ in range(view.num_layers))
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.query_encoder = RecencyQuery(spec.num_items, dim, view.history_len, recency_decay)
        top_k = view.inference_walks.top_k
        self.register_buffer("neighbors", torch.zeros(spec.num_items + 1, top_k, dtype=torch.long))
        self.register_buffer("neighbor_weights", torch.zeros(spec.num_items + 1, top_k))
        self.register_buffer("graph_ready", torch.tensor(False))

    def setup(self, stage: str) -> None:
        """Fill feature values and the neighbourhood table from the training split (once; checkpoints carry them)."""
        if bool(self.graph_ready):
            return
        context = self.bound_context()
        self.inputs.fill(context.item_features)
        neighbors, weights = self.view.neighbourhood_table(context.train, self.spec.num_items)
        self.neighbors.copy_(neighbors)
        self.neighbor_weights.copy_(weights)
        self.graph_ready.fill_(True)

    def embed(self, batch: dict[str, Any]) -> Tensor:
        """Vectors of a batch's target nodes through its sampled computation graph, ``(n_K, dim)``."""
        sizes = batch["sizes"]
        h = self.inputs(batch["nodes"])  # (n_0, D)
        for k, conv in enumerate(self.convs, start=1):
            edge_index, weight = _edges(batch["neighbors"][: sizes[k]], batch["weights"][: sizes[k]])
            h = conv((h, h[: sizes[k]]), edge_index, weight)  # (n_k, D)
        return F.normalize(self.head(h), dim=-1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        z = self.embed(batch)
        query, positive = batch["query"], batch["positive"]
        hard = batch["hard"][:, : self.curriculum.count(self.current_epoch, batch["hard"].shape[1])]
        q = z[query]
        shared = q @ z[batch["negatives"]].T  # (B, M)
        scores = torch.cat([shared, torch.einsum("bd,bhd->bh", q, z[hard])], dim=1)  # (B, M + H)
        negatives = torch.cat([batch["negatives"].expand(len(query), -1), hard], dim=1)
        valid = (negatives != positive.unsqueeze(1)) & (negatives != query.unsqueeze(1))
        loss = self.loss((q * z[positive]).sum(-1), scores, valid)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(query))
        self.log("train/hard_negatives", float(hard.shape[1]), batch_size=len(query))
        return loss

    def _full_layer(self, conv: PinSageConv, h: Tensor) -> Tensor:
        """One convolution for every item over the inference neighbourhood table, in target batches."""
        out = []
        for start in range(0, h.shape[0], self.inference_batch):
            end = min(start + self.inference_batch, h.shape[0])
            edge_index, weight = _edges(self.neighbors[start:end], self.neighbor_weights[start:end])
            out.append(conv((h, h[start:end]), edge_index, weight))
        return torch.cat(out)

    @torch.no_grad()
    def item_vectors(self) -> Tensor:
        """Every item through its full neighbourhood; also refreshes the query encoder's table."""
        h = self.inputs(torch.arange(self.spec.num_items + 1, device=self.device))
        for conv in self.convs:
            h = self._full_layer(conv, h)
        vectors = F.normalize(self.head(h), dim=-1)
        vectors[0] = 0.0
        self.query_encoder.items.copy_(vectors)
        return vectors

    def encode_query(self, history: Tensor) -> Tensor:
        """Reads the table of the last ``item_vectors()`` call (evaluation calls it once per pass)."""
        return self.query_encoder(history)

    def export_inputs(self) -> dict[str, Tensor]:
        self.item_vectors()
        return super().export_inputs()
