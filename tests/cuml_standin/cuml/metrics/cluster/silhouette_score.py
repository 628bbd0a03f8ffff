"""cuml.metrics.cluster.silhouette_score (``cython_silhouette_score``).

Signature from cuML 26.10, python/cuml/cuml/metrics/cluster/silhouette_score.pyx (rapidsai/cuml
@ 342457bc; v26.08.00 still had ``convert_dtype="deprecated"`` after ``chunksize``). Computed
with scikit-learn's silhouette_score.
"""

from __future__ import annotations

import numpy as np

from cuml.internals.validation import check_features


def cython_silhouette_score(X, labels, metric="euclidean", chunksize=None):
    from sklearn.metrics import silhouette_score

    X = check_features(X, "silhouette_score")
    labels = np.asarray(labels)
    if labels.shape != (len(X),):
        raise ValueError(f"labels must be 1-D with one label per row of X, got shape {labels.shape}")
    return float(silhouette_score(X, labels, metric=metric))
