"""Sign-MNIST data: CSV loading with validation and caching, the study's splits, the DataModule."""

from datamodules.csv_io import DataError, default_data_dir, find_split_file, load_split
from datamodules.splits import (
    LETTERS,
    MLP_VAL_FRACTION,
    PRESENT_LABELS,
    REDUCTION_VAL_FRACTION,
    REFERENCE_SEED,
    SplitArrays,
    letter,
    load_splits,
    reference_sample,
    stratified_split,
)


def __getattr__(name):
    # The DataModule pulls in Lightning (seconds of import time); scripts of the unsupervised
    # part only need the arrays, so it is imported on first use.
    if name in ("GroupedBatches", "InMemoryBatches", "SignMNISTDataModule"):
        from datamodules import sign_mnist_datamodule

        return getattr(sign_mnist_datamodule, name)
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")


__all__ = [
    "DataError",
    "GroupedBatches",
    "InMemoryBatches",
    "LETTERS",
    "MLP_VAL_FRACTION",
    "PRESENT_LABELS",
    "REDUCTION_VAL_FRACTION",
    "REFERENCE_SEED",
    "SignMNISTDataModule",
    "SplitArrays",
    "default_data_dir",
    "find_split_file",
    "letter",
    "load_split",
    "load_splits",
    "reference_sample",
    "stratified_split",
]
