"""Cold-start evaluation: held-out items ranked among themselves, and new users with k known interactions.

Works on any model through two callables (a query encoder and its item table), so it imports no
model code. Baselines are scored through the same path:

- cold items: every user with interactions on held-out items ranks the held-out set only (the rest of
  the catalog is masked); baselines are random scores and popularity restricted to the cold set, with
  the cold items' popularity counted on the held-out interactions themselves (an oracle: nothing
  else knows how popular a never-seen item is);
- new users (held out of training): the target is each user's ``(max(known) + 1)``-th warm
  interaction and the query reads only the ``k`` interactions just before it (``k = 0``: features
  only), so every ``k`` ranks the same targets; the baseline is training popularity.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from rectorch.data.csr import Csr
from rectorch.data.prepared import FeatureTable
from rectorch.data.splits import EvalSet
from rectorch.data.views import PairView, SequenceView, eval_dataset
from rectorch.evaluation.evaluator import RankingEvaluator
from rectorch.evaluation.settings import EvaluationSettings


class QueryModel(Protocol):
    """What the report needs from a model (any ``RecModule``)."""

    view: SequenceView | PairView

    def encode_query(self, **inputs: Tensor) -> Tensor: ...

    def item_vectors(self) -> Tensor: ...


#: query inputs (a view's query batch) → scores of every item id, shape (B, num_items + 1)
Scorer = Callable[[Mapping[str, Any]], Tensor]
REPORTED = ("ndcg@10", "hr@10", "recall@10")


def model_scorer(encode_query: Callable[..., Tensor], item_vectors: Tensor) -> Scorer:
    """Scores ``encode_query(**query) · item_vectorsᵀ``, the same product as training evaluation."""
    return lambda query: encode_query(**query) @ item_vectors.T


def constant_scorer(item_scores: Tensor) -> Scorer:
    """The same score vector for every user (popularity)."""
    return lambda query: item_scores.float().expand(len(query["history"]), -1).clone()


def random_scorer(num_items: int, seed: int = 0) -> Scorer:
    """Uniform random scores, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return lambda query: torch.rand(len(query["history"]), num_items + 1, generator=generator)


@torch.no_grad()
def evaluate(
    scorer: Scorer,
    es: EvalSet,
    view: SequenceView | PairView,
    features: tuple[FeatureTable, FeatureTable],
    evaluator: RankingEvaluator,
    candidates: Tensor | None = None,
) -> dict[str, float]:
    """Mean ranking metrics of ``scorer`` on ``es``; ``candidates`` (bool per item id) restricts the ranking."""
    evaluator.reset()
    dataset = eval_dataset(view, es, features)
    batch_users = evaluator.settings.batch_users
    for start in range(0, len(dataset), batch_users):
        batch = dataset.collate(list(range(start, min(start + batch_users, len(dataset)))))
        scores = scorer(batch["query"])
        if candidates is not None:
            scores = scores.masked_fill(~candidates, float("-inf"))
        evaluator.update(scores, batch["targets"], batch["seen"])
    metrics = evaluator.compute()
    return {name: metrics[name] for name in (*REPORTED, "users")}


def new_user_eval_set(users: np.ndarray, sequences: Csr, known: int, target_at: int) -> EvalSet:
    """Users with more than ``target_at`` interactions: the ``known`` items before ``target_at`` → that item."""
    keep = np.flatnonzero(sequences.lengths() > target_at)
    starts = sequences.indptr[keep]
    history_rows = [sequences.items[s + target_at - known : s + target_at] for s in starts]
    history = Csr(
        np.arange(len(keep) + 1, dtype=np.int64) * known, np.concatenate([[], *history_rows]).astype(np.int64)
    )
    targets = Csr(np.arange(len(keep) + 1, dtype=np.int64), sequences.items[starts + target_at].astype(np.int64))
    return EvalSet(users[keep], history, targets)


def cold_item_report(
    model: Scorer,
    es: EvalSet,
    cold_items: np.ndarray,
    view: SequenceView | PairView,
    features: tuple[FeatureTable, FeatureTable],
    settings: EvaluationSettings,
    num_items: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Model vs random vs cold-set popularity (oracle counts), ranking only the held-out items."""
    candidates = torch.zeros(num_items + 1, dtype=torch.bool)
    candidates[torch.as_tensor(cold_items)] = True
    oracle = torch.as_tensor(np.bincount(es.targets.items, minlength=num_items + 1))
    evaluator = RankingEvaluator(settings, num_items, oracle)
    scorers = {
        "model": model,
        "popularity_cold_oracle": constant_scorer(oracle),
        "random": random_scorer(num_items, seed),
    }
    results = {name: evaluate(s, es, view, features, evaluator, candidates) for name, s in scorers.items()}
    return {"items": len(cold_items), "users": len(es), "targets": len(es.targets.items), **results}


def new_user_report(
    model: Scorer,
    users: np.ndarray,
    sequences: Csr,
    known: Sequence[int],
    view: SequenceView | PairView,
    features: tuple[FeatureTable, FeatureTable],
    settings: EvaluationSettings,
    popularity: np.ndarray,
) -> dict[str, Any]:
    """Model vs training popularity for held-out users who declared ``k`` interactions, for each ``k``."""
    target_at = max(known)
    evaluator = RankingEvaluator(settings, len(popularity) - 1, popularity)
    pop_scorer = constant_scorer(torch.as_tensor(popularity))
    report: dict[str, Any] = {"target_position": target_at + 1}
    for k in known:
        es = new_user_eval_set(users, sequences, k, target_at)
        report[str(k)] = {
            "users": len(es),
            "model": evaluate(model, es, view, features, evaluator),
            "popularity": evaluate(pop_scorer, es, view, features, evaluator),
        }
    return report


def flat_metrics(report: Mapping[str, Any], prefix: str = "cold_start") -> dict[str, float]:
    """``{"cold_start/cold_items/model/ndcg@10": ...}``: every float of a nested report, for MLflow."""
    flat: dict[str, float] = {}
    for key, value in report.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            flat.update(flat_metrics(value, name))
        elif isinstance(value, float):
            flat[name] = value
    return flat


@torch.no_grad()
def cold_start_report(model: QueryModel, datamodule: Any, known: Sequence[int] = (0, 1, 3, 5), seed: int = 0) -> dict:
    """Both reports for a model trained on a ``ColdItemSplit`` (``datamodule.split`` is a ``ColdSplitData``).

    Args:
        model: a trained model, in eval mode.
        datamodule: the set-up ``RecDataModule`` it was trained on.
        known: numbers of known interactions of the new users.
        seed: seed of the random baseline.
    """
    split, features = datamodule.split, datamodule.features
    num_items, settings = datamodule.dataset.num_items, datamodule.evaluation
    scorer = model_scorer(model.encode_query, model.item_vectors())
    cold_items = cold_item_report(
        scorer, split.cold_item_eval, split.cold_items, model.view, features, settings, num_items, seed
    )
    popularity = datamodule.item_popularity()
    new_users = new_user_report(
        scorer, split.new_users, split.new_user_sequences, known, model.view, features, settings, popularity
    )
    return {"protocol": datamodule.protocol("test").as_dict(), "cold_items": cold_items, "new_users": new_users}
