"""Two-tower building blocks: side-feature embeddings, an MLP head, the item tower and the user tower.

Both towers end in an L2-normalised vector, so a query-item score is a cosine similarity; the loss
divides it by a temperature. History pooling lives in :mod:`rectorch.models.components.history_pooling`.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rectorch.data.spec import FeatureSpec


class FeatureEmbedding(nn.Module):
    """Embeds encoded side features (``rectorch.data`` encoding) and concatenates them.

    Categorical codes go through an embedding table (code 0 = unknown → zero vector); multi-valued
    codes are mean-pooled over their non-padding codes; numeric values are standardised with
    statistics fitted on the feature table (:meth:`fit_numeric`) and projected by a linear layer.

    Args:
        features: name → :class:`FeatureSpec`, as in ``DataSpec.item_features``.
        dim: embedding size of each feature.

    Shapes:
        categorical / numeric ``(*)``, multi ``(*, width)`` → ``(*, len(features) * dim)``; the towers skip
        an embedding without features (``out_dim == 0``).
    """

    def __init__(self, features: Mapping[str, FeatureSpec], dim: int) -> None:
        super().__init__()
        self.specs = dict(features)
        self.tables = nn.ModuleDict(
            {n: nn.Embedding(s.cardinality, dim, padding_idx=0) for n, s in self.specs.items() if s.kind != "numeric"}
        )
        self.numeric = [n for n, s in self.specs.items() if s.kind == "numeric"]
        self.projections = nn.ModuleDict({n: nn.Linear(1, dim) for n in self.numeric})
        self.register_buffer("numeric_stats", torch.tensor([[0.0, 1.0]] * len(self.numeric)).reshape(-1, 2))
        self.out_dim = dim * len(self.specs)

    def fit_numeric(self, columns: Mapping[str, np.ndarray]) -> None:
        """Store mean and std of each numeric column (rows 1.., row 0 is the unknown entity)."""
        for row, name in enumerate(self.numeric):
            values = torch.as_tensor(columns[name][1:], dtype=torch.float32)
            self.numeric_stats[row] = torch.stack([values.mean(), values.std().clamp_min(1e-6)])

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        parts = []
        for name, spec in self.specs.items():
            value = features[name]
            if spec.kind == "numeric":
                mean, std = self.numeric_stats[self.numeric.index(name)]
                parts.append(self.projections[name](((value.float() - mean) / std).unsqueeze(-1)))
            elif spec.kind == "multi":
                counts = (value != 0).sum(dim=-1, keepdim=True).clamp_min(1)
                parts.append(self.tables[name](value).sum(dim=-2) / counts)
            else:
                parts.append(self.tables[name](value))
        return torch.cat(parts, dim=-1)


class MLP(nn.Module):
    """``Linear → GELU → Dropout`` per hidden size, then a final ``Linear`` to ``out_dim``.

    Args:
        in_dim: input size.
        hidden: hidden layer sizes (empty = one linear layer).
        out_dim: output size.
        dropout: dropout after each hidden layer.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(in_dim, size), nn.GELU(), nn.Dropout(dropout)]
            in_dim = size
        layers.append(nn.Linear(in_dim, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ItemTower(nn.Module):
    """Item id embedding + side features → MLP → L2-normalised item vector (+ an optional item bias).

    Id 0 has a zero embedding, so an item with id 0 is scored from its features alone: that is how
    items unseen in training (and items added after it) are embedded. During training each item's id
    embedding is zeroed with probability ``id_dropout`` so the tower also learns the feature-only path.

    With ``item_bias`` a linear head adds a per-item score term (in cosine units), appended as a last
    coordinate that the query matches with a constant 1. It reads the side features only (the id
    embedding when there are none), so it is trained on every example, never dropped: a popularity
    prior predicted from content, which is what a cold item needs most.

    Args:
        num_items: catalog size (ids 1..num_items).
        features: item feature specs (``DataSpec.item_features``).
        id_dim: item id embedding size; the user tower reads history through the same table.
        feature_dim: embedding size per side feature.
        hidden: MLP hidden sizes.
        out_dim: output vector size.
        dropout: MLP dropout.
        id_dropout: probability of zeroing an item's id embedding in training.
        item_bias: append the item bias coordinate.

    Shapes:
        ids ``(*)``, features as in :class:`FeatureEmbedding` → ``(*, out_dim)``, unit norm, or
        ``(*, out_dim + 1)`` with ``item_bias`` (the first ``out_dim`` coordinates unit norm).
    """

    def __init__(
        self,
        num_items: int,
        features: Mapping[str, FeatureSpec],
        id_dim: int = 64,
        feature_dim: int = 16,
        hidden: Sequence[int] = (128,),
        out_dim: int = 64,
        dropout: float = 0.0,
        id_dropout: float = 0.1,
        item_bias: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {id_dropout}")
        self.id_dim, self.id_dropout = id_dim, id_dropout
        self.id_embedding = nn.Embedding(num_items + 1, id_dim, padding_idx=0)
        self.features = FeatureEmbedding(features, feature_dim)
        self.mlp = MLP(id_dim + self.features.out_dim, hidden, out_dim, dropout)
        self.bias = nn.Linear(self.features.out_dim or id_dim, 1) if item_bias else None

    def forward(self, ids: Tensor, features: Mapping[str, Tensor]) -> Tensor:
        ids_vec = self.id_embedding(ids)
        if self.training and self.id_dropout > 0:
            keep = torch.rand(ids.shape, device=ids.device) >= self.id_dropout
            ids_vec = ids_vec * keep.unsqueeze(-1)
        parts = [ids_vec, self.features(features)] if self.features.out_dim else [ids_vec]
        vector = F.normalize(self.mlp(torch.cat(parts, dim=-1)), dim=-1)
        return vector if self.bias is None else torch.cat([vector, self.bias(parts[-1])], dim=-1)


class UserTower(nn.Module):
    """Pooled history + user features (+ optional user id) → MLP → L2-normalised query vector.

    Args:
        num_users: number of users (ids 1..num_users).
        features: user feature specs (``DataSpec.user_features``).
        pooler: history pooling module (``MeanPooling``, ``AttentionPooling``) with an ``out_dim``.
        user_id_dim: user id embedding size; 0 = no user id (every user is scored from history and
            features, which is what new users get anyway).
        feature_dim: embedding size per user feature.
        hidden: MLP hidden sizes.
        out_dim: output size (must equal the item tower's).
        dropout: MLP dropout.

    Shapes:
        history ``(B, N, id_dim)``, mask ``(B, N)`` bool, users ``(B,)``, features ``{name: (B,)}``
        → ``(B, out_dim)``, unit norm.
    """

    def __init__(
        self,
        num_users: int,
        features: Mapping[str, FeatureSpec],
        pooler: nn.Module,
        user_id_dim: int = 0,
        feature_dim: int = 16,
        hidden: Sequence[int] = (128,),
        out_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pooler = pooler
        self.user_id_dim = user_id_dim
        self.user_embedding = nn.Embedding(num_users + 1, user_id_dim, padding_idx=0) if user_id_dim else None
        self.features = FeatureEmbedding(features, feature_dim)
        self.mlp = MLP(pooler.out_dim + user_id_dim + self.features.out_dim, hidden, out_dim, dropout)

    def forward(self, history: Tensor, mask: Tensor, users: Tensor, features: Mapping[str, Tensor]) -> Tensor:
        parts = [self.pooler(history, mask)]
        if self.features.out_dim:
            parts.append(self.features(features))
        if self.user_embedding is not None:
            parts.append(self.user_embedding(users))
        return F.normalize(self.mlp(torch.cat(parts, dim=-1)), dim=-1)
