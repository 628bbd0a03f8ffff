"""Figure helpers shared by the studies and the MLP sweep (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # scripts run without a display; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(
    images: np.ndarray,
    path: str | Path,
    titles: list[str] | None = None,
    ncols: int = 10,
    suptitle: str | None = None,
    row_labels: list[str] | None = None,
) -> Path:
    """Save 28x28 images (rows of 784 values, any scale) as a grid of gray thumbnails."""
    images = np.asarray(images, dtype=float).reshape(-1, 28, 28)
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.1 * ncols, 1.25 * nrows + 0.4), squeeze=False)
    for position, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if position < len(images):
            ax.imshow(images[position], cmap="gray", vmin=0, vmax=255)
            if titles is not None:
                ax.set_title(titles[position], fontsize=8)
        else:
            ax.axis("off")
        if row_labels is not None and position % ncols == 0 and position // ncols < len(row_labels):
            ax.set_ylabel(row_labels[position // ncols], fontsize=8, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return save(fig, path)


def save(fig, path: str | Path) -> Path:
    """Save ``fig`` as ``path`` (PNG), atomically: an interrupted save leaves no half-drawn file."""
    from labkit.files import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
