"""PCA: the estimator lives in :mod:`reduction.estimators.pca`; re-exported here for importers."""

from reduction.estimators.pca import PCA

__all__ = ["PCA"]
