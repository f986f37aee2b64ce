"""DP-SGD training with Opacus (``privacy=dp``): Poisson-sampled batches, per-example clipping, Gaussian noise.

The noise multiplier is calibrated so that the planned run (``trainer.max_epochs`` epochs of Poisson batches
at rate ``1 / steps_per_epoch``) spends exactly the target ``(epsilon, delta)`` under the chosen accountant;
the accountant counts the steps really taken, its spent epsilon is logged every epoch (``privacy/epsilon``,
``privacy/delta``) and lands in ``metrics.json``. The privacy unit is one training example of the model's
view: one user for SASRec (a ``SequenceView`` row per user), one interaction for the two-tower (a ``PairView``
row per interaction). The guarantee covers what gradient steps learn; anything a model computes from the data
outside them (the two-tower's item counts for logQ and its known-id masks), the catalog's popularity and the
choice of the best epoch on validation data are outside it.

Per-example gradients come from :mod:`rectorch.training.per_example` (Opacus' hooks, checked on the first
batch: a model whose per-example gradients are wrong is refused). Embedding padding rows are reset to zero
after every step, as the noise would otherwise move them.
"""

import math
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from opacus.utils.batch_memory_manager import BatchSplittingSampler
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader

from rectorch.training.per_example import PerExampleHooks, verify_per_example_gradients

ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class PrivacySettings:
    """DP-SGD settings (``conf/privacy/dp.yaml``); every value is checked here, naming its key.

    Args:
        epsilon: the privacy budget the planned run spends.
        delta: its delta; ``None`` = 1 / number of users.
        max_grad_norm: per-example gradients are clipped to this L2 norm.
        accountant: ``"rdp"`` (Rényi DP) or ``"prv"`` (privacy random variables, tighter).
        poisson_sampling: each example joins each step with probability ``1 / steps_per_epoch`` (what the
            accountant assumes); ``False`` keeps shuffled fixed-size batches and the epsilon is then an
            approximation.
        secure_rng: draw noise and batches from ``torchcsprng`` (needs that package).
        max_physical_batch_size: cut each sampled batch into pieces of at most this many examples, whose
            clipped gradients add up to one step (per-example embedding gradients take B × V × D memory).
    """

    epsilon: float
    delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    poisson_sampling: bool = True
    secure_rng: bool = False
    max_physical_batch_size: int | None = None

    def __post_init__(self) -> None:
        for key in ("epsilon", "max_grad_norm"):
            value = getattr(self, key)
            if not _is_number(value) or not 0 < value < math.inf:
                raise ValueError(f"privacy.{key} must be a positive finite number, got {value!r}")
        if self.delta is not None and (not _is_number(self.delta) or not 0 < self.delta < 1):
            raise ValueError(f"privacy.delta must lie in (0, 1) or be null (1 / users), got {self.delta!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"privacy.accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        for key in ("poisson_sampling", "secure_rng"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"privacy.{key} must be true or false, got {getattr(self, key)!r}")
        size = self.max_physical_batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"privacy.max_physical_batch_size must be a positive integer or null, got {size!r}")
        if self.secure_rng:
            try:
                import torchcsprng  # noqa: F401
            except ImportError as error:
                raise ValueError("privacy.secure_rng=true needs the torchcsprng package") from error


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def private_training(cfg: DictConfig) -> "DifferentialPrivacy":
    """The DP-SGD callback of a config with a ``privacy`` node; refuses, naming the key, a setting that cannot
    run privately. Needs no data, so it runs before anything is prepared or written."""
    try:
        settings = instantiate(cfg.privacy)
    except InstantiationException as error:  # the settings' own one-line message
        cause = error.__cause__ or error
        text = " ".join(str(cause).split())
        raise ValueError(text if isinstance(cause, ValueError) else f"privacy: {text}") from error
    model_class = get_class(cfg.model._target_)
    if model_class.closed_form:
        raise ValueError(f"privacy: {model_class.__name__} is fitted in closed form; DP-SGD trains gradient models")
    if OmegaConf.select(cfg, "init_from"):
        raise ValueError("init_from: privacy=dp trains from scratch (starting weights are outside the budget)")
    trainer = cfg.trainer
    epochs = trainer.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"trainer.max_epochs: privacy=dp calibrates its noise to the planned epochs, got {epochs!r}")
    if (trainer.get("accumulate_grad_batches") or 1) != 1:
        raise ValueError("trainer.accumulate_grad_batches must be 1 under privacy=dp (one step per sampled batch)")
    if trainer.get("gradient_clip_val"):
        raise ValueError("trainer.gradient_clip_val must be null under privacy=dp (it clips each example instead)")
    return DifferentialPrivacy(settings, epochs)


