"""The protocol record printed and logged next to every reported number."""

import re
from dataclasses import dataclass
from typing import Any

_SAMPLED = re.compile(r"sampled-([1-9][0-9]*)")
_CANDIDATES = re.compile(r"candidates-([1-9][0-9]*)")


def ranking_label(sampled_negatives: int | None, candidates: int | None = None) -> str:
    """``"full"`` for full ranking, ``"sampled-N"`` for targets ranked against N sampled items,
    ``"candidates-C"`` for C given candidates per user ranked under the full-catalog protocol.

    Raises:
        ValueError: when both ``sampled_negatives`` and ``candidates`` are given.
    """
    if sampled_negatives is not None and candidates is not None:
        raise ValueError(
            f"sampled_negatives={sampled_negatives} and candidates={candidates} exclude each other: "
            "rank either sampled negatives or a given candidate set"
        )
    if candidates is not None:
        return f"candidates-{candidates}"
    return "full" if sampled_negatives is None else f"sampled-{sampled_negatives}"


def metric_prefix(ranking: str) -> str:
    """The prefix of every metric key: ``""`` for ``"full"``, ``"<ranking>/"`` otherwise
    (``"sampled-100/"``, ``"candidates-200/"``)."""
    return "" if ranking == "full" else f"{ranking}/"


@dataclass(frozen=True)
class Protocol:
    """What a set of metrics was measured on, so that numbers are never compared blindly.

    Labelling of sampled results: under ``ranking="sampled-N"`` every metric key carries the
    prefix ``"sampled-N/"`` (``"sampled-100/ndcg@10"``, logged as ``"val/sampled-100/ndcg@10"``),
    so a sampled number can never be read, monitored or plotted as a full-ranking one. Candidate
    ranking (``ranking="candidates-C"``: C given candidates per user, a target outside them counted
    as a miss) is labelled the same way, ``"candidates-200/ndcg@10"``. Full ranking keys have no
    prefix (``"ndcg@10"``). The ``users`` count is never prefixed.

    Args:
        dataset: dataset name, e.g. ``"ml1m"``.
        split: evaluation split, e.g. ``"loo"`` or ``"temporal"``.
        ranking: ``"full"`` (the whole catalog), ``"sampled-N"`` (targets against N sampled items)
            or ``"candidates-N"`` (N given candidates per user).
        mask_seen: whether already-seen items were removed from the ranking.
        ks: the cut-offs of the top-K metrics.
        users: number of evaluated users.
    """

    dataset: str
    split: str
    ranking: str
    mask_seen: bool
    ks: tuple[int, ...]
    users: int

    def __post_init__(self) -> None:
        if self.ranking != "full" and not any(p.fullmatch(self.ranking) for p in (_SAMPLED, _CANDIDATES)):
            raise ValueError(
                f"ranking={self.ranking!r} must be 'full' or 'sampled-<N>' or 'candidates-<N>', "
                "e.g. 'sampled-100' or 'candidates-200'"
            )
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))

    @property
    def sampled(self) -> bool:
        """Whether the metrics come from sampled-negative ranking (candidate ranking is not sampled)."""
        return _SAMPLED.fullmatch(self.ranking) is not None

    @property
    def candidates(self) -> int | None:
        """The number of given candidates per user under ``"candidates-N"``, else ``None``."""
        match = _CANDIDATES.fullmatch(self.ranking)
        return None if match is None else int(match.group(1))

    def metric_prefix(self) -> str:
        """The prefix of every metric key: ``""`` for full ranking, ``"<ranking>/"`` otherwise."""
        return metric_prefix(self.ranking)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able record written to ``metrics.json`` and MLflow (cut-offs under ``"k"``)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "ranking": self.ranking,
            "mask_seen": self.mask_seen,
            "k": list(self.ks),
            "users": self.users,
        }

    def describe(self) -> str:
        """One line for logs: ``ml1m | split=loo | ranking=full | mask_seen=True | k=10 | users=6040``."""
        ks = ",".join(str(k) for k in self.ks)
        return (
            f"{self.dataset} | split={self.split} | ranking={self.ranking} | mask_seen={self.mask_seen} "
            f"| k={ks} | users={self.users}"
        )
