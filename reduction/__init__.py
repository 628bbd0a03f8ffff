"""The unsupervised half of the study: PCA, random forests, 2-D maps, clustering.

Each estimator runs on RAPIDS cuML (GPU) or scikit-learn (CPU), as ``reduction.backend``
decides; the ``*_study`` modules are the procedures behind ``scripts/``.
"""

from reduction.backend import BACKEND_CHOICES, Backend, BackendError, select_backend
from reduction.clustering import GaussianMixture, KMeans, silhouette
from reduction.embedding import LLE, MDS, TSNE
from reduction.forest import ForestGridSearch, RandomForest
from reduction.pca import PCA

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
]
