"""Candidate-set ranking evaluation: a given candidate list per user, ranked by its scores, under the
full-catalog protocol (a target missing from the candidates is a miss), plus candidate recall@N."""

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from rectorch.data.context import TrainContext
from rectorch.evaluation.evaluator import RankingEvaluator
from rectorch.evaluation.metrics import count_targets, hit_matrix
from rectorch.evaluation.protocol import Protocol, metric_prefix, ranking_label
from rectorch.evaluation.settings import EvaluationSettings

_NEG_INF = float("-inf")


def row_membership(values: Tensor, pool: Tensor) -> Tensor:
    """Whether each entry of ``values`` occurs in the same row of ``pool`` (0 never matches).

    Shapes:
        values: (B, C) int64; pool: (B, S) int64, 0-padded. Returns (B, C) bool; O(B (S + C) log S).
    """
    if pool.shape[1] == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    ordered = pool.sort(dim=1).values
    position = torch.searchsorted(ordered, values).clamp(max=pool.shape[1] - 1)
    return (ordered.gather(1, position) == values) & (values != 0)


def repeated_entries(candidates: Tensor) -> Tensor:
    """Marks every occurrence of an id after its first one in the same row.

    Shapes:
        candidates: (B, C) int64. Returns (B, C) bool.
    """
    order = candidates.argsort(dim=1, stable=True)
    ordered = candidates.gather(1, order)
    repeat = torch.zeros_like(ordered, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return torch.zeros_like(repeat).scatter_(1, order, repeat)


class CandidateEvaluator(RankingEvaluator):
    """Ranks a given candidate set per user and reports :class:`RankingEvaluator`'s metrics plus
    ``candidate_recall@N``, every key prefixed ``"candidates-C/"``.

    Protocol: the metrics are full-catalog ones computed from the top-k of the ranked candidates, so a
    target that is not among a user's candidates is a miss and the denominators are the user's
    targets, as in full ranking. Candidate ids are given in the channel's order (best first);
    ``scores`` (from ``RecModule.score_candidates`` or a ranker) decide the ranking.

    Rankable candidates: not padding (id 0), not a repeat (an id seen earlier in the same row is
    dropped: only its first occurrence counts and is ranked, with that occurrence's score), and,
    with ``mask_seen``, not a seen item unless it is also a target (targets always stay rankable).
    A candidate scored ``-inf`` is never recommended.

    ``candidate_recall@N``: the share of a user's distinct targets among the user's first N
    rankable candidates, in the given order (the ceiling of any ranker over the first N). With
    candidates in descending score order it equals ``recall@N`` of the same ranking.

    Args:
        settings: cut-offs and seen masking; ``sampled_negatives`` must be ``None``. A cut-off may
            exceed ``num_candidates`` (the list is then shorter than k, as in full ranking).
        num_items: catalog size (item ids 1..num_items, 0 is padding).
        item_popularity: training interaction count of every item id, for ``pop_bias``.
        item_category: category of every item id (0 = unknown); enables ``diversity``.
        num_candidates: C, the candidate columns of every update (the protocol's ``candidates-C``).
        recall_ns: cut-offs N of ``candidate_recall@N``, each in 1..C (default ``(C,)``).

    Shapes:
        item_popularity: (num_items + 1,); item_category: (num_items + 1,) int.
    """

    def __init__(
        self,
        settings: EvaluationSettings,
        num_items: int,
        item_popularity: np.ndarray | Tensor,
        item_category: np.ndarray | Tensor | None = None,
        *,
        num_candidates: int,
        recall_ns: Sequence[int] | int | None = None,
    ) -> None:
        if settings.sampled_negatives is not None:
            raise ValueError(
                f"sampled_negatives={settings.sampled_negatives} cannot be combined with candidate ranking: "
                "the candidates are the negatives; use sampled_negatives=null"
            )
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates <= 0:
            raise ValueError(f"num_candidates={num_candidates!r} must be a positive int")
        ns = (num_candidates,) if recall_ns is None else (recall_ns,) if isinstance(recall_ns, int) else recall_ns
        self.recall_ns = tuple(sorted({int(n) for n in ns}))
        if not self.recall_ns:
            raise ValueError("recall_ns is empty: give at least one candidate_recall cut-off N, e.g. recall_ns=[200]")
        for n in self.recall_ns:
            if not 0 < n <= num_candidates:
                raise ValueError(
                    f"candidate_recall cut-off N={n} must be between 1 and num_candidates={num_candidates}"
                )
        self.num_candidates = num_candidates
        super().__init__(settings, num_items, item_popularity, item_category)

    @classmethod
    def from_context(
        cls,
        settings: EvaluationSettings,
        context: TrainContext,
        *,
        num_candidates: int,
        recall_ns: Sequence[int] | int | None = None,
    ) -> "CandidateEvaluator":
        """The candidate evaluator of a bound dataset: its catalog size, training popularity and categories."""
        category = None if context.item_category is None else torch.from_numpy(context.item_category)
        return cls(
            settings,
            context.spec.num_items,
            torch.from_numpy(context.item_popularity),
            category,
            num_candidates=num_candidates,
            recall_ns=recall_ns,
        )

    def reset(self) -> None:
        """Clear the accumulated state."""
        super().reset()
        self._recall_sums = torch.zeros(len(self.recall_ns), dtype=torch.float64, device=self._device)

    def to(self, device: torch.device | str) -> "CandidateEvaluator":
        """Move the state to ``device`` (see :meth:`RankingEvaluator.to`)."""
        super().to(device)
        self._recall_sums = self._recall_sums.to(self._device)
        return self

    @torch.no_grad()
    def update(self, scores: Tensor, candidates: Tensor, targets: Tensor, seen: Tensor | None = None) -> None:
        """Rank one chunk of users' candidates and add their metrics to the state (``scores`` is not modified).

        Args:
            scores: a score per candidate; higher is better.
            candidates: candidate item ids per user in the channel's order, 0-padded.
            targets: held-out item ids per user, 0-padded (a 1-D tensor means one target each).
            seen: already-seen item ids per user, 0-padded, or ``None`` when there is no history.

        Shapes:
            scores: (B, C) float; candidates: (B, C) int64; targets: (B, T) or (B,); seen: (B, S).
        """
        expected = (scores.shape[0], self.num_candidates)
        if scores.ndim != 2 or tuple(scores.shape) != expected or tuple(candidates.shape) != expected:
            raise ValueError(
                f"scores and candidates must both have shape (B, {self.num_candidates}), "
                f"got {tuple(scores.shape)} and {tuple(candidates.shape)}"
            )
        candidates = candidates.long()
        if candidates.numel() and (int(candidates.min()) < 0 or int(candidates.max()) > self.num_items):
            raise ValueError(f"candidate ids must lie in 0..{self.num_items} (0 = padding)")
        targets = (targets.unsqueeze(1) if targets.ndim == 1 else targets).long()
        seen = None if seen is None else seen.long()
        if targets.shape[0] != scores.shape[0] or (seen is not None and seen.shape[0] != scores.shape[0]):
            raise ValueError("scores, candidates, targets and seen must have the same number of rows (users)")
        if scores.device != self._device:
            self.to(scores.device)
        has_target = count_targets(targets) > 0
        if not bool(has_target.all()):
            scores, candidates, targets = scores[has_target], candidates[has_target], targets[has_target]
            seen = None if seen is None else seen[has_target]
        if scores.shape[0] == 0:
            return
        is_target = hit_matrix(candidates, targets)
        rankable = (candidates != 0) & ~repeated_entries(candidates)
        if self.settings.mask_seen and seen is not None:
            rankable &= is_target | ~row_membership(candidates, seen)
        self._add_candidate_recall(rankable, is_target, targets)
        ranked = scores.masked_fill(~rankable, _NEG_INF)
        top_scores, slots = ranked.topk(min(self.settings.max_k, self.num_candidates), dim=1)
        topk = candidates.gather(1, slots).masked_fill(top_scores == _NEG_INF, 0)
        if topk.shape[1] < self.settings.max_k:
            topk = torch.nn.functional.pad(topk, (0, self.settings.max_k - topk.shape[1]))
        self._accumulate(topk, targets)

    def _add_candidate_recall(self, rankable: Tensor, is_target: Tensor, targets: Tensor) -> None:
        """Add each user's share of targets among the first N rankable candidates, for every N."""
        position = rankable.cumsum(dim=1)  # 1-based rank of each rankable candidate in the given order
        hit = rankable & is_target
        num_targets = count_targets(targets).clamp(min=1).double()
        for i, n in enumerate(self.recall_ns):
            self._recall_sums[i] += ((hit & (position <= n)).sum(dim=1).double() / num_targets).sum()

    def reduce_(self, fn: Callable[[Tensor], Tensor]) -> None:
        """Replace every state tensor by ``fn(tensor)``, a cross-process sum under DDP (every process calls it)."""
        super().reduce_(fn)
        self._recall_sums = fn(self._recall_sums)

    def compute(self) -> dict[str, float]:
        """Mean metrics over the evaluated users.

        Returns:
            ``{"candidates-C/" + name@k: value}`` for every metric of :meth:`RankingEvaluator.compute`,
            ``"candidates-C/candidate_recall@N"`` for every N in ``recall_ns``, and ``users`` (unprefixed).

        Raises:
            RuntimeError: when no user with a target was evaluated.
        """
        ranked = super().compute()
        users = ranked.pop("users")
        prefix = metric_prefix(self.ranking)
        result = {f"{prefix}{name}": value for name, value in ranked.items()}
        recall = (self._recall_sums / users).tolist()
        result.update({f"{prefix}candidate_recall@{n}": recall[i] for i, n in enumerate(self.recall_ns)})
        result["users"] = users
        return result

    @property
    def ranking(self) -> str:
        """The protocol's ranking label, ``"candidates-C"``."""
        return ranking_label(None, candidates=self.num_candidates)

    def protocol(self, dataset: str, split: str) -> Protocol:
        """The protocol record of the current state (``users`` = users evaluated so far)."""
        return Protocol(
            dataset=dataset,
            split=split,
            ranking=self.ranking,
            mask_seen=self.settings.mask_seen,
            ks=self.settings.ks,
            users=int(self._users.item()),
        )
