"""``NeuralRanker``: a DCN-v2 scorer over candidate features, trained listwise over each query's candidates.

The preprocessing is fitted on the training rows and baked into the network, so the ONNX graph takes raw
features. Per column, in this order:

1. heavy-tailed columns get a signed ``log1p`` (``sign(x) · log(1 + |x|)``): a column is heavy-tailed when
   its name ends in ``_rank`` or its largest finite training ``|value|`` exceeds 100;
2. standardisation with the mean and std of the finite training values; a column whose std is below
   1e-6 (constant, or never observed) gets std 1;
3. a missing cell (NaN or ±inf) becomes 0 (the training mean) and sets the column's missing indicator.

The network sees ``[standardised values, missing indicators]`` (``2F`` inputs, one indicator per column).
"""

import contextlib
import io
import json
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from rectorch.interprocess import write_atomic
from rectorch.ranking.data import RankingData
from rectorch.ranking.ranker import export_sample, group_ndcg, validate_export

HEAVY_TAIL_MAX = 100.0
MIN_STD = 1e-6
FORMAT = "rectorch.neural_ranker/1"
CONFIG_FILE, WEIGHTS_FILE = "neural_ranker.json", "neural_ranker.pt"
VALID_METRIC = "val/ndcg@10"


@dataclass
class Preprocessing:
    """Per-column constants fitted on training rows (see the module docstring)."""

    mean: list[float]
    std: list[float]
    log: list[bool]

    @classmethod
    def fit(cls, features: np.ndarray, names: Sequence[str]) -> "Preprocessing":
        finite = np.isfinite(features)
        largest = np.where(finite, np.abs(features), 0.0).max(axis=0, initial=0.0)
        log = np.array([name.endswith("_rank") for name in names]) | (largest > HEAVY_TAIL_MAX)
        values = np.where(log, signed_log1p(features.astype(np.float64)), features)
        count = np.maximum(finite.sum(axis=0), 1)
        mean = np.where(finite, values, 0.0).sum(axis=0) / count
        std = np.sqrt((np.where(finite, values - mean, 0.0) ** 2).sum(axis=0) / count)
        std = np.where(std < MIN_STD, 1.0, std)
        return cls(mean.tolist(), std.tolist(), log.tolist())


def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class FeatureTransform(nn.Module):
    """Raw features → standardised values and missing indicators.

    The constants are non-persistent buffers: the saved JSON holds them, the weights file does not.

    Shapes:
        ``(*, F)`` → ``(*, 2F)``.
    """

    def __init__(self, constants: Preprocessing) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(constants.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(constants.std, dtype=torch.float32), persistent=False)
        self.register_buffer("log", torch.tensor(constants.log, dtype=torch.bool), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        missing = ~torch.isfinite(x)
        x = torch.where(self.log, torch.sign(x) * torch.log1p(x.abs()), x)
        z = torch.where(missing, 0.0, (x - self.mean) / self.std)
        return torch.cat([z, missing.to(z.dtype)], dim=-1)


class CrossLayer(nn.Module):
    """One full-rank DCN-v2 cross layer: ``x_{l+1} = x0 ⊙ (W x_l + b) + x_l``.

    Shapes:
        ``x0``, ``x`` ``(*, dim)`` → ``(*, dim)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        return x0 * self.linear(x) + x


class DCNv2(nn.Module):
    """A cross network in parallel with an MLP over the same input, then a linear head.

    Args:
        in_dim: input size.
        hidden: MLP sizes (``Linear → ReLU → Dropout`` each; empty = the input itself).
        cross_layers: number of cross layers (0 = the input itself).
        dropout: dropout after each MLP layer.

    Shapes:
        ``(*, in_dim)`` → ``(*,)``: one score per row.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], cross_layers: int, dropout: float) -> None:
        super().__init__()
        self.cross = nn.ModuleList(CrossLayer(in_dim) for _ in range(cross_layers))
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.deep = nn.Sequential(*layers)
        self.head = nn.Linear(in_dim + width, 1)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.head(torch.cat([x, self.deep(x0)], dim=-1)).squeeze(-1)


class RankerNet(nn.Module):
    """``FeatureTransform`` then ``DCNv2``: raw features ``(*, F)`` → scores ``(*,)``; what ONNX exports."""

    def __init__(self, constants: Preprocessing, hidden: Sequence[int], cross_layers: int, dropout: float) -> None:
        super().__init__()
        self.transform = FeatureTransform(constants)
        self.scorer = DCNv2(2 * len(constants.mean), hidden, cross_layers, dropout)

    def forward(self, features: Tensor) -> Tensor:
        return self.scorer(self.transform(features))


class _Groups(Dataset):
    """One item per query: its candidates' features and labels."""

    def __init__(self, data: RankingData) -> None:
        self.features, self.labels = torch.from_numpy(data.features), torch.from_numpy(data.labels)
        self.offsets = data.offsets.tolist()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        rows = slice(self.offsets[index], self.offsets[index + 1])
        return self.features[rows], self.labels[rows]


