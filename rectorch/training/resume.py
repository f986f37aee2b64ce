"""Exact resume: the process-wide random states travel in every checkpoint and come back on load.

Lightning restores weights, optimizer, schedulers, loop counters and callback states, but not the global
random generators. Those decide the next epoch's shuffle order (a ``DataLoader`` with ``shuffle=True``
draws its sampler seed from torch's generator when each epoch's iterator is made), dropout masks and
sampled negatives; without them a resumed run diverges from the uninterrupted one after the first batch.

The states are stored as tensors, ints and lists only, so checkpoints still load with ``weights_only=True``.
"""

import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch

STATE_KEY = "rectorch_rng"


def capture_rng() -> dict[str, Any]:
    """torch (CPU and every initialised CUDA device), numpy's global and Python's ``random`` states."""
    version, mt, gauss = random.getstate()
    legacy = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(legacy["state"]["key"].astype(np.int64)),
            "pos": int(legacy["state"]["pos"]),
            "has_gauss": int(legacy["has_gauss"]),
            "gauss": float(legacy["gauss"]),
        },
        "python": {"version": int(version), "mt": list(mt), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` returned."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["mt"]), python["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RandomStateCheckpoint(L.Callback):
    """Saves the random states with each checkpoint and restores them when training resumes from one.

    Restoring happens in ``on_load_checkpoint``, before Lightning builds the first training iterator of the
    resumed fit, so the next epoch draws exactly what the uninterrupted run drew after the same checkpoint.
    A checkpoint written without these states (older runs) resumes as before, with a warning.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[STATE_KEY] = capture_rng()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(STATE_KEY)
        if state is None:
            warnings.warn("checkpoint holds no random states: resumed training is not bit-exact", stacklevel=1)
            return
        restore_rng(state)
