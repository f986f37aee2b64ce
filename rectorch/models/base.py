"""``RecModule``: the one Lightning base. It owns optimisation wiring and full-ranking evaluation.

A model adds its objective (``training_step``) and its two halves of the score:
``encode_query(**inputs) -> (B, D)`` and ``item_vectors() -> (num_items + 1, D)`` (row 0 = padding).
Validation and test rank the whole catalog with ``encode_query · item_vectorsᵀ``, the same code
path that ONNX export and the FAISS index use.
"""

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from rectorch.data.csr import Csr
from rectorch.data.spec import DataSpec
from rectorch.data.views import PairView, SequenceView
from rectorch.evaluation import RankingEvaluator

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class RecModule(L.LightningModule):
    """Base for every rectorch model.

    Args:
        spec: dataset sizes and feature cardinalities.
        view: how the model reads data (its batch and query tensors).
        optimizer: partial optimizer, completed with the parameters (``None`` for closed-form models).
        scheduler: optional partial LR scheduler, completed with the optimizer; stepped per batch.
    """

    #: closed-form models (popularity, EASE) fit in ``fit_closed_form`` and take no gradient steps
    closed_form: bool = False

    def __init__(
        self,
        spec: DataSpec,
        view: SequenceView | PairView,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        self.spec, self.view = spec, view
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self._evaluator: RankingEvaluator | None = None
        self._item_table: Tensor | None = None
        self.automatic_optimization = not self.closed_form

    def encode_query(self, **inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def item_vectors(self) -> Tensor:
        raise NotImplementedError

    def export_inputs(self) -> dict[str, Tensor]:
        """Named example inputs for ONNX export; dim 0 is the batch axis."""
        length = self.view.max_len if isinstance(self.view, SequenceView) else self.view.history_len
        history = torch.randint(1, self.spec.num_items + 1, (2, length or self.spec.max_history))
        return {"history": history}

    def score(self, **inputs: Tensor) -> Tensor:
        """Scores of every item (column 0 = padding) for a batch of queries, shape ``(B, num_items + 1)``."""
        return self.encode_query(**inputs) @ self.item_vectors().T

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            return None
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- full-ranking evaluation, shared by every model -------------------------------------------
    def _start_eval(self) -> None:
        self._evaluator = self.trainer.datamodule.evaluator().to(self.device)
        self._item_table = self.item_vectors()

    def _eval_step(self, batch: dict[str, Any]) -> None:
        scores = self.encode_query(**batch["query"]) @ self._item_table.T
        self._evaluator.update(scores.float(), batch["targets"], batch["seen"])

    def _end_eval(self, stage: str) -> dict[str, float]:
        if self.trainer.world_size > 1:
            self._evaluator.reduce_(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        metrics = self._evaluator.compute()
        metrics.pop("users", None)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "ndcg@10")
        self._evaluator, self._item_table = None, None
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    # --- closed-form models -----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.closed_form:
            self.fit_closed_form(self.trainer.datamodule.split.train)

    def fit_closed_form(self, train: Csr) -> None:
        """Fit from the training interactions (``closed_form`` models only)."""
        raise NotImplementedError
