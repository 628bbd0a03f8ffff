"""Small synthetic data sets in the Kaggle CSV format, for tests and demonstrations."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from datamodules.csv_io import HEADER, N_PIXELS, SPLIT_FILES
from datamodules.splits import PRESENT_LABELS


def synthetic_arrays(n_rows: int, seed: int = 0, labels=PRESENT_LABELS):
    """uint8 images [n_rows, 784] and labels [n_rows], learnable but not trivially so.

    Each class is a fixed random template blurred with noise, so that classifiers, PCA and
    clustering all find structure; every class occurs (n_rows >= number of labels).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.uint8)
    templates = np.random.default_rng(12345).uniform(40, 215, size=(26, N_PIXELS))
    row_labels = labels[np.arange(n_rows) % len(labels)]
    rng.shuffle(row_labels)
    noise = rng.normal(0, 30, size=(n_rows, N_PIXELS))
    images = np.clip(templates[row_labels] + noise, 0, 255).astype(np.uint8)
    return images, row_labels


def csv_text(images: np.ndarray, labels: np.ndarray) -> str:
    rows = np.column_stack([labels.astype(np.int64), images.astype(np.int64)])
    body = "\n".join(",".join(map(str, row)) for row in rows)
    return ",".join(HEADER) + "\n" + body + "\n"


def write_synthetic_csvs(
    data_dir: str | Path, n_train: int = 600, n_test: int = 240, seed: int = 0, compress: bool = False
) -> dict[str, Path]:
    """Write ``sign_mnist_train.csv`` and ``sign_mnist_test.csv`` (``.gz`` if ``compress``)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for offset, (split, n_rows) in enumerate((("train", n_train), ("test", n_test))):
        text = csv_text(*synthetic_arrays(n_rows, seed + offset))
        path = data_dir / (SPLIT_FILES[split] + (".gz" if compress else ""))
        if compress:
            path.write_bytes(gzip.compress(text.encode(), mtime=0))
        else:
            path.write_text(text)
        paths[split] = path
    return paths
