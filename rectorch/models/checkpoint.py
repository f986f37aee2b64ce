"""Loading a Lightning checkpoint's weights into a freshly built model, without unpickling code."""

from pathlib import Path
from typing import Any

import torch


def read_checkpoint(checkpoint: Path | str) -> dict[str, Any]:
    """A checkpoint's contents, loaded with ``weights_only=True``: tensors and plain containers only.

    A file that would need arbitrary unpickling (a planted payload, or not a checkpoint at all) is a
    ``ValueError`` naming it, never executed.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{checkpoint} is not a loadable weights-only checkpoint: {reason}") from error
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ValueError(f"{checkpoint} is not a Lightning checkpoint (no state_dict)")
    return state


def load_weights(model: torch.nn.Module, checkpoint: Path | str) -> None:
    """Copy a Lightning checkpoint's weights into ``model``; a missing file or another architecture fails loudly."""
    state = read_checkpoint(checkpoint)["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{checkpoint} does not hold weights of this model: {error}") from error


def checkpoint_epoch(checkpoint: Path | str) -> int:
    """The 1-based epoch stored in a Lightning checkpoint."""
    return int(read_checkpoint(checkpoint).get("epoch", 0)) + 1