def _pad(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """Whole groups padded to the longest: features ``(G, L, F)``, labels ``(G, L)``, mask ``(G, L)``."""
    length, width = max(len(f) for f, _ in items), items[0][0].shape[1]
    features = torch.zeros(len(items), length, width)
    labels = torch.zeros(len(items), length)
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for row, (f, y) in enumerate(items):
        features[row, : len(f)], labels[row, : len(f)], mask[row, : len(f)] = f, y, True
    return features, labels, mask


class ListwiseTask(L.LightningModule):
    """Softmax cross-entropy over each group's candidates; keeps the best-on-``valid`` weights in memory."""

    def __init__(self, net: RankerNet, valid: RankingData, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.net, self.valid = net, valid
        self.lr, self.weight_decay = lr, weight_decay
        self.best_ndcg, self.best_epoch = -math.inf, -1
        self.best_state: dict[str, Tensor] = {}
        self.history: list[float] = []
        self._scores: list[Tensor] = []

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        features, labels, mask = batch
        scores = self.net(features).masked_fill(~mask, -math.inf)  # (G, L)
        log_p = torch.log_softmax(scores, dim=1).masked_fill(~mask, 0.0)
        target = labels / labels.sum(dim=1, keepdim=True)  # every group holds a target
        loss = -(target * log_p).sum(dim=1).mean()
        self.log("train/loss", loss, batch_size=len(features))
        return loss

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        self._scores.append(self.net(batch[0]))

    def on_validation_epoch_end(self) -> None:
        scores = torch.cat(self._scores).double().numpy()
        self._scores.clear()
        ndcg = group_ndcg(scores, self.valid.labels, self.valid.groups)
        self.history.append(ndcg)
        if ndcg > self.best_ndcg:
            self.best_ndcg, self.best_epoch = ndcg, self.current_epoch
            self.best_state = {key: value.detach().clone() for key, value in self.net.state_dict().items()}
        self.log(VALID_METRIC, ndcg)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class NeuralRanker:
    """A DCN-v2 ranker over candidate features (``ranker=neural``).

    Args:
        hidden: MLP sizes of the deep branch.
        cross_layers: full-rank cross layers of the cross branch.
        dropout: dropout in the deep branch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        groups_per_batch: queries (whole candidate groups) per optimisation step.
        max_epochs: epochs at most.
        patience: epochs without a better ``valid`` NDCG@10 before stopping; the best weights are restored.
        seed: seeds the initial weights, dropout and the group order (same seed, same data → same model).
        threads: torch intra-op threads while fitting and predicting.
    """

    name = "neural"

    def __init__(
        self,
        hidden: Sequence[int] = (128, 64),
        cross_layers: int = 2,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        groups_per_batch: int = 64,
        max_epochs: int = 30,
        patience: int = 4,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        self.hidden = tuple(int(size) for size in hidden)
        self.cross_layers, self.dropout, self.lr, self.weight_decay = cross_layers, dropout, lr, weight_decay
        self.groups_per_batch, self.max_epochs, self.patience = groups_per_batch, max_epochs, patience
        self.seed, self.threads = seed, threads
        for key, value, low in [
            ("hidden", min(self.hidden, default=1), 1),
            ("cross_layers", cross_layers, 0),
            ("groups_per_batch", groups_per_batch, 1),
            ("max_epochs", max_epochs, 1),
            ("patience", patience, 0),
            ("threads", threads, 1),
        ]:
            if value < low:
                raise ValueError(f"NeuralRanker {key} must be >= {low}, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"NeuralRanker dropout must be in [0, 1), got {dropout}")
        self.net: RankerNet | None = None
        self.feature_names: list[str] = []
        self.constants: Preprocessing | None = None
        self.onnx_report: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        """The constructor arguments."""
        keys = "hidden cross_layers dropout lr weight_decay groups_per_batch max_epochs patience seed threads"
        return {key: getattr(self, key) for key in keys.split()}

    def fit(self, train: RankingData, valid: RankingData) -> dict[str, Any]:
        """Fit the preprocessing on ``train``, train the network, keep the best epoch on ``valid``.

        Returns:
            ``{"epochs", "best_epoch", "valid_ndcg@10", "valid_history", "train_groups", "valid_groups",
            "fit_seconds"}``.
        """
        if train.names != valid.names:
            raise ValueError(f"train and valid feature names differ: {train.names} vs {valid.names}")
        train, valid = train.with_positive(), valid.with_positive()
        for part, data in [("train", train), ("valid", valid)]:
            if not len(data):
                raise ValueError(f"NeuralRanker.fit: {part} has no query with a target")
        started, self.onnx_report = time.perf_counter(), {}
        with _torch_threads(self.threads), tempfile.TemporaryDirectory() as scratch:
            L.seed_everything(self.seed, verbose=False)
            self.feature_names, self.constants = list(train.names), Preprocessing.fit(train.features, train.names)
            self.net = RankerNet(self.constants, self.hidden, self.cross_layers, self.dropout)
            task = ListwiseTask(self.net, valid, self.lr, self.weight_decay)
            order = torch.Generator().manual_seed(self.seed)
            batches = DataLoader(_Groups(train), self.groups_per_batch, shuffle=True, generator=order, collate_fn=_pad)
            valid_rows = DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(valid.features)), 65536)
            trainer = L.Trainer(
                accelerator="cpu",
                devices=1,
                max_epochs=self.max_epochs,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                default_root_dir=scratch,
                callbacks=[EarlyStopping(VALID_METRIC, patience=self.patience, mode="max")],
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*does not have many workers.*")
                trainer.fit(task, batches, valid_rows)
            self.net.load_state_dict(task.best_state)
            self.net.eval()
        return {
            "epochs": len(task.history),
            "best_epoch": task.best_epoch,
            "valid_ndcg@10": task.best_ndcg,
            "valid_history": task.history,
            "train_groups": len(train),
            "valid_groups": len(valid),
            "fit_seconds": time.perf_counter() - started,
        }

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Scores ``(N,)`` float64 of raw feature rows ``(N, F)`` (NaN = missing)."""
        net = self._fitted()
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            width = len(self.feature_names)
            raise ValueError(f"NeuralRanker.predict expects (N, {width}) features, got {features.shape}")
        with _torch_threads(self.threads), torch.no_grad():
            parts = np.array_split(features, max(1, math.ceil(len(features) / 65536)))
            return torch.cat([net(torch.from_numpy(part)) for part in parts]).double().numpy()

    def to_onnx(self) -> bytes:
        """ONNX of the network (input ``features`` float32 ``[N, F]``, output ``scores`` float32 ``[N]``).

        Validated with :func:`validate_export` on rows drawn from the fitted column statistics (so a loaded
        ranker exports too), the same rows with NaN cells, and an all-NaN row.
        """
        net = self._fitted()
        sample = export_sample(self._typical_rows(), seed=self.seed)
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net,
                (torch.from_numpy(sample),),
                dynamo=True,
                external_data=False,
                opset_version=18,
                input_names=["features"],
                output_names=["scores"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
        program.save(buffer)
        return validate_export(self, buffer.getvalue(), sample)

    def save(self, directory: str | Path) -> list[Path]:
        """Write ``neural_ranker.json`` (settings, feature names, preprocessing) and ``neural_ranker.pt`` (weights)."""
        net, directory = self._fitted(), Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "settings": {**self.settings(), "hidden": list(self.hidden)},
            "feature_names": self.feature_names,
            "preprocessing": asdict(self.constants),
        }
        weights = io.BytesIO()
        torch.save(net.state_dict(), weights)
        paths = [directory / CONFIG_FILE, directory / WEIGHTS_FILE]
        write_atomic(paths[0], json.dumps(config, indent=1).encode())
        write_atomic(paths[1], weights.getvalue())
        return paths

    @classmethod
    def load(cls, directory: str | Path) -> "NeuralRanker":
        """Rebuild a ranker written by :meth:`save`.

        Raises:
            ValueError: a missing or malformed file (named).
        """
        path, weights = Path(directory) / CONFIG_FILE, Path(directory) / WEIGHTS_FILE
        try:
            config = json.loads(path.read_text())
            if config.get("format") != FORMAT:
                raise ValueError(f"format {config.get('format')!r} is not {FORMAT!r}")
            ranker = cls(**config["settings"])
            ranker.feature_names, ranker.constants = config["feature_names"], Preprocessing(**config["preprocessing"])
            width = len(ranker.feature_names)
            if any(len(column) != width for column in asdict(ranker.constants).values()):
                raise ValueError(f"preprocessing does not hold one constant per feature ({width})")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}: not a saved NeuralRanker ({type(error).__name__}: {error})") from error
        ranker.net = RankerNet(ranker.constants, ranker.hidden, ranker.cross_layers, ranker.dropout)
        try:
            ranker.net.load_state_dict(torch.load(weights, weights_only=True))
        except (OSError, RuntimeError, KeyError, TypeError) as error:
            raise ValueError(f"{weights}: weights do not fit {path} ({type(error).__name__})") from error
        ranker.net.eval()
        return ranker

    def _fitted(self) -> RankerNet:
        if self.net is None:
            raise ValueError("NeuralRanker is not fitted: call fit() or NeuralRanker.load() first")
        return self.net

    def _typical_rows(self, rows: int = 256) -> np.ndarray:
        """Rows in raw units, each column normal around its training mean and std (on the log scale where logged)."""
        constants = self.constants
        normal = np.random.default_rng(self.seed).normal(size=(rows, len(self.feature_names)))
        values = np.asarray(constants.mean) + np.asarray(constants.std) * normal
        return np.where(constants.log, np.sign(values) * np.expm1(np.abs(values)), values).astype(np.float32)
