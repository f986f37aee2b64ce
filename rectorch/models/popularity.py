"""Most-popular baseline: every user gets the items with the most training interactions."""

import torch
from torch import Tensor

from rectorch.data.csr import Csr
from rectorch.data.spec import DataSpec
from rectorch.data.views import SequenceView
from rectorch.models.base import RecModule


class PopularityModule(RecModule):
    """Scores each item by its training interaction count; ``encode_query`` is a constant 1.

    Args:
        spec: dataset sizes.
        view: query view (only its batch size matters; history is ignored).
    """

    family = "popularity"
    closed_form = True

    def __init__(self, spec: DataSpec, view: SequenceView) -> None:
        super().__init__(spec, view)
        self.register_buffer("counts", torch.zeros(spec.num_items + 1))

    def fit_closed_form(self, train: Csr) -> None:
        counts = torch.bincount(torch.from_numpy(train.items), minlength=self.spec.num_items + 1)
        self.counts.copy_(counts.float())

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None

    def encode_query(self, history: Tensor) -> Tensor:
        """Shapes: ``history`` (B, L) → (B, 1)."""
        return torch.ones(history.shape[0], 1, device=history.device)

    def item_vectors(self) -> Tensor:
        return self.counts.unsqueeze(1)
