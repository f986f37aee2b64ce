"""Where the project and its Hydra configs live, and the OmegaConf resolvers the configs use."""

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("rectorch_root"):
        OmegaConf.register_new_resolver("rectorch_root", lambda: str(PROJECT_ROOT))
