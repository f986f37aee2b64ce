"""Chunked full (or labelled sampled) ranking evaluation with accumulated, DDP-reducible state."""

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from rectorch.data.context import TrainContext
from rectorch.evaluation.metrics import (
    accuracy_metrics,
    count_targets,
    coverage_counts,
    intra_list_diversity,
    popularity_bias,
    popularity_percentile,
)
from rectorch.evaluation.protocol import Protocol, metric_prefix, ranking_label
from rectorch.evaluation.settings import EvaluationSettings

_NEG_INF = float("-inf")


def _item_vector(values: np.ndarray | Tensor, num_items: int, name: str) -> Tensor:
    """One value per item id 0..num_items as a CPU tensor, with a clear error on a wrong length."""
    vector = torch.as_tensor(values).cpu()
    if vector.shape != (num_items + 1,):
        raise ValueError(f"{name} must have shape ({num_items + 1},) (ids 0..{num_items}), got {tuple(vector.shape)}")
    return vector


class RankingEvaluator:
    """Accumulates ranking metrics over user chunks, then reports their means.

    Per update: column 0 (padding) and, with ``mask_seen``, each user's seen items are set to
    ``-inf``, except the user's targets, which always stay rankable (a repeat-consumption target
    that is also in the history is still a target). With ``sampled_negatives=N`` each user's
    targets compete only with N items drawn uniformly (seeded) from the items that are neither
    seen nor targets. One ``torch.topk`` at ``max(ks)`` then feeds every metric of
    :mod:`rectorch.evaluation.metrics`; users without targets are skipped. Sums are kept in
    float64 tensors on the scores' device, so :meth:`reduce_` can sum them across processes.

    Memory per update is O(B * (num_items + 1)) beside the caller's scores: the caller bounds B
    by scoring ``settings.batch_users`` users at a time.

    Args:
        settings: cut-offs, masking and ranking mode; validated against the catalog.
        num_items: catalog size (item ids 1..num_items, 0 is padding).
        item_popularity: training interaction count of every item id, for ``pop_bias``.
        item_category: category of every item id (0 = unknown); ``diversity`` is reported only
            when given.

    Shapes:
        item_popularity: (num_items + 1,); item_category: (num_items + 1,) int.
    """

    def __init__(
        self,
        settings: EvaluationSettings,
        num_items: int,
        item_popularity: np.ndarray | Tensor,
        item_category: np.ndarray | Tensor | None = None,
    ) -> None:
        settings.validate(num_items)
        self.settings = settings
        self.num_items = num_items
        self._percentile = popularity_percentile(_item_vector(item_popularity, num_items, "item_popularity"))
        self._category = (
            None if item_category is None else _item_vector(item_category, num_items, "item_category").long()
        )
        self._names = ("hr", "recall", "ndcg", "mrr", "pop_bias") + (() if self._category is None else ("diversity",))
        self._device = torch.device("cpu")
        self.reset()

    @classmethod
    def from_context(cls, settings: EvaluationSettings, context: TrainContext) -> "RankingEvaluator":
        """The evaluator of a bound dataset: its catalog size, training popularity and categories."""
        category = None if context.item_category is None else torch.from_numpy(context.item_category)
        return cls(settings, context.spec.num_items, torch.from_numpy(context.item_popularity), category)

    def reset(self) -> None:
        """Clear the accumulated state and re-seed the negative sampler."""
        num_ks = len(self.settings.ks)
        self._sums = {name: torch.zeros(num_ks, dtype=torch.float64, device=self._device) for name in self._names}
        self._users = torch.zeros((), dtype=torch.float64, device=self._device)
        self._coverage = torch.zeros(num_ks, self.num_items + 1, dtype=torch.int64, device=self._device)
        self._generator: torch.Generator | None = None

    def to(self, device: torch.device | str) -> "RankingEvaluator":
        """Move the state to ``device`` (done by :meth:`update`; call it before :meth:`reduce_` on a
        process that evaluated no user, so that every process reduces on the same device)."""
        device = torch.device(device)
        self._device = device
        self._percentile = self._percentile.to(device)
        self._category = None if self._category is None else self._category.to(device)
        self._sums = {name: total.to(device) for name, total in self._sums.items()}
        self._users = self._users.to(device)
        self._coverage = self._coverage.to(device)
        return self

    @torch.no_grad()
    def update(self, scores: Tensor, targets: Tensor, seen: Tensor | None = None) -> None:
        """Rank one chunk of users and add their metrics to the state.

        ``scores`` is modified in place (padding, seen and non-sampled items become ``-inf``);
        pass a clone if it is needed afterwards.

        Args:
            scores: a score for every item id of every user in the chunk; higher is better.
            targets: held-out item ids per user, 0-padded (a 1-D tensor means one target each).
            seen: already-seen item ids per user, 0-padded, or ``None`` when there is no history.

        Shapes:
            scores: (B, num_items + 1) float; targets: (B, T) or (B,) int64; seen: (B, S) int64.
        """
        if scores.ndim != 2 or scores.shape[1] != self.num_items + 1:
            raise ValueError(f"scores must have shape (B, {self.num_items + 1}), got {tuple(scores.shape)}")
        targets = (targets.unsqueeze(1) if targets.ndim == 1 else targets).long()
        seen = None if seen is None else seen.long()
        if targets.shape[0] != scores.shape[0] or (seen is not None and seen.shape[0] != scores.shape[0]):
            raise ValueError("scores, targets and seen must have the same number of rows (users)")
        if scores.device != self._device:
            self.to(scores.device)
        has_target = count_targets(targets) > 0
        if not bool(has_target.all()):
            scores, targets = scores[has_target], targets[has_target]
            seen = None if seen is None else seen[has_target]
        if scores.shape[0] == 0:
            return
        scores[:, 0] = _NEG_INF
        if self.settings.sampled_negatives is not None:
            self._keep_sampled(scores, targets, seen)
        elif self.settings.mask_seen and seen is not None:
            target_scores = scores.gather(1, targets)
            scores.scatter_(1, seen, _NEG_INF)
            scores.scatter_(1, targets, target_scores)
        top_scores, topk = scores.topk(self.settings.max_k, dim=1)
        self._accumulate(topk.masked_fill(top_scores == _NEG_INF, 0), targets)

    def _keep_sampled(self, scores: Tensor, targets: Tensor, seen: Tensor | None) -> None:
        """Set every item but the targets and N sampled unseen negatives to ``-inf``.

        Random keys, with excluded items pushed below 0, turn a top-N into uniform sampling
        without replacement; a user with fewer than N eligible items gets all of them.
        """
        if self._generator is None or self._generator.device != scores.device:
            self._generator = torch.Generator(device=scores.device).manual_seed(self.settings.seed)
        keys = torch.rand(scores.shape, generator=self._generator, device=scores.device)
        keys[:, 0] = -1.0
        keys.scatter_(1, targets, -1.0)
        if seen is not None:
            keys.scatter_(1, seen, -1.0)
        drawn_keys, drawn = keys.topk(self.settings.sampled_negatives, dim=1)
        candidate = torch.zeros_like(keys, dtype=torch.bool)
        candidate.scatter_(1, drawn, drawn_keys >= 0)
        candidate.scatter_(1, targets, True)
        candidate[:, 0] = False
        scores.masked_fill_(~candidate, _NEG_INF)

    def _accumulate(self, topk: Tensor, targets: Tensor) -> None:
        """Add the per-user metrics of one ranked chunk to the sums."""
        ks = self.settings.ks
        per_user = accuracy_metrics(topk, targets, ks)
        per_user["pop_bias"] = popularity_bias(topk, self._percentile, ks)
        if self._category is not None:
            per_user["diversity"] = intra_list_diversity(topk, self._category, ks)
        for name, values in per_user.items():
            self._sums[name] += values.sum(dim=0)
        self._coverage += coverage_counts(topk, self.num_items, ks)
        self._users += topk.shape[0]

    def reduce_(self, fn: Callable[[Tensor], Tensor]) -> None:
        """Replace every state tensor by ``fn(tensor)``, a cross-process sum under DDP.

        Args:
            fn: e.g. ``lambda t: trainer.strategy.reduce(t, reduce_op="sum")``; every process
                must call this, even one that evaluated no user.
        """
        self._sums = {name: fn(total) for name, total in self._sums.items()}
        self._users = fn(self._users)
        self._coverage = fn(self._coverage)

    def compute(self) -> dict[str, float]:
        """Mean metrics over the evaluated users.

        Returns:
            ``{prefix + name@k: value}`` for ``name`` in ``hr, recall, ndcg, mrr, coverage,
            pop_bias`` and ``diversity`` (when categories were given), every ``k`` in ``ks``, plus
            ``users``. ``prefix`` is ``""`` for full ranking and ``"sampled-N/"`` for sampled
            ranking (see :meth:`Protocol.metric_prefix`).

        Raises:
            RuntimeError: when no user with a target was evaluated.
        """
        users = float(self._users.item())
        if users == 0:
            raise RuntimeError("no user was evaluated: call update() with a user that has a target before compute()")
        coverage = (self._coverage[:, 1:] > 0).sum(dim=1).double() / self.num_items
        means = {name: (total / users).tolist() for name, total in self._sums.items()}
        means["coverage"] = coverage.tolist()
        prefix = metric_prefix(ranking_label(self.settings.sampled_negatives))
        result: dict[str, float] = {
            f"{prefix}{name}@{k}": values[i] for name, values in means.items() for i, k in enumerate(self.settings.ks)
        }
        result["users"] = int(users)
        return result

    def protocol(self, dataset: str, split: str) -> Protocol:
        """The protocol record of the current state (``users`` = users evaluated so far).

        In sampled ranking the negatives never include seen items, so ``mask_seen`` is reported
        as ``True`` whatever the setting.
        """
        sampled = self.settings.sampled_negatives is not None
        return Protocol(
            dataset=dataset,
            split=split,
            ranking=ranking_label(self.settings.sampled_negatives),
            mask_seen=self.settings.mask_seen or sampled,
            ks=self.settings.ks,
            users=int(self._users.item()),
        )
