"""LightningDataModule serving the Sign-MNIST splits from in-memory tensors."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from lightning import LightningDataModule

from datamodules.augment import AugmentConfig, AugmentedBatches, BatchAugmenter
from datamodules.csv_io import DataError, load_split
from datamodules.splits import (
    LETTERS,
    MLP_VAL_FRACTION,
    REFERENCE_SEED,
    SplitArrays,
    load_splits,
)


class InMemoryBatches:
    """An iterable of ``(images, labels)`` batches cut from tensors already on the device.

    The whole data set is 86 MB as float32, so per-sample ``Dataset.__getitem__`` plus a collate
    function (what ``DataLoader`` does) is pure overhead: one gather per batch is all it takes.
    Under a distributed strategy each rank walks a disjoint shard of every epoch's permutation;
    training shards are cut to equal length so that all ranks take the same number of steps.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = REFERENCE_SEED,
        rank: int = 0,
        world_size: int = 1,
        equal_shards: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.equal_shards = rank, world_size, equal_shards
        self.epoch = 0  # advanced by each full pass, so each epoch gets its own order

    def _shard_size(self) -> int:
        n = len(self.labels)
        if self.equal_shards:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        return math.ceil(self._shard_size() / self.batch_size)

    def _order(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size][: self._shard_size()].to(self.images.device)

    def __iter__(self):
        order = self._order()
        self.epoch += 1
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.images.index_select(0, index), self.labels.index_select(0, index)


class GroupedBatches:
    """The batches of ``batches`` served ``size`` at a time, as lists (the last list may be shorter).

    For a model that takes several optimizer steps per Lightning step (``FusedMLPs``): Lightning's
    own per-step cost is then paid once per group. The batches and their order are unchanged.
    """

    def __init__(self, batches, size: int) -> None:
        if size < 1:
            raise ValueError(f"batches per step must be positive, got {size}")
        self.batches, self.size = batches, size

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.size)

    def __iter__(self):
        group = []
        for batch in self.batches:
            group.append(batch)
            if len(group) == self.size:
                yield group
                group = []
        if group:
            yield group


class SignMNISTDataModule(LightningDataModule):
    """The Sign-MNIST train/validation/test splits of the reference study.

    The validation part is a stratified ``val_fraction`` of the train CSV (1/6 with seed 22:
    22,879 train and 4,576 validation rows); the test CSV (7,172 rows) is the test set.
    Images are served as float32 pixel values 0-255 (the model normalises them) and labels as
    int64. The uint8 arrays are available through :attr:`arrays` for non-Lightning code. With
    ``augment``, every training image gets its own random affine and brightness/contrast change
    each epoch (``datamodules.augment``); validation and test batches are served as they are.
    Validation and test go in batches of ``eval_batch_size`` rows: the batch size changes no
    evaluated number (up to float rounding in the loss mean), only the per-batch overhead.
    With ``batches_per_step`` > 1 the training loader yields lists of that many consecutive
    batches (:class:`GroupedBatches`), for models that train on each in turn within one
    Lightning step (``FusedMLPs``); the batches themselves are the same.
    """

    letters = LETTERS

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        batch_size: int = 32,
        val_fraction: float = MLP_VAL_FRACTION,
        seed: int = REFERENCE_SEED,
        num_classes: int = 25,
        limit_rows: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        augment: AugmentConfig | None = None,
        eval_batch_size: int = 1024,
        batches_per_step: int = 1,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise DataError(f"batch sizes must be positive, got {batch_size} and {eval_batch_size}")
        if batches_per_step < 1:
            raise DataError(f"batches per step must be positive, got {batches_per_step}")
        self.save_hyperparameters(ignore=["augment"])  # a dataclass is no hyperparameter; as_dict() is
        # Training batches only: validation and test images are never altered.
        self.augment = augment if augment is not None and not augment.is_identity else None
        self.arrays: SplitArrays | None = None
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_classes(self) -> int:
        # Labels run 0-24 with 9 (J) empty: 25 outputs, as the reference's final Dense(25).
        return self.hparams.num_classes

    def prepare_data(self) -> None:
        # Runs on one process only: parse the CSVs once so that every rank's setup() hits the cache.
        for split in ("train", "test"):
            load_split(self.hparams.data_dir, split, self.hparams.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is not None:
            return
        arrays = load_splits(
            self.hparams.data_dir,
            val_fraction=self.hparams.val_fraction,
            seed=self.hparams.seed,
            cache_dir=self.hparams.cache_dir,
            limit_rows=self.hparams.limit_rows,
        )
        for part in ("train", "val", "test"):
            labels = getattr(arrays, f"{part}_labels")
            if labels.size and int(labels.max()) >= self.num_classes:
                raise DataError(
                    f"{part} labels reach {int(labels.max())} ({LETTERS[int(labels.max())]}), "
                    f"but the model has {self.num_classes} outputs (labels 0-{self.num_classes - 1})"
                )
        self.arrays = arrays

    @property
    def train_images(self) -> np.ndarray:
        """uint8 [N, 784] training images (for adapting the model's normalisation)."""
        if self.arrays is None:
            self.setup("fit")
        return self.arrays.train_images

    # Lightning attaches the Trainer as ``self.trainer`` (None when the DataModule is used on its
    # own): it says where the batches go and which shard of each epoch this process serves.

    def _device(self) -> torch.device:
        """The device of this process's model (the strategy's root device), so that the tensors
        sit there before the first step; the CPU without a Trainer."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _rank_and_world(self) -> tuple[int, int]:
        """(global rank, world size): each rank trains on its own shard of every epoch."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _part_tensors(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        device = self._device()
        cached = self._tensors.get(part)
        if cached is None or cached[0].device != device:
            if self.arrays is None:
                self.setup()
            images = torch.from_numpy(getattr(self.arrays, f"{part}_images")).to(device)
            labels = torch.from_numpy(getattr(self.arrays, f"{part}_labels")).to(device)
            cached = (images.float(), labels.long())
            self._tensors[part] = cached
        return cached

    def _batches(self, part: str, shuffle: bool, batch_size: int | None = None) -> InMemoryBatches:
        rank, world_size = self._rank_and_world()
        images, labels = self._part_tensors(part)
        return InMemoryBatches(
            images,
            labels,
            batch_size or self.hparams.batch_size,
            shuffle=shuffle,
            seed=self.hparams.seed,
            rank=rank,
            world_size=world_size,
            equal_shards=shuffle,
        )

    def train_dataloader(self) -> InMemoryBatches | AugmentedBatches | GroupedBatches:
        batches = self._batches("train", shuffle=True)
        if self.augment is not None:
            rank, _ = self._rank_and_world()
            batches = AugmentedBatches(batches, BatchAugmenter(self.augment), seed=self.hparams.seed, rank=rank)
        if self.hparams.batches_per_step > 1:
            batches = GroupedBatches(batches, self.hparams.batches_per_step)
        return batches

    def val_dataloader(self) -> InMemoryBatches:
        return self._batches("val", shuffle=False, batch_size=self.hparams.eval_batch_size)

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", shuffle=False, batch_size=self.hparams.eval_batch_size)
