"""The unsupervised half of the study: PCA, random forests, 2-D maps, clustering.

The seven estimators (:mod:`reduction.estimators`) are scikit-learn estimators that run on RAPIDS
cuML (GPU) or scikit-learn (CPU), as ``reduction.backend`` decides; the ``*_study`` modules are
the procedures behind ``scripts/``.
"""

from reduction.backend import BACKEND_CHOICES, Backend, BackendError, select_backend
from reduction.estimators import LLE, MDS, PCA, TSNE, GaussianMixture, KMeans, RandomForest
from reduction.estimators.clustering import silhouette
from reduction.forest import ForestGridSearch

__all__ = [
    "BACKEND_CHOICES",
    "Backend",
    "BackendError",
    "ForestGridSearch",
    "GaussianMixture",
    "KMeans",
    "LLE",
    "MDS",
    "PCA",
    "RandomForest",
    "TSNE",
    "select_backend",
    "silhouette",
]
