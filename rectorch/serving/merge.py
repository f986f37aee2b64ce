"""Union of several candidate channels, keeping each channel's score and rank as features."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Merged:
    """Candidates retrieved by any channel.

    Shapes:
        rows: (C,) int64 item rows, in union order.
        scores: (K, C) float32 score in channel k; NaN where channel k did not retrieve the row.
        ranks: (K, C) float32 0-based position in channel k's list; NaN where absent.
    """

    rows: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def channel_entries(k: int, rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One channel's valid rows (negatives dropped, first occurrence kept), their scores and positions."""
    rows, scores = np.asarray(rows), np.asarray(scores)
    if rows.ndim != 1 or scores.shape != rows.shape:
        raise ValueError(
            f"channel {k}: rows and scores must be 1-D of equal length, got {rows.shape} and {scores.shape}"
        )
    if rows.size and rows.dtype.kind not in "iu":
        raise ValueError(f"channel {k}: rows must be integers, got {rows.dtype}")
    keep = rows >= 0
    rows, scores = rows[keep].astype(np.int64), scores[keep]
    unique, first = np.unique(rows, return_index=True)
    return unique, scores[first].astype(np.float32), first.astype(np.int64)


def merge_channels(lists: Sequence[tuple[np.ndarray, np.ndarray]], limit: int | None = None) -> Merged:
    """Interleave channels by rank (all rank-0 entries of channels 0..K-1, then rank 1, …), first position wins.

    Args:
        lists: per channel ``(rows, scores)``, best first; negative rows (FAISS's -1) are dropped and a row
            repeated inside one channel keeps its first position.
        limit: keep only the first ``limit`` rows of the union (None: all).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative or None, got {limit}")
    entries = [channel_entries(k, rows, scores) for k, (rows, scores) in enumerate(lists)]
    num_channels = len(entries)
    rows = np.concatenate([e[0] for e in entries]) if entries else np.zeros(0, np.int64)
    scores = np.concatenate([e[1] for e in entries]) if entries else np.zeros(0, np.float32)
    ranks = np.concatenate([e[2] for e in entries]) if entries else np.zeros(0, np.int64)
    channel = np.repeat(np.arange(num_channels), [len(e[0]) for e in entries])
    order = np.argsort(ranks * num_channels + channel, kind="stable")
    unique, first = np.unique(rows[order], return_index=True)  # first: position in interleaved order
    union_order = np.argsort(first, kind="stable")
    position = np.empty(len(unique), np.int64)  # unique[j] sits at union position[j]
    position[union_order] = np.arange(len(unique))
    size = len(unique) if limit is None else min(limit, len(unique))
    at = position[np.searchsorted(unique, rows)]
    keep = at < size
    merged_scores = np.full((num_channels, size), np.nan, np.float32)
    merged_ranks = np.full((num_channels, size), np.nan, np.float32)
    merged_scores[channel[keep], at[keep]] = scores[keep]
    merged_ranks[channel[keep], at[keep]] = ranks[keep]
    return Merged(rows=unique[union_order[:size]], scores=merged_scores, ranks=merged_ranks)
