"""The reference study's splits of the Sign-MNIST arrays, shared by the MLP and `reduction`."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit

from datamodules.csv_io import DataError, load_split

# The reference holds out 1/6 of the train CSV for the MLP and 20% for the unsupervised part,
# both with StratifiedShuffleSplit(n_splits=1, random_state=22).
MLP_VAL_FRACTION = 1 / 6
REDUCTION_VAL_FRACTION = 0.2
REFERENCE_SEED = 22

LETTERS = tuple(chr(ord("A") + k) for k in range(26))
# Labels present in the release: 0-24 without 9 (J needs motion; Z=25 too).
PRESENT_LABELS = tuple(k for k in range(25) if k != 9)


def letter(label: int) -> str:
    return LETTERS[int(label)]


@dataclass(frozen=True)
class SplitArrays:
    """uint8 images [N, 784] and labels [N] for the train, validation and test parts."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    train_index: np.ndarray  # row positions in the train CSV, for reproducing `sample()` calls
    val_index: np.ndarray


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices, exactly as the reference's StratifiedShuffleSplit."""
    if not 0 < val_fraction < 1:
        raise DataError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    try:
        train_index, val_index = next(splitter.split(np.zeros(len(labels)), labels))
    except ValueError as exc:  # e.g. a class with a single row cannot be stratified
        raise DataError(f"cannot make a stratified split: {exc}") from None
    return train_index, val_index


def load_splits(
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = MLP_VAL_FRACTION,
    seed: int = REFERENCE_SEED,
    cache_dir: str | os.PathLike | None = None,
    limit_rows: int | None = None,
) -> SplitArrays:
    """Load both CSVs and split the train CSV into train and validation parts.

    ``limit_rows`` keeps only the first rows of each CSV (for quick runs and tests).
    """
    train_images, train_labels = load_split(data_dir, "train", cache_dir)
    test_images, test_labels = load_split(data_dir, "test", cache_dir)
    if limit_rows is not None:
        if limit_rows < 1:
            raise DataError(f"limit_rows must be positive, got {limit_rows}")
        train_images, train_labels = train_images[:limit_rows], train_labels[:limit_rows]
        test_images, test_labels = test_images[:limit_rows], test_labels[:limit_rows]
    train_index, val_index = stratified_split(train_labels, val_fraction, seed)
    return SplitArrays(
        train_images=train_images[train_index],
        train_labels=train_labels[train_index],
        val_images=train_images[val_index],
        val_labels=train_labels[val_index],
        test_images=test_images,
        test_labels=test_labels,
        train_index=train_index,
        val_index=val_index,
    )


def reference_sample(n_rows: int, n: int, seed: int = REFERENCE_SEED) -> np.ndarray:
    """Row positions that pandas' ``DataFrame.sample(n=n, random_state=seed)`` picks.

    The reference draws its image samples and sub-samples with pandas; calling pandas here
    (instead of imitating its RNG use) keeps the same rows if pandas ever changes how it draws.
    """
    if not 0 < n <= n_rows:
        raise DataError(f"cannot sample {n} rows from {n_rows}")
    import pandas as pd

    return pd.RangeIndex(n_rows).to_series().sample(n=n, random_state=seed).to_numpy()
