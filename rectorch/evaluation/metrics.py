"""Per-user ranking and beyond-accuracy metrics computed from one top-K list.

Every function takes ``topk``, the recommended item ids best first, and returns one column per
cut-off in ``ks`` (each ``k <= K``), so a single top-K at ``max(ks)`` serves every cut-off. Item
id 0 is padding: a 0 in ``targets`` is no target, and a 0 in ``topk`` marks an empty slot (fewer
than K rankable items), which is never a hit and is left out of the beyond-accuracy metrics.

Definitions (per user, binary relevance, targets counted once each):

- ``hr@k``: 1 if any target is in the top-k, else 0.
- ``recall@k``: targets in the top-k / number of targets.
- ``ndcg@k``: DCG / IDCG with gain ``1 / log2(rank + 1)`` per hit; the ideal list puts
  ``min(#targets, k)`` targets first.
- ``mrr@k``: 1 / rank of the first target in the top-k, 0 if none.
- ``diversity@k``: intra-list diversity, the fraction of item pairs in the top-k whose
  categories differ; pairs with an unknown category (0) are left out, no pair gives 0.
- ``pop_bias@k``: mean popularity percentile (0 least, 1 most popular) of the top-k items.
"""

import torch
from torch import Tensor


def _columns(ks: tuple[int, ...], topk: Tensor) -> Tensor:
    """Zero-based positions of the cut-offs, checked against the list length."""
    if max(ks) > topk.shape[1]:
        raise ValueError(f"max(ks)={max(ks)} exceeds the top-K list length {topk.shape[1]}")
    return torch.tensor(ks, device=topk.device) - 1


def count_targets(targets: Tensor) -> Tensor:
    """Number of distinct non-padding targets per user.

    Shapes:
        targets: (B, T), 0-padded. Returns (B,) int64.
    """
    ordered = targets.sort(dim=1).values
    first = ordered != 0
    first[:, 1:] &= ordered[:, 1:] != ordered[:, :-1]
    return first.sum(dim=1)


def hit_matrix(topk: Tensor, targets: Tensor) -> Tensor:
    """Whether each recommended slot holds a target.

    Shapes:
        topk: (B, K); targets: (B, T), 0-padded. Returns (B, K) bool; memory O(B * K * T).
    """
    same = topk.unsqueeze(2) == targets.unsqueeze(1)  # (B, K, T)
    return (same & (targets != 0).unsqueeze(1)).any(dim=2)


def accuracy_metrics(topk: Tensor, targets: Tensor, ks: tuple[int, ...]) -> dict[str, Tensor]:
    """Per-user ``hr``, ``recall``, ``ndcg`` and ``mrr`` at every cut-off.

    Users without any target score 0 everywhere; callers should leave them out.

    Args:
        topk: recommended item ids, best first, 0 for an empty slot.
        targets: held-out item ids, 0-padded.
        ks: cut-offs, each at most K.

    Shapes:
        topk: (B, K); targets: (B, T). Returns ``{name: (B, len(ks)) float64}``.
    """
    columns = _columns(ks, topk)
    hits = hit_matrix(topk, targets).double()
    ranks = torch.arange(1, topk.shape[1] + 1, device=topk.device, dtype=torch.float64)
    gain = 1.0 / torch.log2(ranks + 1.0)
    found = hits.cumsum(dim=1)
    num_targets = count_targets(targets).unsqueeze(1)  # (B, 1)
    ideal_length = torch.minimum(num_targets, columns + 1).clamp(min=1)  # (B, len(ks))
    idcg = gain.cumsum(dim=0)[ideal_length - 1]
    first_hit = hits * (found == 1)
    return {
        "hr": (found[:, columns] > 0).double(),
        "recall": found[:, columns] / num_targets.clamp(min=1),
        "ndcg": (hits * gain).cumsum(dim=1)[:, columns] / idcg,
        "mrr": (first_hit / ranks).cumsum(dim=1)[:, columns],
    }


def popularity_percentile(counts: Tensor) -> Tensor:
    """Rank-based popularity percentile of every item, ties sharing their average rank.

    The least popular item gets 0 and the most popular 1; a catalog where all items tie (or of
    one item) gets 0.5 everywhere. Padding id 0 is left out of the ranking and gets 0.

    Shapes:
        counts: (n + 1,) training interaction counts. Returns (n + 1,) float64.
    """
    popularity = counts[1:].double()
    num_items = popularity.numel()
    _, group, sizes = torch.unique(popularity, return_inverse=True, return_counts=True)
    sizes = sizes.double()
    mean_rank = sizes.cumsum(dim=0) - (sizes - 1.0) / 2.0  # 1-based average rank of each tie group
    if num_items > 1:
        percentile = (mean_rank[group] - 1.0) / (num_items - 1)
    else:
        percentile = torch.full_like(popularity, 0.5)
    return torch.cat([percentile.new_zeros(1), percentile])


def popularity_bias(topk: Tensor, percentile: Tensor, ks: tuple[int, ...]) -> Tensor:
    """Mean popularity percentile of each top-k list (0 for an empty list).

    Shapes:
        topk: (B, K); percentile: (n + 1,) from :func:`popularity_percentile`.
        Returns (B, len(ks)) float64.
    """
    columns = _columns(ks, topk)
    filled = topk != 0
    total = (percentile[topk] * filled).cumsum(dim=1)[:, columns]
    return total / filled.cumsum(dim=1)[:, columns].clamp(min=1)


def intra_list_diversity(topk: Tensor, item_category: Tensor, ks: tuple[int, ...]) -> Tensor:
    """Fraction of item pairs with different categories in each top-k list.

    Shapes:
        topk: (B, K); item_category: (n + 1,), 0 = unknown. Returns (B, len(ks)) float64.
    """
    columns = _columns(ks, topk)
    categories = item_category[topk]
    known = (categories != 0) & (topk != 0)
    length = topk.shape[1]
    earlier = torch.ones(length, length, dtype=torch.bool, device=topk.device).triu(diagonal=1)
    pairs = known.unsqueeze(2) & known.unsqueeze(1) & earlier  # (B, K, K): slot i < slot j
    differ = pairs & (categories.unsqueeze(2) != categories.unsqueeze(1))
    # Summing over the earlier slot i, then accumulating over j, counts the pairs inside each top-k.
    num_pairs = pairs.sum(dim=1).cumsum(dim=1)[:, columns]
    num_differ = differ.sum(dim=1).cumsum(dim=1)[:, columns]
    return num_differ.double() / num_pairs.clamp(min=1)


def coverage_counts(topk: Tensor, num_items: int, ks: tuple[int, ...]) -> Tensor:
    """How often each item appears in the top-k lists, for catalog coverage across batches.

    Shapes:
        topk: (B, K). Returns (len(ks), n + 1) int64; column 0 counts empty slots.
    """
    _columns(ks, topk)
    return torch.stack([torch.bincount(topk[:, :k].reshape(-1), minlength=num_items + 1) for k in ks])
