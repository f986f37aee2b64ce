"""Shared fixtures: one OpenMP thread, the real data root, and composed Hydra configs."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_SHARED = PROJECT_ROOT.parent / "shared" / "data"
if "RECTORCH_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["RECTORCH_DATA_DIR"] = str(_SHARED)


def data_dir() -> Path | None:
    """The real-data root, or None when absent."""
    root = os.environ.get("RECTORCH_DATA_DIR")
    return Path(root) if root and Path(root).is_dir() else None


def require_data(relative: str) -> Path:
    """Path of a real data file, or skip the test with the reason."""
    root = data_dir()
    if root is None or not (root / relative).exists():
        pytest.skip(f"real data {relative} not found under RECTORCH_DATA_DIR={root}")
    return root / relative