class DifferentialPrivacy(L.Callback):
    """Makes a Lightning fit DP-SGD: per-example gradient hooks on the model, Opacus' ``DPOptimizer`` around
    the model's optimizer, Poisson batches through :meth:`datamodule`, the accountant's spent epsilon.

    Args:
        settings: the DP-SGD settings.
        epochs: the planned epochs (the noise is calibrated to them).
    """

    def __init__(self, settings: PrivacySettings, epochs: int) -> None:
        self.settings, self.epochs = settings, epochs
        self.accountant = create_accountant(mechanism=settings.accountant)
        self.delta = settings.delta
        self.loader: DataLoader | None = None
        self.optimizer: DPOptimizer | None = None
        self.plan: dict[str, Any] = {}
        self.summary: dict[str, Any] | None = None
        self._hooks: PerExampleHooks | None = None
        self._generator = _secure_generator() if settings.secure_rng else None
        self._source: L.LightningDataModule | None = None

    def datamodule(self, datamodule: L.LightningDataModule) -> L.LightningDataModule:
        """``datamodule`` with the private training batches (evaluation batches unchanged); pass it to fit."""
        self._source = datamodule
        return _PrivateBatches(datamodule, self)

    # --- wiring, once the model's optimizer exists -------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            raise ValueError(f"trainer.devices: privacy=dp trains on one device, got {trainer.world_size}")
        if len(trainer.optimizers) != 1:
            raise ValueError(f"privacy=dp needs exactly one optimizer, the model has {len(trainer.optimizers)}")
        if self._source is None:
            raise RuntimeError("fit the model on DifferentialPrivacy.datamodule(datamodule)")
        base: DataLoader = self._source.train_dataloader()
        self.plan = self._calibrate(len(base.dataset), len(base), pl_module.spec.num_users)
        _validate_layers(pl_module)
        self._hooks = PerExampleHooks(pl_module)
        self.optimizer = DPOptimizer(
            trainer.optimizers[0],
            noise_multiplier=self.plan["noise_multiplier"],
            max_grad_norm=self.settings.max_grad_norm,
            expected_batch_size=self.plan["expected_batch_size"],
            loss_reduction="mean",
            generator=self._generator,
            secure_mode=self.settings.secure_rng,
        )
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.plan["sample_rate"]))
        trainer.strategy.optimizers = [self.optimizer]
        self.loader = self._private_loader(base, self.plan["sample_rate"], self.plan["steps_per_epoch"])
        with torch.random.fork_rng(devices=[]):  # the check's batch leaves training's random stream as it was
            batch = next(iter(base))
        verify_per_example_gradients(pl_module, pl_module.transfer_batch_to_device(batch, pl_module.device, 0))

    def _calibrate(self, examples: int, steps_per_epoch: int, users: int) -> dict[str, Any]:
        """The noise multiplier that makes the planned steps spend exactly the target budget."""
        if self.delta is None:
            self.delta = 1 / users
        sample_rate = 1 / steps_per_epoch  # Opacus' convention: one epoch = 1 / sample_rate Poisson steps
        noise = get_noise_multiplier(
            target_epsilon=self.settings.epsilon,
            target_delta=self.delta,
            sample_rate=sample_rate,
            steps=self.epochs * steps_per_epoch,
            accountant=self.settings.accountant,
        )
        return {
            "noise_multiplier": noise,
            "sample_rate": sample_rate,
            "expected_batch_size": int(examples * sample_rate),
            "steps_per_epoch": steps_per_epoch,
            "examples": examples,
            "users": users,
        }

    def _private_loader(self, base: DataLoader, sample_rate: float, steps: int) -> DataLoader:
        if self.settings.poisson_sampling:
            sampler = UniformWithReplacementSampler(
                num_samples=len(base.dataset), sample_rate=sample_rate, generator=self._generator, steps=steps
            )
        else:
            sampler = base.batch_sampler
        if self.settings.max_physical_batch_size is not None:
            sampler = _PhysicalBatches(
                sampler=sampler, max_batch_size=self.settings.max_physical_batch_size, optimizer=self.optimizer
            )
        return DataLoader(
            base.dataset,
            batch_sampler=sampler,
            collate_fn=base.collate_fn,
            num_workers=base.num_workers,
            persistent_workers=base.persistent_workers,
        )

    # --- every step and epoch ----------------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        with torch.no_grad():
            for module in pl_module.modules():
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("privacy/epsilon", self.spent_epsilon())
        pl_module.log("privacy/delta", float(self.delta))

    def spent_epsilon(self) -> float:
        """The accountant's epsilon at ``delta`` for the steps taken so far."""
        return float(self.accountant.get_epsilon(delta=self.delta)) if self.accountant.history else 0.0

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.summary = self.report()
        if self._hooks is not None:
            self._hooks.cleanup()
            self._hooks = None

    def report(self) -> dict[str, Any]:
        """What ``metrics.json`` records under ``privacy``: the spent budget and how it was spent."""
        if self.summary is not None:
            return self.summary
        return {
            "epsilon": self.spent_epsilon(),
            "delta": self.delta,
            "target_epsilon": self.settings.epsilon,
            "accountant": self.settings.accountant,
            "max_grad_norm": self.settings.max_grad_norm,
            "steps": sum(steps for _, _, steps in self.accountant.history),
            "planned_epochs": self.epochs,
            **self.plan,
            "poisson_sampling": self.settings.poisson_sampling,
            "max_physical_batch_size": self.settings.max_physical_batch_size,
            "secure_rng": self.settings.secure_rng,
        }

    # --- the accountant travels in checkpoints, so a resumed run keeps counting --------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(entry) for entry in self.accountant.history], "delta": self.delta}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.accountant.history = [tuple(entry) for entry in state_dict["history"]]
        self.delta = state_dict["delta"]


