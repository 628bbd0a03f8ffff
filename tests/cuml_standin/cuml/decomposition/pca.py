"""cuml.decomposition.PCA.

Signature, fitted attributes and checks from cuML 26.10, python/cuml/cuml/decomposition/pca.pyx
(rapidsai/cuml @ 342457bc; the same from v26.04.00 on; v25.02.00-v26.02.00 had a ``handle``
as well). Keyword-only, no ``random_state``, no ``**kwargs`` in every one of them, so a
``random_state`` is a TypeError. Computed with scikit-learn's exact PCA.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cuml.internals.base import Base
from cuml.internals.validation import check_features

SVD_SOLVERS = ("auto", "full", "jacobi")


class PCA(Base):
    def __init__(
        self,
        *,
        copy=True,
        iterated_power=15,
        n_components=None,
        svd_solver="auto",
        tol=1e-7,
        verbose=False,
        whiten=False,
        output_type=None,
    ):
        super().__init__(verbose=verbose, output_type=output_type)
        self.copy = copy
        self.iterated_power = iterated_power
        self.n_components = n_components
        self.svd_solver = svd_solver
        self.tol = tol
        self.whiten = whiten

    @classmethod
    def _get_param_names(cls):
        return super()._get_param_names() + ["copy", "iterated_power", "n_components", "svd_solver", "tol", "whiten"]

    def fit(self, X, y=None) -> "PCA":
        from sklearn.decomposition import PCA as SkPCA

        X = check_features(X, "PCA.fit", ensure_min_samples=2, ensure_min_features=2)
        n_rows, n_cols = X.shape
        self.n_samples_ = n_rows
        self.n_features_in_ = n_cols
        if self.n_components is None:
            self.n_components_ = min(n_rows, n_cols)
        elif self.n_components > n_cols:
            raise ValueError(f"`n_components` ({self.n_components}) must be <= than the number of features in X ({n_cols})")
        else:
            self.n_components_ = self.n_components
        if self.svd_solver not in SVD_SOLVERS:
            raise ValueError(f"Expected `svd_solver` to be one of ['auto', 'full', 'jacobi'], got {self.svd_solver!r}")
        model = SkPCA(n_components=self.n_components_, svd_solver="full", whiten=self.whiten).fit(X)
        self.components_ = model.components_.astype(np.float32)
        self.explained_variance_ = model.explained_variance_.astype(np.float32)
        self.explained_variance_ratio_ = model.explained_variance_ratio_.astype(np.float32)
        self.singular_values_ = model.singular_values_.astype(np.float32)
        self.mean_ = model.mean_.astype(np.float32)
        self.noise_variance_ = float(model.noise_variance_)
        self._model = model
        return self

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def transform(self, X):
        check_is_fitted(self)
        X = check_features(X, "PCA.transform", n_features=self.n_features_in_)
        return self._model.transform(X).astype(np.float32)

    def inverse_transform(self, X, *, return_sparse=False, sparse_tol=1e-10):
        check_is_fitted(self)
        X = check_features(X, "PCA.inverse_transform")
        if X.shape[1] != self.n_components_:
            raise ValueError(
                f"X has {X.shape[1]} columns, but PCA.inverse_transform expects {self.n_components_} "
                "(one per fitted component)."
            )
        return self._model.inverse_transform(X).astype(np.float32)
