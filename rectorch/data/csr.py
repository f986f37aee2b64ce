"""Ragged per-user item lists stored as CSR arrays, with vectorised padding."""

from dataclasses import dataclass

import numpy as np
import torch


def pad_ranges(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int, align: str = "right"
) -> np.ndarray:
    """Copy ``values[starts[i]:ends[i]]`` into row ``i`` of a 0-padded ``(n, length)`` matrix.

    Rows longer than ``length`` keep their last ``length`` values. ``align="right"`` puts the
    most recent value in the last column (what sequence models read); ``"left"`` starts at column 0.
    """
    sizes = np.minimum(ends - starts, length).astype(np.int64)
    out = np.zeros((len(sizes), length), dtype=values.dtype)
    total = int(sizes.sum())
    if total == 0:
        return out
    rows = np.repeat(np.arange(len(sizes)), sizes)
    offsets = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    source = np.repeat(ends - sizes, sizes) + offsets
    cols = offsets if align == "left" else np.repeat(length - sizes, sizes) + offsets
    out[rows, cols] = values[source]
    return out


@dataclass
class Csr:
    """Rows of item ids (and optionally timestamps): row ``r`` is ``items[indptr[r]:indptr[r+1]]``."""

    indptr: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row(self, r: int) -> np.ndarray:
        return self.items[self.indptr[r] : self.indptr[r + 1]]

    def row_ids(self) -> np.ndarray:
        """Row index of every stored value, shape ``(nnz,)``."""
        return np.repeat(np.arange(self.num_rows), self.lengths())

    def padded(self, rows: np.ndarray, length: int | None = None, align: str = "right") -> torch.Tensor:
        """Rows as a 0-padded ``(len(rows), length)`` int64 tensor; ``None`` = longest selected row."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        if length is None:
            length = max(int((ends - starts).max(initial=0)), 1)
        return torch.from_numpy(pad_ranges(self.items, starts, ends, length, align).astype(np.int64))

    def select(self, mask: np.ndarray) -> "Csr":
        """Keep the stored values where ``mask`` (shape ``(nnz,)``) is true, rows unchanged."""
        counts = np.bincount(self.row_ids()[mask], minlength=self.num_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        times = None if self.timestamps is None else self.timestamps[mask]
        return Csr(indptr, self.items[mask], times)

    def take(self, rows: np.ndarray) -> "Csr":
        """A new CSR made of the given rows, in that order."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        sizes = ends - starts
        indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        source = np.repeat(starts - indptr[:-1], sizes) + np.arange(int(sizes.sum()))
        times = None if self.timestamps is None else self.timestamps[source]
        return Csr(indptr, self.items[source], times)

    def keys(self, num_items: int, row_labels: np.ndarray | None = None) -> np.ndarray:
        """``label * (num_items + 1) + item`` per stored value, for fast membership tests."""
        labels = self.row_ids() if row_labels is None else row_labels[self.row_ids()]
        return labels.astype(np.int64) * (num_items + 1) + self.items
