"""``RecModule``: the one Lightning base. It owns optimisation wiring and full-ranking evaluation.

A model adds its objective (``training_step``) and its two halves of the score:
``encode_query(**inputs) -> (B, D)`` and ``item_vectors() -> (num_items + 1, D)`` (row 0 = padding).
Validation and test rank the whole catalog with ``encode_query · item_vectorsᵀ``, the same code
path that ONNX export and the FAISS index use.

A model is built from a ``DataSpec`` alone (so a saved run rebuilds it without data) and is then
bound to its data with :meth:`RecModule.bind`: the typed ``TrainContext`` (training interactions,
feature tables, popularity) and the evaluation settings; it never reaches into the trainer for data.
"""

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from rectorch.data.context import TrainContext
from rectorch.data.csr import Csr
from rectorch.data.spec import DataSpec
from rectorch.data.views import ModelView
from rectorch.evaluation import EvaluationSettings, RankingEvaluator

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

    #: the model family: the ``model_family`` tag in MLflow, ``run.json`` and the bundle
    family: str = ""
    #: closed-form models (popularity, EASE) fit in ``fit_closed_form`` and take no gradient steps
    closed_form: bool = False

    def __init__(
        self,
        spec: DataSpec,
        view: ModelView,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        self.spec, self.view = spec, view
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.context: TrainContext | None = None
        self.evaluation: EvaluationSettings | None = None
        self._evaluator: RankingEvaluator | None = None
        self._item_table: Tensor | None = None
        self.automatic_optimization = not self.closed_form

    def bind(self, context: TrainContext, evaluation: EvaluationSettings) -> "RecModule":
        """Hand the model its data context and evaluation protocol (before fit, validate or test)."""
        if context.spec != self.spec:
            raise ValueError(f"the context's dataset {context.spec.name!r} does not match the model's spec")
        self.context, self.evaluation = context, evaluation
        return self

    def bound_context(self) -> TrainContext:
        """The bound context; a clear error when :meth:`bind` was not called."""
        if self.context is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to data: call model.bind(context, evaluation)")
        return self.context

    def encode_query(self, **inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def item_vectors(self) -> Tensor:
        raise NotImplementedError

    def export_inputs(self) -> dict[str, Tensor]:
        """Named example inputs for ONNX export; dim 0 is the batch axis."""
        length = self.view.query_len or self.spec.max_history
        history = torch.randint(1, self.spec.num_items + 1, (2, length))
        return {"history": history}

    def score(self, **inputs: Tensor) -> Tensor:
        """Scores of every item (column 0 = padding) for a batch of queries, shape ``(B, num_items + 1)``."""
        vectors = self.item_vectors()  # first: a model may refresh what encode_query reads (PinSage)
        return self.encode_query(**inputs) @ vectors.T

    def score_candidates(self, candidates: Tensor, **inputs: Tensor) -> Tensor:
        """Scores of a given candidate set per query: what a second-stage ranker or a candidate evaluator reads.

        The default is the retrieval score ``encode_query · item_vectors[candidates]``; a model whose score is
        not a dot product (a cross-feature ranker) overrides it.

        Shapes:
            candidates ``(B, C)`` item ids (0 = padding, scored ``-inf``) → ``(B, C)``.
        """
        vectors = self.item_vectors()[candidates]  # (B, C, D); first, as in score()
        query = self.encode_query(**inputs)  # (B, D)
        scores = torch.einsum("bd,bcd->bc", query, vectors)
        return scores.masked_fill(candidates == 0, float("-inf"))

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
        context = self.bound_context()
        self._evaluator = RankingEvaluator.from_context(self.evaluation, context).to(self.device)
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
            self.fit_closed_form(self.bound_context().train)

    def fit_closed_form(self, train: Csr) -> None:
        """Fit from the training interactions (``closed_form`` models only)."""
        raise NotImplementedError
