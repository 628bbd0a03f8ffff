"""cuml.ensemble.RandomForestClassifier.

Signature from cuML 26.10, python/cuml/cuml/ensemble/randomforestclassifier.py (rapidsai/cuml @
342457bc; the same in v26.08.00; up to v26.06.00 the class took ``**kwargs`` for its base,
whose ``max_depth`` default was 16, a deprecation placeholder in 26.06). Checks at fit from randomforest_common.pyx: a
``max_depth`` that is not a Python int (a NumPy integer included) is a ValueError there from
26.04 on; None means unlimited (the int32 maximum) from 26.04 on, and before it failed.
Labels: the project hands cuML int32 codes 0..k-1, which every cuML accepts (25.10 refused
others; 26.x would encode them itself); the stand-in holds the project to that.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cuml.ensemble.randomforest_common import BaseRandomForestModel
from cuml.internals.validation import check_features


class RandomForestClassifier(BaseRandomForestModel):
    @classmethod
    def _get_param_names(cls):
        return [*super()._get_param_names(), "class_weight"]

    def __init__(
        self,
        *,
        n_estimators=100,
        split_criterion="gini",
        bootstrap=True,
        max_samples=1.0,
        max_depth=None,
        max_leaves=-1,
        max_features="sqrt",
        n_bins=128,
        min_samples_leaf=1,
        min_samples_split=2,
        min_impurity_decrease=0.0,
        max_batch_size=4096,
        random_state=None,
        n_streams=4,
        oob_score=False,
        class_weight=None,
        verbose=False,
        output_type=None,
    ):
        super().__init__(
            split_criterion=split_criterion,
            n_estimators=n_estimators,
            bootstrap=bootstrap,
            max_samples=max_samples,
            max_depth=max_depth,
            max_leaves=max_leaves,
            max_features=max_features,
            n_bins=n_bins,
            min_samples_leaf=min_samples_leaf,
            min_samples_split=min_samples_split,
            min_impurity_decrease=min_impurity_decrease,
            max_batch_size=max_batch_size,
            random_state=random_state,
            n_streams=n_streams,
            oob_score=oob_score,
            verbose=verbose,
            output_type=output_type,
        )
        self.class_weight = class_weight

    def fit(self, X, y, sample_weight=None) -> "RandomForestClassifier":
        X = check_features(X, "RandomForestClassifier.fit")
        y = np.asarray(y)
        if y.dtype != np.int32:
            raise TypeError(f"cuML stand-in RandomForestClassifier.fit: labels must be int32 codes, got {y.dtype}")
        if y.shape != (len(X),):
            raise ValueError(f"y must be 1-D with one label per row of X, got shape {y.shape}")
        classes = np.unique(y)
        if not np.array_equal(classes, np.arange(len(classes))):
            raise ValueError("cuML stand-in RandomForestClassifier.fit: labels must be the codes 0..k-1, "
                             f"got {classes[:10].tolist()}...")
        self.classes_ = classes
        self.n_classes_ = len(classes)
        self.n_features_in_ = X.shape[1]
        self.n_outputs_ = 1
        forest = self._sklearn_forest()  # cuML's parameter checks happen at fit, as in cuML
        forest.set_params(class_weight=self.class_weight)
        self._forest = forest.fit(X, y, sample_weight=sample_weight)
        return self

    def predict(self, X, *, threshold=0.5, layout="depth_first", default_chunk_size=None, align_bytes=None):
        check_is_fitted(self)
        X = check_features(X, "RandomForestClassifier.predict", n_features=self.n_features_in_)
        return self.classes_[np.argmax(self._forest.predict_proba(X), axis=1)]

    def predict_proba(self, X, *, layout="depth_first", default_chunk_size=None, align_bytes=None):
        check_is_fitted(self)
        X = check_features(X, "RandomForestClassifier.predict_proba", n_features=self.n_features_in_)
        return self._forest.predict_proba(X).astype(np.float32)

    @property
    def feature_importances_(self):
        check_is_fitted(self)
        return self._forest.feature_importances_.astype(np.float32)
