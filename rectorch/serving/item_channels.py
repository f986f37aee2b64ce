"""The model-free candidate channels, shared by serving and by the ranker's training: popular and co-visited items.

Both skip the ``blocked`` rows (a sorted array: the history, and in serving the caller's exclusions) and
return at most ``n`` rows best first with their scores, as the merge reads them.
"""

import numpy as np

from rectorch.serving.features import ItemStats
from rectorch.serving.stages import member


def popular_list(stats: ItemStats, order: np.ndarray, blocked: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` most popular unblocked rows (``order`` = rows by descending popularity), scored ``log1p(count)``."""
    head = order[: n + len(blocked)]
    head = head[~member(head, blocked)][:n]
    return head, np.log1p(stats.popularity[head]).astype(np.float32)


def covisit_list(
    stats: ItemStats, history: np.ndarray, blocked: np.ndarray, n: int, anchors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows co-visited with the newest ``anchors`` history rows (summed weights), unblocked, best first."""
    if not len(history) or anchors <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows, weights = stats.covisit_neighbours(history[-anchors:], n + len(blocked))
    keep = ~member(rows, blocked)
    return rows[keep][:n], weights[keep][:n].astype(np.float32)