class _PrivateBatches(L.LightningDataModule):
    """A datamodule's evaluation batches, with training batches from :class:`DifferentialPrivacy`."""

    def __init__(self, datamodule: L.LightningDataModule, privacy: DifferentialPrivacy) -> None:
        super().__init__()
        self.datamodule, self.privacy = datamodule, privacy

    def train_dataloader(self) -> DataLoader:
        return self.privacy.loader

    def val_dataloader(self) -> DataLoader:
        return self.datamodule.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.datamodule.test_dataloader()


class _PhysicalBatches(BatchSplittingSampler):
    """Opacus' splitter of sampled batches into physical ones, without a length: the number of physical
    batches varies with each epoch's draws, and Lightning ends an epoch after ``len`` batches, which could
    cut a sampled batch in two. Without one, an epoch runs until the sampler is exhausted."""

    __len__ = None


def _secure_generator() -> torch.Generator:
    import torchcsprng

    return torchcsprng.create_random_device_generator("/dev/urandom")


def _validate_layers(model: nn.Module) -> None:
    """Opacus' check for layers without per-example gradients (batch norm and the like), as one line."""
    try:
        ModuleValidator.validate(model, strict=True)
    except Exception as error:  # Opacus raises a list of errors
        raise ValueError(f"privacy=dp: {' '.join(str(error).split())}") from error
