"""The unsupervised half of the study: PCA, random forests, 2-D maps, clustering.

* :mod:`reduction.backend`: where each algorithm runs (cuML or torch on a GPU, scikit-learn or torch on the CPU).
* :mod:`reduction.torch_places`: the torch SMACOF and t-SNE through TorchDR, for any torch device.
* :mod:`reduction.estimators`: the seven estimators, as scikit-learn estimators on either backend.
* :mod:`reduction.forest_grid`: the resumable random-forest grid search.
* :mod:`reduction.cluster_sweeps`: K-Means and Gaussian-mixture sweeps over k, k rules, purity.
* :mod:`reduction.scores`: classification metrics, trustworthiness and k-NN accuracy of maps.
* :mod:`reduction.studies`: the three studies behind ``scripts/`` (pca_forest, embed, cluster).

The names below are loaded on first use, so that ``import reduction.backend`` stays light (it
imports neither scikit-learn nor SciPy; see :func:`reduction.backend.enable_scipy_array_api`).
"""

import importlib

_WHERE = {
    "BACKEND_CHOICES": "reduction.backend",
    "Backend": "reduction.backend",
    "BackendError": "reduction.backend",
    "select_backend": "reduction.backend",
    "ForestGridSearch": "reduction.forest_grid",
    "GaussianMixture": "reduction.estimators",
    "KMeans": "reduction.estimators",
    "LLE": "reduction.estimators",
    "MDS": "reduction.estimators",
    "PCA": "reduction.estimators",
    "RandomForest": "reduction.estimators",
    "TSNE": "reduction.estimators",
    "silhouette": "reduction.estimators.clustering",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'reduction' has no attribute {name!r}")


__all__ = sorted(_WHERE)
