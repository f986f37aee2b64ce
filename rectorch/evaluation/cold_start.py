"""Cold-start evaluation: held-out items ranked among themselves, and new users with k known interactions.

Works on any model through two callables (a query encoder and its item table), so it imports no
model code. Baselines are scored through the same path:

- cold items: every user with interactions on held-out items ranks the held-out set only (the rest of
  the catalog is masked). Baselines, all restricted to the cold set: random scores; training
  *popularity* (every cold item has 0 training interactions: all ties, broken at random); *content
  popularity*, the popularity a cold item is predicted to have from its features (ridge regression of
  log training counts on the warm items' features: what a shop can rank new items by on launch day);
  and the *oracle* popularity counted on the held-out interactions themselves (an upper reference that
  no deployable model has: the cold items have no training interactions);
- new users (held out of training): the target is each user's ``(max(known) + 1)``-th warm
  interaction and the query reads only the ``k`` interactions just before it (``k = 0``: features
  only), so every ``k`` ranks the same targets; the baseline is training popularity. *Onboarding*: a
  user with no interactions declares a few categories (simulated as the most frequent categories of
  the interactions before the target); the query then reads a seed history of the most popular
  training items of those categories, against category popularity (popular items of the declared
  categories first).
"""

import dataclasses
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


#: (query inputs of a view, user ids (B,)) → scores of every item id, shape (B, num_items + 1)
Scorer = Callable[[Mapping[str, Any], Tensor], Tensor]
REPORTED = ("ndcg@10", "hr@10", "recall@10")


def model_scorer(encode_query: Callable[..., Tensor], item_vectors: Tensor) -> Scorer:
    """Scores ``encode_query(**query) · item_vectorsᵀ``, the same product as training evaluation."""
    return lambda query, users: encode_query(**query) @ item_vectors.T


def constant_scorer(item_scores: Tensor) -> Scorer:
    """The same score vector for every user (popularity)."""
    return lambda query, users: item_scores.float().expand(len(users), -1).clone()


