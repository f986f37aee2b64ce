"""EASE: a closed-form item-item linear autoencoder.

Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019. https://arxiv.org/abs/1905.03375
"""

import torch
from torch import Tensor

from rectorch.data.csr import Csr
from rectorch.data.spec import DataSpec
from rectorch.data.views import SequenceView
from rectorch.models.base import RecModule


class EASEModule(RecModule):
    """``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and a zero diagonal; scores are ``x · B``.

    ``encode_query`` is the user's multi-hot history row and ``item_vectors`` is ``Bᵀ``, so the
    shared evaluator and export compute ``x · B`` without a special case. The dense item-item
    matrix costs ``(num_items + 1)²`` floats: fine for tens of thousands of items, not for millions.

    Args:
        spec: dataset sizes.
        view: query view; use ``SequenceView(max_len=null)`` so the whole history is read.
        l2: the ridge penalty λ (200 is what validation NDCG selects on ML-1M).
    """

    family = "ease"
    closed_form = True

    def __init__(self, spec: DataSpec, view: SequenceView, l2: float = 200.0) -> None:
        super().__init__(spec, view)
        if l2 <= 0:
            raise ValueError(f"EASE l2 must be positive, got {l2}")
        self.l2 = l2
        self.register_buffer("weights", torch.zeros(spec.num_items + 1, spec.num_items + 1))

    def fit_closed_form(self, train: Csr) -> None:
        n = self.spec.num_items + 1
        users = torch.from_numpy(train.row_ids())
        x = torch.zeros(train.num_rows, n, dtype=torch.float64)
        x[users, torch.from_numpy(train.items)] = 1.0
        gram = x.T @ x
        gram.diagonal().add_(self.l2)
        precision = torch.linalg.inv(gram)
        weights = -precision / precision.diagonal()
        weights.diagonal().zero_()
        weights[0].zero_()
        self.weights.copy_(weights.float())

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None

    def encode_query(self, history: Tensor) -> Tensor:
        """Shapes: ``history`` (B, L) → multi-hot (B, num_items + 1); padding lands in column 0."""
        x = torch.zeros(history.shape[0], self.spec.num_items + 1, device=history.device)
        return x.scatter_(1, history, 1.0)

    def item_vectors(self) -> Tensor:
        return self.weights.T
