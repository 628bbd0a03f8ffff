"""Sign-MNIST data: CSV loading with validation and caching, the study's splits, the DataModule."""

from datamodules.csv_io import DataError, default_data_dir, find_split_file, load_split
from datamodules.sign_mnist_datamodule import InMemoryBatches, SignMNISTDataModule
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

__all__ = [
    "DataError",
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
