"""A random-forest classifier on cuML (GPU) or scikit-learn (CPU)."""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from reduction.backend import implementation, select_backend, to_numpy

# scikit-learn's estimator checks on backend="sklearn" (see reduction/estimators/pca.py):
# 10 single-threaded trees instead of 100 keep them fast; every check passes.
CHECK_PARAMS: dict[str, dict] = {"RandomForest": {"n_estimators": 10, "n_jobs": 1}}
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {"RandomForest": {}}


class RandomForest(ClassifierMixin, BaseEstimator):
    """A random-forest classifier on cuML (GPU) or scikit-learn (CPU), a scikit-learn classifier.

    Parameters mean what they mean in scikit-learn; ``n_jobs`` is used only by scikit-learn (cuML
    parallelises over CUDA streams and takes none). ``backend`` is "auto", "sklearn" or "cuml".
    Features are passed as float32 and, on cuML, labels as consecutive int32 codes (what cuML
    trains on); predictions are decoded back to the original labels. ``score`` is the accuracy.

    Fitted attributes: ``estimator_`` (the fitted cuML or scikit-learn forest), ``place_`` (where
    it ran: "cuml" or "sklearn"), ``classes_``, ``n_features_in_``, ``fit_seconds_`` (wall time
    of the backend's ``fit``).
    """

    def __init__(self, n_estimators=100, max_depth=None, backend="auto", random_state=None, n_jobs=-1) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.backend = backend
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X, y) -> "RandomForest":
        X, y = validate_data(self, X, y, dtype=np.float32, order="C")
        check_classification_targets(y)
        factory, self.place_ = implementation("random_forest", select_backend(self.backend))
        self.classes_, codes = np.unique(y, return_inverse=True)
        params = {"n_estimators": int(self.n_estimators), "max_depth": self.max_depth, "random_state": self.random_state}
        # cuML takes no n_jobs and trains on int32 codes; scikit-learn keeps the labels
        # themselves, so there ``estimator_`` is an ordinary forest.
        if self._encoded:
            self.estimator_ = factory(**params)
            target = codes.astype(np.int32)
        else:
            self.estimator_ = factory(**params, n_jobs=self.n_jobs)
            target = y
        start = time.perf_counter()
        self.estimator_.fit(X, target)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    @property
    def _encoded(self) -> bool:
        """Whether the backend's forest works on label codes 0..k-1 (cuML) instead of labels."""
        return self.place_ == "cuml"

    def _features(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float32, order="C", reset=False)

    def predict(self, X) -> np.ndarray:
        X = self._features(X)
        predicted = to_numpy(self.estimator_.predict(X)).ravel()
        return self.classes_[predicted.astype(np.int64)] if self._encoded else predicted

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities [n, len(classes_)], columns in the order of ``classes_``."""
        X = self._features(X)
        # Both backends order the columns by class code, i.e. as np.unique orders the labels.
        return to_numpy(self.estimator_.predict_proba(X))
