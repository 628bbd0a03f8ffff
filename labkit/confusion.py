"""The confusion matrix of a classifier as a figure, one way for every classifier of the study
(the MLP's TensorBoard picture, the random forests' PNG files).

Drawn on a ``matplotlib.figure.Figure`` (rendered by Agg), never through pyplot's global state,
so that it works headless and leaves the caller's matplotlib backend alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def confusion_counts(labels, predictions, classes) -> np.ndarray:
    """``counts[i, j]``: the rows of class ``classes[i]`` predicted as ``classes[j]``."""
    position = {int(label): k for k, label in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(counts, ([position[int(t)] for t in labels], [position[int(p)] for p in predictions]), 1)
    return counts


def confusion_figure(labels, predictions, name: Callable[[int], str] = str, title: str = "confusion matrix"):
    """The confusion matrix as a figure: colour is the share of each true class (its recall on
    the diagonal), numbers are counts.

    Only the classes that occur in ``labels`` or ``predictions`` get a row and a column, named
    by ``name`` (e.g. ``datamodules.letter``); the title ends with the accuracy and the count.
    """
    from matplotlib.figure import Figure

    labels, predictions = np.asarray(labels).astype(np.int64), np.asarray(predictions).astype(np.int64)
    classes = sorted(set(labels.tolist()) | set(predictions.tolist()))
    counts = confusion_counts(labels, predictions, classes)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = [name(label) for label in classes]
    accuracy = float(np.trace(counts)) / max(int(counts.sum()), 1)

    size = max(4.0, 0.34 * len(classes) + 1.5)
    figure = Figure(figsize=(size + 1, size), dpi=100)
    ax = figure.add_subplot()
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(len(classes)), names)
    ax.set_yticks(range(len(classes)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {accuracy:.3f}, {int(counts.sum())} rows)", fontsize=9)
    for i, j in zip(*np.nonzero(counts)):
        colour = "white" if shares[i, j] > 0.5 else "black"
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=6, color=colour)
    figure.tight_layout()
    return figure
