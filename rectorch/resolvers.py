"""Where rectorch finds its configs and writes its outputs, and the OmegaConf resolvers the configs use.

Configs ship inside the package as ``rectorch.conf`` (the repository's top-level ``conf/``), so an
editable checkout and an installed wheel read the same files. Outputs never go into the install
tree: they go under ``$RECTORCH_HOME`` when set, else under the current working directory.
"""

import os
from importlib.resources import files
from pathlib import Path

from omegaconf import OmegaConf

from rectorch import launch

CONFIG_MODULE = "rectorch.conf"
HOME_ENV = "RECTORCH_HOME"
#: a source checkout imported straight from its directory (``python -m pytest`` in the clone, whatever is
#: installed) has its configs beside the package, not inside it
_CHECKOUT_CONF = Path(__file__).resolve().parents[1] / "conf"


def config_dir() -> Path:
    """The directory holding the packaged configs (``conf/`` of a checkout, ``rectorch/conf`` of a wheel)."""
    try:
        return Path(str(files(CONFIG_MODULE)))
    except ModuleNotFoundError:
        if (_CHECKOUT_CONF / "train.yaml").is_file():
            return _CHECKOUT_CONF
        raise


def _config_path() -> str:
    try:
        files(CONFIG_MODULE)
    except ModuleNotFoundError:
        return str(config_dir())
    return f"pkg://{CONFIG_MODULE}"


#: ``config_path`` of every ``@hydra.main``: the packaged configs
CONFIG_PATH = _config_path()


def rectorch_home() -> Path:
    """Root of every output (runs, cache, MLflow store, bundles): ``$RECTORCH_HOME``, else the working directory."""
    return Path(os.environ.get(HOME_ENV) or os.getcwd()).resolve()


def monitored_metric(sampled_negatives: int | None, metric: str = "ndcg@10") -> str:
    """The validation key checkpointing and early stopping watch: ``val/ndcg@10``, ``val/sampled-100/ndcg@10``."""
    from rectorch.evaluation.protocol import metric_prefix, ranking_label

    return f"val/{metric_prefix(ranking_label(sampled_negatives))}{metric}"


def launched_devices(default: int) -> int:
    """``trainer.devices``: the processes per node srun or torchrun started, else ``default``."""
    layout = launch.launched_layout()
    return layout[0] if layout else default


def launched_nodes(default: int) -> int:
    """``trainer.num_nodes``: the nodes srun or torchrun started processes on, else ``default``."""
    layout = launch.launched_layout()
    return layout[1] if layout else default


def gpus_per_node(accelerator: str, devices: int) -> int | None:
    """``hydra.launcher.gpus_per_node`` of ``hydra/launcher=slurm``: one GPU per task on a GPU trainer, else none."""
    return devices if accelerator in ("gpu", "cuda") else None


def register_resolvers() -> None:
    resolvers = {
        "rectorch_home": lambda: str(rectorch_home()),
        "rectorch_monitor": monitored_metric,
        "rectorch_devices": launched_devices,
        "rectorch_nodes": launched_nodes,
        "rectorch_rank_zero": launch.rank_zero,
        "rectorch_gpus_per_node": gpus_per_node,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("rectorch_run_name"):
        # cached like Hydra's ``now``: the run directory is read more than once and must not move
        OmegaConf.register_new_resolver("rectorch_run_name", launch.run_name, use_cache=True)
