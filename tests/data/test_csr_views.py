"""CSR padding and the views' batches: right alignment, truncation, and no look-ahead in pairs."""

import numpy as np
import torch

from rectorch.data.csr import Csr, pad_ranges
from rectorch.data.prepared import FeatureTable
from rectorch.data.views import PairView, SequenceView

CSR = Csr(np.array([0, 0, 3, 4, 8]), np.array([1, 2, 3, 4, 5, 6, 7, 8]))
NO_FEATURES = (FeatureTable(), FeatureTable())


def test_pad_ranges_right_left_and_truncation() -> None:
    values = np.arange(10, 20)
    right = pad_ranges(values, np.array([0, 3, 5]), np.array([3, 4, 10]), 3)
    assert right.tolist() == [[10, 11, 12], [0, 0, 13], [17, 18, 19]]
    left = pad_ranges(values, np.array([0, 3]), np.array([3, 4]), 4, align="left")
    assert left.tolist() == [[10, 11, 12, 0], [13, 0, 0, 0]]


def test_take_select_and_keys() -> None:
    taken = CSR.take(np.array([3, 1]))
    assert [taken.row(0).tolist(), taken.row(1).tolist()] == [[5, 6, 7, 8], [1, 2, 3]]
    kept = CSR.select(CSR.items % 2 == 0)
    assert [kept.row(r).tolist() for r in range(4)] == [[], [2], [4], [6, 8]]
    assert CSR.keys(num_items=8)[:3].tolist() == [1 * 9 + 1, 1 * 9 + 2, 1 * 9 + 3]


def test_sequence_view_batches_are_right_aligned() -> None:
    dataset = SequenceView(max_len=3).train_dataset(CSR, NO_FEATURES)
    assert len(dataset) == 2  # users with fewer than 2 items cannot give a next-item target
    batch = dataset.collate([0, 1])
    assert batch["items"].tolist() == [[0, 1, 2, 3], [5, 6, 7, 8]]
    query = SequenceView(max_len=2).query(np.array([1, 3]), CSR, np.array([0, 3]), NO_FEATURES)
    assert query["history"].tolist() == [[0, 0], [7, 8]]


def test_pair_view_reads_only_the_past() -> None:
    dataset = PairView(history_len=2).train_dataset(CSR, NO_FEATURES)
    batch = dataset.collate(list(range(len(dataset))))
    assert batch["item"].tolist() == [2, 3, 6, 7, 8]
    assert batch["users"].tolist() == [1, 1, 3, 3, 3]
    assert batch["history"].tolist() == [[0, 1], [1, 2], [0, 5], [5, 6], [6, 7]]
    assert torch.all(batch["history"] != batch["item"].unsqueeze(1))
