"""The one LightningDataModule: prepare (cached) → split (leakage-checked) → batches through the model's view."""

import os
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from rectorch.data.cache import SUFFIXES, CacheFormat
from rectorch.data.context import TrainContext
from rectorch.data.prepare import Preprocessing, load_or_prepare
from rectorch.data.prepared import PreparedDataset
from rectorch.data.sources import InteractionsFileSource
from rectorch.data.spec import DataSpec
from rectorch.data.splits import LeaveOneOut, SplitData, TemporalSplit
from rectorch.data.views import IndexDataset, ModelView, eval_dataset


class RecDataModule(L.LightningDataModule):
    """Serves one prepared dataset to any model through the model's view.

    Args:
        source: a reader with ``load()``, ``files()`` and ``config()`` (see ``rectorch.data.sources``).
        preprocessing: dedup / rating / k-core filters applied before id mapping.
        split: ``LeaveOneOut()`` or ``TemporalSplit(...)``.
        batch_size: training batch size.
        eval_batch_size: users per evaluation batch (the configs pass ``evaluation.batch_users``).
        cache_dir: where prepared datasets are cached by fingerprint (``None`` disables caching).
        cache_format: ``npz`` (read into memory) or ``arrow`` (interactions memory-mapped: large logs).
    """

    def __init__(
        self,
        source,
        preprocessing: Preprocessing,
        split: LeaveOneOut | TemporalSplit,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        cache_format: CacheFormat = "npz",
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {batch_size}")
        if eval_batch_size <= 0:
            raise ValueError(f"data.eval_batch_size must be positive, got {eval_batch_size}")
        self.source, self.preprocessing, self.splitter = source, preprocessing, split
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if cache_format not in SUFFIXES:
            raise ValueError(f"data.cache_format must be one of {sorted(SUFFIXES)}, got {cache_format!r}")
        self.cache_format = cache_format
        self.dataset: PreparedDataset | None = None
        self.split: SplitData | None = None
        self.view: ModelView | None = None
        self._context: TrainContext | None = None

    def prepare_data(self) -> None:
        if self.dataset is None:  # validate/test after fit reuse the dataset set up for fit
            load_or_prepare(self.source, self.preprocessing, self.cache_dir, self.cache_format)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = load_or_prepare(self.source, self.preprocessing, self.cache_dir, self.cache_format)
        self.split = self.splitter(self.dataset)

    @property
    def spec(self) -> DataSpec:
        if self.dataset is None:
            self.setup()
        return self.dataset.spec()

    @property
    def context(self) -> TrainContext:
        """The typed context a model is bound to (built once, after ``setup``)."""
        if self._context is None:
            if self.dataset is None:
                self.setup()
            dataset, split = self.dataset, self.split
            self._context = TrainContext(
                spec=dataset.spec(),
                split=split.kind,
                train=split.train,
                user_features=dataset.user_features,
                item_features=dataset.item_features,
                item_popularity=np.bincount(split.train.items, minlength=dataset.num_items + 1),
                item_category=self._item_category(),
                eval_users={stage: len(split.eval_set(stage)) for stage in ("val", "test")},
            )
        return self._context

    @property
    def features(self):
        return self.dataset.user_features, self.dataset.item_features

    def _item_category(self) -> np.ndarray | None:
        name = self.dataset.category_feature
        if name is None:
            return None
        column = self.dataset.item_features.columns[name]
        return column if column.ndim == 1 else column[:, 0]

    def _sampler(self, dataset: IndexDataset, shuffle: bool) -> Sampler | range | None:
        """Under DDP: shuffled shards for training (shuffled by the run's seed, which ``seed_everything`` leaves in
        ``PL_GLOBAL_SEED``), exact disjoint shards (no padding) for evaluation."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return None
        if shuffle:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            return DistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=True, seed=seed
            )
        return range(trainer.global_rank, len(dataset), trainer.world_size)

    def _loader(self, dataset: IndexDataset, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = self._sampler(dataset, shuffle)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            collate_fn=dataset.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _require_view(self) -> ModelView:
        if self.view is None:
            raise RuntimeError("RecDataModule.view is unset: assign the model's view before building loaders")
        return self.view

    def train_dataloader(self) -> DataLoader:
        dataset = self._require_view().train_dataset(self.split.train, self.features)
        if len(dataset) == 0:
            raise ValueError(f"{self.dataset.name}: no training examples for {type(self.view).__name__}")
        return self._loader(dataset, self.batch_size, shuffle=True)

    def eval_dataloader(self, stage: str) -> DataLoader:
        dataset = eval_dataset(self._require_view(), self.split.eval_set(stage), self.features)
        return self._loader(dataset, self.eval_batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")


def file_datamodule(
    path: str,
    preprocessing: Preprocessing,
    split: LeaveOneOut | TemporalSplit,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = None,
    rating_col: str | None = None,
    sep: str | None = None,
    name: str = "csv",
    item_features_path: str | None = None,
    item_id_col: str = "item_id",
    multi_value_cols: tuple[str, ...] = (),
    category_feature: str | None = None,
    batch_size: int = 128,
    eval_batch_size: int = 256,
    cache_dir: str | None = None,
    cache_format: CacheFormat = "npz",
) -> RecDataModule:
    """A ``RecDataModule`` over one CSV/Parquet interactions file (what ``data=csv data.path=...`` builds)."""
    source = InteractionsFileSource(
        path=path,
        user_col=user_col,
        item_col=item_col,
        time_col=time_col,
        rating_col=rating_col,
        sep=sep,
        name=name,
        item_features_path=item_features_path,
        item_id_col=item_id_col,
        multi_value_cols=tuple(multi_value_cols),
        category_feature=category_feature,
    )
    return RecDataModule(
        source,
        preprocessing,
        split,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        cache_dir=cache_dir,
        cache_format=cache_format,
    )
