"""The study's seven estimators, as scikit-learn estimators on cuML, torch or scikit-learn.

Each one stores its parameters in ``__init__`` (``backend``: "auto", "sklearn", "cuml" or "torch"
is one of them), validates its input as scikit-learn does, returns itself from ``fit`` and keeps
the fitted object of its place in ``estimator_`` and where it ran in ``place_`` ("cuml",
"torch-cuda", "sklearn-cuda", "torch-cpu", "sklearn-cpu" or "sklearn", see :mod:`reduction.backend`). So ``clone``, ``Pipeline``, ``GridSearchCV`` and
``cross_val_score`` work with them, and scikit-learn's ``check_estimator`` passes on
backend="sklearn" with the parameters in :data:`CHECK_PARAMS`, except for the few checks listed,
each with its reason, in :data:`EXPECTED_FAILED_CHECKS` (both are kept next to each estimator).
"""

from reduction.estimators import clustering as _clustering
from reduction.estimators import embedding as _embedding
from reduction.estimators import forest as _forest
from reduction.estimators import pca as _pca
from reduction.estimators.clustering import GaussianMixture, KMeans
from reduction.estimators.embedding import LLE, MDS, TSNE
from reduction.estimators.forest import RandomForest
from reduction.estimators.pca import PCA

ESTIMATORS = (PCA, RandomForest, KMeans, GaussianMixture, TSNE, LLE, MDS)

# {class name: parameters for scikit-learn's estimator checks, besides backend="sklearn"}
CHECK_PARAMS: dict[str, dict] = {}
# {class name: {check name: why it cannot pass}}
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}
for _module in (_pca, _forest, _clustering, _embedding):
    CHECK_PARAMS.update(_module.CHECK_PARAMS)
    EXPECTED_FAILED_CHECKS.update(_module.EXPECTED_FAILED_CHECKS)


def check_instance(estimator_class):
    """An instance of ``estimator_class`` configured for scikit-learn's estimator checks."""
    return estimator_class(backend="sklearn", **CHECK_PARAMS[estimator_class.__name__])


__all__ = [
    "CHECK_PARAMS",
    "ESTIMATORS",
    "EXPECTED_FAILED_CHECKS",
    "GaussianMixture",
    "KMeans",
    "LLE",
    "MDS",
    "PCA",
    "RandomForest",
    "TSNE",
    "check_instance",
]
