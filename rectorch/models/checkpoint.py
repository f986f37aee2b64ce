"""Loading a Lightning checkpoint's weights into a freshly built model."""

from pathlib import Path

import torch


def load_weights(model: torch.nn.Module, checkpoint: Path | str) -> None:
    """Copy a Lightning checkpoint's weights into ``model``; a missing file or another architecture fails loudly."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{checkpoint} does not hold weights of this model: {error}") from error
