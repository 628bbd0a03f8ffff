"""cuml.cluster.KMeans.

Signature, checks and fitted attributes from cuML 26.10, python/cuml/cuml/cluster/kmeans.pyx
(rapidsai/cuml @ 342457bc; the constructor is the same in v26.08.00). Computed with
scikit-learn's Lloyd K-Means.

``transform``: cuML computes it with its K-Means metric, ``DistanceType.L2Expanded``, i.e.
squared Euclidean distances, in every release up to 26.10; NVIDIA/cuml#8536 (fixed by #8539,
after 26.10) makes it return plain distances, as scikit-learn does. :data:`TRANSFORM_SQUARED`
picks which of the two the stand-in imitates (tests switch it).
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cuml.internals.base import Base
from cuml.internals.validation import check_features, check_random_seed

TRANSFORM_SQUARED = True  # cuML <= 26.10; False: after NVIDIA/cuml#8536

_INITS = {"scalable-k-means++": "k-means++", "k-means||": "k-means++", "k-means++": "k-means++", "random": "random"}


class KMeans(Base):
    @classmethod
    def _get_param_names(cls):
        return [
            *super()._get_param_names(),
            "n_init",
            "oversampling_factor",
            "max_samples_per_batch",
            "device_buffer_samples",
            "init_size",
            "init",
            "max_iter",
            "n_clusters",
            "random_state",
            "tol",
        ]

    def __init__(
        self,
        *,
        n_clusters=8,
        max_iter=300,
        tol=1e-4,
        verbose=False,
        random_state=None,
        init="scalable-k-means++",
        n_init="auto",
        oversampling_factor=2.0,
        max_samples_per_batch=1 << 15,
        device_buffer_samples=0,
        init_size=0,
        output_type=None,
    ):
        super().__init__(verbose=verbose, output_type=output_type)
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.init = init
        self.n_init = n_init
        self.oversampling_factor = oversampling_factor
        self.max_samples_per_batch = max_samples_per_batch
        self.device_buffer_samples = device_buffer_samples
        self.init_size = init_size

    def fit(self, X, y=None, sample_weight=None) -> "KMeans":
        from sklearn.cluster import KMeans as SkKMeans

        if not isinstance(self.n_clusters, Integral) or self.n_clusters <= 0:  # _validate_fit_params
            raise ValueError(f"n_clusters={self.n_clusters} should be a positive integer.")
        if int(self.device_buffer_samples) < 0:
            raise ValueError(f"device_buffer_samples must be >= 0, got {int(self.device_buffer_samples)}.")
        X = check_features(X, "KMeans.fit")
        if len(X) < self.n_clusters:  # _validate_fit_row_constraints
            raise ValueError(f"n_samples={len(X)} should be >= n_clusters={self.n_clusters}.")
        seed = check_random_seed(self.random_state)
        if isinstance(self.init, str):
            if self.init not in _INITS:
                raise ValueError(f"the stand-in knows init {sorted(_INITS)}, got {self.init!r}")
            init = _INITS[self.init]
            n_init = (1 if init == "k-means++" else 10) if self.n_init == "auto" else self.n_init
        else:
            init = np.asarray(self.init, dtype=X.dtype)
            n_init = 1 if self.n_init == "auto" else self.n_init
        model = SkKMeans(n_clusters=self.n_clusters, init=init, n_init=n_init, max_iter=self.max_iter, tol=self.tol,
                         random_state=seed).fit(X, sample_weight=sample_weight)
        self.n_features_in_ = X.shape[1]
        self.cluster_centers_ = model.cluster_centers_.astype(X.dtype)
        self.labels_ = model.labels_.astype(np.int32)
        self.inertia_ = float(model.inertia_)
        self.n_iter_ = int(model.n_iter_)
        self._model = model
        return self

    def _rows(self, X, who):
        check_is_fitted(self)
        return check_features(X, who, n_features=self.n_features_in_)

    def fit_predict(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).labels_

    def predict(self, X):
        return self._model.predict(self._rows(X, "KMeans.predict")).astype(np.int32)

    def transform(self, X):
        distances = self._model.transform(self._rows(X, "KMeans.transform")).astype(np.float32)
        return distances**2 if TRANSFORM_SQUARED else distances

    def score(self, X, y=None, sample_weight=None):
        return float(self._model.score(self._rows(X, "KMeans.score"), sample_weight=sample_weight))

    def fit_transform(self, X, y=None, sample_weight=None):
        self.fit(X, sample_weight=sample_weight)
        return self.transform(X)
