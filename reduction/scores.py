"""Scores of the studies' results: classification metrics, and how good a 2-D map is.

* :func:`classification_metrics`: accuracy and weighted precision, recall and F1.
* :func:`trustworthiness_on_sample`: are the map's neighbours neighbours in pixel space?
* :func:`knn_accuracy`: how well do the letters separate in 2-D?
* :func:`sample_positions`: the row sample :func:`trustworthiness_on_sample` scores.
"""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """Accuracy and weighted precision, recall and F1 (classes absent from both count as 0)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="weighted", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def sample_positions(n_rows: int, n: int, seed: int) -> np.ndarray:
    """``n`` sorted row positions out of ``n_rows`` (all of them when n >= n_rows)."""
    if n >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=n, replace=False))


def trustworthiness_on_sample(X, embedding, n_neighbors: int = 5, n_sample: int = 2000, seed: int = 22) -> float:
    """scikit-learn's trustworthiness of ``embedding`` on ``n_sample`` of its rows.

    1 means every map neighbour is a pixel-space neighbour; the neighbourhoods are those within
    the sample (all pairwise distances of the sample, so the cost is n_sample^2).
    """
    from sklearn.manifold import trustworthiness

    rows = sample_positions(len(X), n_sample, seed)
    return float(
        trustworthiness(np.asarray(X, dtype=np.float64)[rows], np.asarray(embedding)[rows], n_neighbors=n_neighbors)
    )


def knn_accuracy(embedding, labels, n_neighbors: int = 5, n_folds: int = 5, seed: int = 22) -> float | None:
    """Stratified k-fold cross-validated accuracy of a k-NN classifier on the 2-D points.

    How well the letters separate in the map. None when a class has too few rows for two folds.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    counts = np.unique(labels, return_counts=True)[1]
    folds = min(n_folds, int(counts.min())) if len(counts) > 1 else 0
    if folds < 2:
        return None
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=n_neighbors), np.asarray(embedding), labels, cv=cv)
    return float(scores.mean())