def popularity_scorer(counts: np.ndarray, seed: int = 0) -> Scorer:
    """Training popularity with ties broken at random (seeded), not by item id: ids often follow
    first appearance, which would smuggle a popularity signal into a tie."""
    jitter = torch.rand(len(counts), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return constant_scorer(torch.as_tensor(counts, dtype=torch.float64) + 0.5 * jitter)


def random_scorer(num_items: int, seed: int = 0) -> Scorer:
    """Uniform random scores, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return lambda query, users: torch.rand(len(users), num_items + 1, generator=generator)


def per_user_scorer(users: np.ndarray, scores: np.ndarray) -> Scorer:
    """Row ``i`` of ``scores`` for user ``users[i]`` (a personalised baseline)."""
    row_of = dict(zip(users.tolist(), range(len(users)), strict=True))
    table = torch.as_tensor(scores).float()
    return lambda query, batch_users: table[[row_of[u] for u in batch_users.tolist()]]


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
        scores = scorer(batch["query"], batch["users"])
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


def feature_matrix(table: FeatureTable, items: np.ndarray) -> np.ndarray:
    """Rows of ``items``: one-hot / multi-hot codes of every categorical and multi feature, numeric values, 1."""
    blocks = [np.ones((len(items), 1))]
    for name, spec in table.kinds.items():
        column = table.columns[name][items]
        if spec.kind == "numeric":
            blocks.append(column.reshape(len(items), 1).astype(np.float64))
            continue
        codes = column.reshape(len(items), -1)
        block = np.zeros((len(items), spec.cardinality))
        np.add.at(block, (np.repeat(np.arange(len(items)), codes.shape[1]), codes.ravel()), 1.0)
        blocks.append(block[:, 1:])  # code 0 = unknown / padding
    return np.hstack(blocks)


def _ridge(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Ridge weights, solved in the smaller of the primal and dual forms (the bias column is penalised too)."""
    n, d = x.shape
    if d <= n:
        return np.linalg.solve(x.T @ x + l2 * np.eye(d), x.T @ y)
    return x.T @ np.linalg.solve(x @ x.T + l2 * np.eye(n), y)


def content_popularity(
    table: FeatureTable,
    counts: np.ndarray,
    items: np.ndarray,
    l2_grid: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
    seed: int = 0,
) -> np.ndarray:
    """Predicted ``log(1 + count)`` of every item id from its features, fitted on ``items`` (the warm ones).

    Ridge regression; the strength is picked from ``l2_grid`` by squared error on a random fifth of
    ``items`` held out of the fit, then refitted on all of them. Returns shape ``(len(counts),)``.
    """
    if not table.kinds:
        raise ValueError("content popularity needs item features; this dataset has none")
    target = np.log1p(counts[items].astype(np.float64))
    every = feature_matrix(table, np.arange(len(counts)))
    x = every[items]
    held = np.random.default_rng(seed).random(len(items)) < 0.2

    def held_out_error(l2: float) -> float:
        return float(np.mean((x[held] @ _ridge(x[~held], target[~held], l2) - target[held]) ** 2))

    best = min(l2_grid, key=held_out_error)
    return every @ _ridge(x, target, best)


def cold_item_report(
    model: Scorer,
    es: EvalSet,
    cold_items: np.ndarray,
    view: SequenceView | PairView,
    features: tuple[FeatureTable, FeatureTable],
    settings: EvaluationSettings,
    popularity: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """Model vs random, training, content and oracle popularity, ranking only the held-out items.

    ``popularity``: training interactions per item id, shape ``(num_items + 1,)``.
    """
    num_items = len(popularity) - 1
    candidates = torch.zeros(num_items + 1, dtype=torch.bool)
    candidates[torch.as_tensor(cold_items)] = True
    oracle = torch.as_tensor(np.bincount(es.targets.items, minlength=num_items + 1))
    evaluator = RankingEvaluator(settings, num_items, oracle)
    scorers = {
        "model": model,
        "random": random_scorer(num_items, seed),
        "popularity": popularity_scorer(popularity, seed),
    }
    if features[1].kinds:
        warm = np.flatnonzero(popularity > 0)
        scorers["popularity_content"] = constant_scorer(
            torch.as_tensor(content_popularity(features[1], popularity, warm))
        )
    scorers["popularity_oracle"] = constant_scorer(oracle)
    results = {name: evaluate(s, es, view, features, evaluator, candidates) for name, s in scorers.items()}
    return {"items": len(cold_items), "users": len(es), "targets": len(es.targets.items), **results}


def declared_categories(history: Csr, category: np.ndarray, count: int) -> list[np.ndarray]:
    """Each row's ``count`` most frequent category codes (ties: the earlier code); ``category`` is per item id."""
    codes = category.reshape(len(category), -1)
    declared = []
    for row in range(history.num_rows):
        row_codes = codes[history.row(row)].ravel()
        frequency = np.bincount(row_codes[row_codes > 0], minlength=codes.max() + 1)
        order = np.argsort(-frequency, kind="stable")
        declared.append(order[: min(count, int((frequency > 0).sum()))])
    return declared


def onboarding_history(
    declared: Sequence[np.ndarray], category: np.ndarray, popularity: np.ndarray, per_category: int
) -> Csr:
    """Seed histories: the ``per_category`` most popular training items of each declared category."""
    codes = category.reshape(len(category), -1)
    ranked = np.argsort(-popularity, kind="stable")
    ranked = ranked[popularity[ranked] > 0]
    members = {code: ranked[(codes[ranked] == code).any(axis=1)][:per_category] for code in np.unique(codes)}
    rows = [np.unique(np.concatenate([members[c] for c in row] or [np.zeros(0, np.int64)])) for row in declared]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return Csr(indptr, np.concatenate([np.zeros(0, np.int64), *rows]).astype(np.int64))


def category_popularity(declared: Sequence[np.ndarray], category: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Per-row scores: items of a declared category first, each group ordered by training popularity."""
    codes = category.reshape(len(category), -1)
    scores = np.tile(popularity.astype(np.float64), (len(declared), 1))
    for row, row_codes in enumerate(declared):
        scores[row] += (popularity.max() + 1.0) * np.isin(codes, row_codes).any(axis=1)
    return scores


def new_user_report(
    model: Scorer,
    users: np.ndarray,
    sequences: Csr,
    known: Sequence[int],
    view: SequenceView | PairView,
    features: tuple[FeatureTable, FeatureTable],
    settings: EvaluationSettings,
    popularity: np.ndarray,
    category: np.ndarray | None = None,
    onboarding: tuple[int, int] = (2, 5),
) -> dict[str, Any]:
    """Model vs training popularity for held-out users who declared ``k`` interactions, for each ``k``.

    With ``category`` (code(s) per item id), also onboarding: ``onboarding = (categories declared,
    seed items per category)``; nothing is masked there, as the user has interacted with nothing.
    """
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
    if category is not None:
        before = new_user_eval_set(users, sequences, target_at, target_at)
        declared = declared_categories(before.history, category, onboarding[0])
        seeded = EvalSet(
            before.users, onboarding_history(declared, category, popularity, onboarding[1]), before.targets
        )
        unmasked = RankingEvaluator(dataclasses.replace(settings, mask_seen=False), len(popularity) - 1, popularity)
        baseline = per_user_scorer(seeded.users, category_popularity(declared, category, popularity))
        report["onboarding"] = {
            "categories": onboarding[0],
            "seed_items_per_category": onboarding[1],
            "users": len(seeded),
            "model": evaluate(model, seeded, view, features, unmasked),
            "category_popularity": evaluate(baseline, seeded, view, features, unmasked),
            "popularity": evaluate(pop_scorer, seeded, view, features, unmasked),
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
def cold_start_report(
    model: QueryModel,
    datamodule: Any,
    settings: EvaluationSettings,
    known: Sequence[int] = (0, 1, 3, 5),
    seed: int = 0,
    onboarding: tuple[int, int] = (2, 5),
) -> dict:
    """Both reports for a model trained on a ``ColdItemSplit`` (``datamodule.split`` is a ``ColdSplitData``).

    Args:
        model: a trained model, in eval mode.
        datamodule: the set-up ``RecDataModule`` it was trained on.
        settings: the evaluation protocol (cut-offs, seen masking).
        known: numbers of known interactions of the new users.
        seed: seed of the random baseline.
        onboarding: (categories a new user declares, seed items per category).
    """
    split, features = datamodule.split, datamodule.features
    name, context = datamodule.dataset.category_feature, datamodule.context
    scorer = model_scorer(model.encode_query, model.item_vectors())
    popularity = context.item_popularity
    cold_items = cold_item_report(
        scorer, split.cold_item_eval, split.cold_items, model.view, features, settings, popularity, seed
    )
    category = None if name is None else features[1].columns[name]
    new_users = new_user_report(
        scorer,
        split.new_users,
        split.new_user_sequences,
        known,
        model.view,
        features,
        settings,
        popularity,
        category,
        onboarding,
    )
    return {"protocol": settings.protocol(context, "test").as_dict(), "cold_items": cold_items, "new_users": new_users}
