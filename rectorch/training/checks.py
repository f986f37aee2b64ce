"""Check a composed training config before anything is written: types, ranges, files, and a dry build.

``train`` calls :func:`check_config` first, so a bad value ends the run before it prepares (and
caches) data, opens an MLflow run or writes a checkpoint. The dry build instantiates the evaluation
settings, the datamodule (without preparing data; its files must exist), the model on a small
placeholder spec, its optimizer and scheduler, the callbacks and the trainer, and turns whatever
they reject into one line naming the config key.
"""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from rectorch.data.spec import DataSpec
from rectorch.models.checkpoint import read_checkpoint

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key."""


#: key → (accepted types, nullable, smallest allowed value); bool is never an accepted number
_SCALARS: dict[str, tuple[tuple[type, ...], bool, float | None]] = {
    "seed": ((int,), True, 0),
    "malloc_mmap_threshold_mb": ((int, float), True, 0),
    "trainer.max_epochs": ((int,), True, -1),
    "trainer.min_epochs": ((int,), True, 0),
    "trainer.max_steps": ((int,), True, -1),
    "trainer.check_val_every_n_epoch": ((int,), True, 1),
    "trainer.log_every_n_steps": ((int,), True, 1),
    "trainer.accumulate_grad_batches": ((int,), True, 1),
    "trainer.gradient_clip_val": ((int, float), True, 0),
    "trainer.limit_train_batches": ((int, float), True, 0),
    "trainer.limit_val_batches": ((int, float), True, 0),
    "trainer.limit_test_batches": ((int, float), True, 0),
    "evaluation.batch_users": ((int,), False, 1),
    "evaluation.sampled_negatives": ((int,), True, 1),
    "evaluation.seed": ((int,), False, 0),
    "evaluation.mask_seen": ((bool,), False, None),
    "callbacks.early_stopping.patience": ((int,), True, 0),
    "data.batch_size": ((int,), False, 1),
    "data.eval_batch_size": ((int,), False, 1),
}
_FILES = ("ckpt_path", "init_from")
#: what a component raises when it refuses its arguments
_REFUSALS = (ValueError, TypeError, KeyError, AttributeError)
_PLACEHOLDER_ITEMS = 64


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_scalars(cfg: DictConfig) -> None:
    for key, (types, nullable, low) in _SCALARS.items():
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue
        value = OmegaConf.select(cfg, key)
        if value is None:
            if not nullable:
                raise ConfigError(f"{key} must be set, got null")
            continue
        numeric = bool not in types
        if (numeric and isinstance(value, bool)) or not isinstance(value, types):
            expected = "true or false" if not numeric else "an integer" if types == (int,) else "a number"
            raise ConfigError(f"{key} must be {expected}, got {_short(value)}")
        if low is not None and value < low:
            raise ConfigError(f"{key} must be at least {low}, got {_short(value)}")


def _check_files(cfg: DictConfig) -> None:
    """Checkpoints to resume or start from must exist and load weights-only (nothing is unpickled)."""
    for key in _FILES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if not Path(str(value)).is_file():
            raise ConfigError(f"{key}: no checkpoint file at {value}")
        try:
            read_checkpoint(str(value))
        except ValueError as error:
            raise ConfigError(f"{key}: {error}") from error


def _one_line(error: BaseException) -> str:
    """The reason of a failed instantiation, on one line (Hydra's own message spans several)."""
    cause = error
    while cause.__cause__ is not None and isinstance(cause, InstantiationException):
        cause = cause.__cause__
    text = " ".join(str(cause).split()) or type(cause).__name__
    text = re.sub(r"^Error in call to target '[^']*':\s*", "", text)
    return text if len(text) <= 300 else text[:297] + "..."


def _build(key: str, make: Callable[[], T]) -> T:
    try:
        return make()
    except ConfigError:
        raise
    except (
        InstantiationException,
        MisconfigurationException,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
    ) as error:
        found = re.search(r"full_key: (\S+)", str(error))
        where = found.group(1) if found else key
        raise ConfigError(f"{where}: {_one_line(error)}") from error


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first config value that cannot run; writes nothing.

    Raises:
        ConfigError: a wrong type or range, a missing checkpoint or data file, or a component that refuses
            its arguments; the message names the key.
    """
    _check_scalars(cfg)
    _check_files(cfg)
    evaluation = _build("evaluation", lambda: instantiate(cfg.evaluation))
    _build("evaluation", lambda: evaluation.validate(num_items=2**62))  # what does not need the catalog size
    datamodule = _build("data", lambda: instantiate(cfg.data))
    _build("data.source", datamodule.source.files)
    num_items = max(_PLACEHOLDER_ITEMS, max(evaluation.ks) + 1)
    spec = DataSpec(name="config-check", num_users=16, num_items=num_items, max_history=8)
    model = _build("model", lambda: instantiate(cfg.model, spec=spec))
    _build("model.optimizer", model.configure_optimizers)
    callbacks = [
        _build(f"callbacks.{name}", lambda node=node: instantiate(node))
        for name, node in (cfg.get("callbacks") or {}).items()
        if node and "_target_" in node
    ]
    _build("trainer", lambda: instantiate(cfg.trainer, logger=False, callbacks=callbacks))
