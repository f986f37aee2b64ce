"""Item-to-item ("related items") evaluation: is a user's next item among the nearest neighbours of their last one?"""

import numpy as np
import torch
from torch import Tensor

from rectorch.data.splits import EvalSet


def last_and_next(eval_set: EvalSet) -> tuple[Tensor, Tensor]:
    """Each evaluated user's most recent history item and their first target item.

    Users with an empty history are dropped. On a leave-one-out test set these are the validation
    item and the test item.

    Shapes:
        → last ``(U,)``, next ``(U,)`` int64.
    """
    history, targets = eval_set.history, eval_set.targets
    keep = (history.lengths() > 0) & (targets.lengths() > 0)
    last = history.items[history.indptr[1:][keep] - 1]
    following = targets.items[targets.indptr[:-1][keep]]
    return torch.from_numpy(last.astype(np.int64)), torch.from_numpy(following.astype(np.int64))


def item_to_item_hit_rate(
    item_vectors: Tensor, last: Tensor, following: Tensor, k: int = 10, batch_size: int = 1024
) -> float:
    """Share of pairs whose ``following`` item is among the ``k`` nearest neighbours of ``last``.

    Neighbours are ranked by inner product; the query item itself and the padding row 0 are never
    neighbours. This is what a "related items" shelf served from the item index would show.

    Args:
        item_vectors: the item table, row 0 = padding.
        last: query items.
        following: the item each query should retrieve.
        k: neighbours retrieved per query.
        batch_size: queries scored at once.

    Shapes:
        item_vectors ``(num_items + 1, D)``; last, following ``(P,)`` → a float in ``[0, 1]``.
    """
    if len(last) != len(following):
        raise ValueError(f"last and following must have the same length, got {len(last)} and {len(following)}")
    if len(last) == 0:
        return 0.0
    hits = 0
    for start in range(0, len(last), batch_size):
        query, target = last[start : start + batch_size], following[start : start + batch_size]
        scores = item_vectors[query] @ item_vectors.T  # (b, num_items + 1)
        scores[:, 0] = float("-inf")
        scores[torch.arange(len(query)), query] = float("-inf")
        top = scores.topk(min(k, scores.shape[1] - 2), dim=1).indices
        hits += int((top == target.unsqueeze(1)).any(dim=1).sum())
    return hits / len(last)
