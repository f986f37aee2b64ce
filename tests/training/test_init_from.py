"""``load_weights`` (behind ``init_from``): a checkpoint's weights start a new run; bad checkpoints fail loudly."""

import functools
from pathlib import Path

import pytest
import torch

from rectorch.data.spec import DataSpec
from rectorch.data.views import SequenceView
from rectorch.models.checkpoint import load_weights
from rectorch.models.components.sequence_encoder import SequenceEncoder
from rectorch.models.components.sequence_losses import FullSoftmaxLoss
from rectorch.models.sasrec import SASRecModule


def sasrec(dim: int, seed: int) -> SASRecModule:
    torch.manual_seed(seed)
    encoder = functools.partial(SequenceEncoder, dim=dim, num_blocks=1, num_heads=1)
    return SASRecModule(DataSpec("tiny", 5, 20), SequenceView(8), encoder, FullSoftmaxLoss())


def test_weights_are_copied_from_a_checkpoint(tmp_path: Path) -> None:
    trained, fresh = sasrec(16, seed=0), sasrec(16, seed=1)
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, path)
    history = torch.randint(1, 21, (2, 8))
    assert not torch.allclose(fresh.eval().encode_query(history), trained.eval().encode_query(history))
    load_weights(fresh, path)
    torch.testing.assert_close(fresh.encode_query(history), trained.encode_query(history))


def test_missing_or_foreign_checkpoints_fail_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_weights(sasrec(16, 0), tmp_path / "absent.ckpt")
    path = tmp_path / "wide.ckpt"
    torch.save({"state_dict": sasrec(32, 0).state_dict()}, path)
    with pytest.raises(ValueError, match=r"wide\.ckpt does not hold weights of this model"):
        load_weights(sasrec(16, 0), path)
