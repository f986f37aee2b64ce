"""OmegaConf resolvers the configs use; registered when ``rectorch.training`` is imported."""

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("rectorch_root"):
        OmegaConf.register_new_resolver("rectorch_root", lambda: str(PROJECT_ROOT))
