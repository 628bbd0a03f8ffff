"""A random-forest classifier on cuML (GPU) or scikit-learn (CPU)."""

from __future__ import annotations

import numbers
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from reduction.backend import accepted, implementation, select_backend, to_numpy

# scikit-learn's estimator checks on backend="sklearn" (see reduction/estimators/pca.py):
# 10 single-threaded trees instead of 100 keep them fast; every check passes.
CHECK_PARAMS: dict[str, dict] = {"RandomForest": {"n_estimators": 10, "n_jobs": 1}}
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {"RandomForest": {}}

# What "no depth limit" (max_depth=None) is given to cuML as: the int32 maximum, which is what
# cuML 26.04 and later put in its place when it accepts None itself (randomforest_common.pyx,
# ``_fit_forest``). Older cuML compares max_depth with 0 and fails on None, and its default was
# 16, not unlimited; every version accepts this integer, and it means no limit on all of them.
CUML_NO_DEPTH_LIMIT = 2**31 - 1


def positive_int(value, name: str, none_means: str | None = None):
    """``value`` as a Python int >= 1 (a NumPy integer too), or None where ``none_means`` says
    what None means; ValueError otherwise (bools, floats and strings included)."""
    if value is None and none_means is not None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = f"None ({none_means}) or a positive integer" if none_means else "a positive integer"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


class RandomForest(ClassifierMixin, BaseEstimator):
    """A random-forest classifier on cuML (GPU) or scikit-learn (CPU), a scikit-learn classifier.

    Parameters mean what they mean in scikit-learn, on both backends: ``max_depth=None`` is no
    depth limit (cuML's own default was 16 before 26.08; here it is given
    :data:`CUML_NO_DEPTH_LIMIT`, which cuML itself uses for None). ``n_estimators`` and
    ``max_depth`` are checked and made Python ints once, here (cuML 26.04+ rejects a NumPy
    integer such as ``GridSearchCV`` takes from ``np.arange``). ``n_jobs`` goes only to a forest
    whose class takes it (scikit-learn's; cuML parallelises over CUDA streams and takes none).
    ``backend`` is "auto", "sklearn", "cuml" or "torch" (which has no forest: cuML where it can
    run, else scikit-learn). Features are passed as float32 and, on cuML,
    labels as consecutive int32 codes (what cuML trains on); predictions are decoded back to
    the original labels. ``score`` is the accuracy.

    Fitted attributes: ``estimator_`` (the fitted cuML or scikit-learn forest), ``params_`` (the
    keyword arguments it was built with), ``place_`` (where it ran: "cuml" or "sklearn"),
    ``classes_``, ``n_features_in_``, ``fit_seconds_`` (wall time of the backend's ``fit``).
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
        n_estimators = positive_int(self.n_estimators, "n_estimators")
        max_depth = positive_int(self.max_depth, "max_depth", none_means="no limit")
        factory, self.place_ = implementation("random_forest", select_backend(self.backend))
        self.classes_, codes = np.unique(y, return_inverse=True)
        if max_depth is None and self._encoded:
            max_depth = CUML_NO_DEPTH_LIMIT
        self.params_ = {"n_estimators": n_estimators, "max_depth": max_depth, "random_state": self.random_state,
                        **accepted(factory, n_jobs=self.n_jobs)}
        self.estimator_ = factory(**self.params_)
        # cuML trains on int32 codes; scikit-learn keeps the labels themselves, so there
        # ``estimator_`` is an ordinary forest.
        target = codes.astype(np.int32) if self._encoded else y
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
