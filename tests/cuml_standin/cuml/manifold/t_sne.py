"""cuml.manifold.TSNE.

Signature, parameter checks (``_init_params``) and fitted attributes from cuML 26.10,
python/cuml/cuml/manifold/t_sne.pyx (rapidsai/cuml @ 342457bc; the constructor is the same
from v26.02.00 on; ``max_iter`` replaced ``n_iter`` in v25.12.00). Computed with scikit-learn's
Barnes-Hut t-SNE, with cuML's learning rate (no factor 4 in its gradient) divided by 4 and its
"adaptive" defaults resolved as cuML resolves them.
"""

from __future__ import annotations

import warnings

import numpy as np

from cuml.internals.base import Base
from cuml.internals.validation import check_features, check_random_seed

_SUPPORTED_METRICS = ("l2", "euclidean", "sqeuclidean", "cityblock", "l1", "manhattan", "minkowski",
                      "chebyshev", "cosine", "correlation")
_SUPPORTED_METHODS = ("barnes_hut", "exact", "fft")
_SUPPORTED_INITS = ("random", "pca")


def _check_numeric(estimator, name, gt=None, ge=None, lt=None, le=None):
    value = getattr(estimator, name)
    cls_name = type(estimator).__name__
    if gt is not None and value <= gt:
        raise ValueError(f"{cls_name} requires `{name} > {gt}`, got {value}")
    if ge is not None and value < ge:
        raise ValueError(f"{cls_name} requires `{name} >= {ge}`, got {value}")
    if lt is not None and value >= lt:
        raise ValueError(f"{cls_name} requires `{name} < {lt}`, got {value}")
    if le is not None and value > le:
        raise ValueError(f"{cls_name} requires `{name} <= {le}`, got {value}")
    return value


def _check_mapping(estimator, name, allowed):
    value = getattr(estimator, name)
    if value not in allowed:
        raise ValueError(f"{type(estimator).__name__} expects `{name}` to be one of {sorted(map(str, allowed))}, got {value}")
    return value


class TSNE(Base):
    @classmethod
    def _get_param_names(cls):
        return super()._get_param_names() + [
            "n_components", "perplexity", "early_exaggeration", "late_exaggeration", "learning_rate", "max_iter",
            "n_iter_without_progress", "min_grad_norm", "metric", "metric_params", "init", "random_state", "method",
            "angle", "n_neighbors", "perplexity_max_iter", "exaggeration_iter", "pre_momentum", "post_momentum",
            "learning_rate_method", "square_distances", "precomputed_knn",
        ]

    def __init__(
        self,
        *,
        n_components=2,
        perplexity=30.0,
        early_exaggeration=12.0,
        late_exaggeration=1.0,
        learning_rate=200.0,
        max_iter=1000,
        n_iter_without_progress=300,
        min_grad_norm=1e-07,
        metric="euclidean",
        metric_params=None,
        init="random",
        random_state=None,
        method="fft",
        angle=0.5,
        n_neighbors=90,
        perplexity_max_iter=100,
        exaggeration_iter=250,
        pre_momentum=0.5,
        post_momentum=0.8,
        learning_rate_method="adaptive",
        square_distances=True,
        precomputed_knn=None,
        verbose=False,
        output_type=None,
    ):
        super().__init__(verbose=verbose, output_type=output_type)
        self.n_components = n_components
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.late_exaggeration = late_exaggeration
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.n_iter_without_progress = n_iter_without_progress
        self.min_grad_norm = min_grad_norm
        self.metric = metric
        self.metric_params = metric_params
        self.init = init
        self.random_state = random_state
        self.method = method
        self.angle = angle
        self.n_neighbors = n_neighbors
        self.perplexity_max_iter = perplexity_max_iter
        self.exaggeration_iter = exaggeration_iter
        self.pre_momentum = pre_momentum
        self.post_momentum = post_momentum
        self.learning_rate_method = learning_rate_method
        self.square_distances = square_distances
        self.precomputed_knn = precomputed_knn

    def _init_params(self, n_samples: int) -> dict:
        """cuML's ``_init_params`` checks, then the scikit-learn TSNE settings that stand in for it."""
        if self.n_components != 2:
            raise ValueError(f"Currently TSNE only supports n_components = 2, got {self.n_components}")
        perplexity = _check_numeric(self, "perplexity", gt=0)
        early_exaggeration = _check_numeric(self, "early_exaggeration", ge=1.0)
        _check_numeric(self, "late_exaggeration", ge=1.0)
        learning_rate = _check_numeric(self, "learning_rate", gt=0)
        adaptive = _check_mapping(self, "learning_rate_method", ("adaptive", "none", None)) == "adaptive"
        min_grad_norm = _check_numeric(self, "min_grad_norm", ge=0)
        angle = _check_numeric(self, "angle", ge=0, le=1)
        _check_numeric(self, "n_neighbors", gt=0)
        _check_numeric(self, "perplexity_max_iter", ge=0)
        _check_numeric(self, "exaggeration_iter", ge=0)
        _check_numeric(self, "pre_momentum", gt=0, lt=1)
        _check_numeric(self, "post_momentum", gt=0, lt=1)
        init = _check_mapping(self, "init", _SUPPORTED_INITS)
        method = _check_mapping(self, "method", _SUPPORTED_METHODS)
        _check_mapping(self, "metric", _SUPPORTED_METRICS)
        if n_samples < 2:
            raise ValueError("TSNE requires >= 2 samples")
        max_iter = _check_numeric(self, "max_iter", gt=0)
        if perplexity > n_samples:
            warnings.warn(f"perplexity ({perplexity}) should be less than n_samples, thresholding perplexity to {n_samples}")
            perplexity = n_samples
        if adaptive and method != "exact":
            learning_rate = max(n_samples / 3.0, 1)
            early_exaggeration = 24.0 if n_samples > 10000 else 12.0
        return {
            "n_components": 2,
            "perplexity": min(perplexity, n_samples - 1),  # scikit-learn's rule is strict
            "early_exaggeration": early_exaggeration,
            "learning_rate": learning_rate / 4.0,  # scikit-learn's gradient carries a factor 4
            "max_iter": max(250, int(max_iter)),  # scikit-learn's minimum
            "min_grad_norm": min_grad_norm,
            "init": init,
            "method": "exact" if method == "exact" else "barnes_hut",
            "angle": angle,
            "random_state": None if self.random_state is None else check_random_seed(self.random_state),
        }

    def fit(self, X, y=None, *, knn_graph=None) -> "TSNE":
        from sklearn.manifold import TSNE as SkTSNE

        X = check_features(X, "TSNE.fit", ensure_min_samples=2, ensure_min_features=2)
        params = self._init_params(len(X))
        model = SkTSNE(**params)
        self.embedding_ = model.fit_transform(X).astype(np.float32)
        self.kl_divergence_ = float(model.kl_divergence_)
        self.n_iter_ = int(model.n_iter_)
        self.learning_rate_ = params["learning_rate"] * 4.0
        self.n_features_in_ = X.shape[1]
        return self

    def fit_transform(self, X, y=None, *, knn_graph=None):
        return self.fit(X, knn_graph=knn_graph).embedding_
