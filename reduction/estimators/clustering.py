"""K-Means and Gaussian mixtures on cuML, a torch device or scikit-learn, and the silhouette score.

Both estimators are scikit-learn estimators: ``__init__`` stores the parameters, ``fit`` returns
the estimator, fitted attributes end in ``_`` and include ``estimator_`` (the fitted cuML or
scikit-learn object) and ``place_``, where the fit ran ("cuml", "sklearn-cuda", "sklearn-cpu" or
"sklearn", from :func:`reduction.backend.implementation`).

* :class:`KMeans` runs ``cuml.cluster.KMeans`` or ``sklearn.cluster.KMeans``. Both take the
  reference's ``init="random"``, ``n_init`` and ``random_state``; the runs differ in their random
  streams (the GPU cannot reproduce NumPy's draws) and in ``tol``: scikit-learn scales it by the
  mean feature variance, cuML compares it with the centroid shift. ``transform`` gives plain
  Euclidean distances on both: cuML's returns squared ones (its L2Expanded metric, at least up
  to 26.10), which each fit detects from cuML's own output (:func:`transform_is_squared`).
* :class:`GaussianMixture` is scikit-learn's GaussianMixture (cuML has none). On a torch device
  it runs with scikit-learn's Array API dispatch on torch tensors ("sklearn-cuda", or
  "sklearn-cpu" under ``backend="torch"`` without a GPU). scikit-learn
  1.9 allows only ``init_params`` "random" and "random_from_data" under Array API; the
  reference's default "kmeans" is therefore reproduced here: each of the ``n_init`` starts draws
  ``KMeans(n_init=1)`` labels on the CPU from the same ``RandomState`` stream scikit-learn would
  use, the start's weights, means and precisions are computed from those labels as scikit-learn
  computes them, and EM runs on the device from there; the start with the highest lower bound
  wins (the first on ties), as in scikit-learn. Array API dispatch also needs the environment
  variable ``SCIPY_ARRAY_API=1`` set before SciPy is first imported
  (:func:`reduction.backend.enable_scipy_array_api`, which scripts/cluster.py calls first);
  without it the mixture runs on the CPU with NumPy and says so.
* :func:`silhouette` runs ``cuml.metrics.cluster.silhouette_score`` or scikit-learn's.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, DensityMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from reduction.backend import (
    announce,
    array_api_call,
    array_api_problem,
    implementation,
    place_device,
    select_backend,
    to_numpy,
)

# scikit-learn's GaussianMixture under Array API dispatch accepts only these init_params.
ARRAY_API_INIT_PARAMS = ("random", "random_from_data")
# init_params the Array API path reproduces itself (starts computed on the CPU, EM on the device).
EMULATED_INIT_PARAMS = ("kmeans",)

# scikit-learn's estimator checks on backend="sklearn" (see reduction/estimators/pca.py): the
# defaults fit the checks' data and every check passes.
CHECK_PARAMS: dict[str, dict] = {"KMeans": {}, "GaussianMixture": {}}
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {"KMeans": {}, "GaussianMixture": {}}


# --------------------------------------------------------------------------------------------
# K-Means
# --------------------------------------------------------------------------------------------


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """K-Means on cuML (GPU) or scikit-learn (CPU), with scikit-learn's parameter meanings.

    Data are cast to float32 on every backend (cuML's working type); ``transform`` (Euclidean
    distances to the centres, not squared, whatever the backend returns) gives float32.
    ``score`` is the negative inertia of X, as in scikit-learn.

    Fitted attributes: ``labels_`` (int64, NumPy), ``cluster_centers_``, ``inertia_`` (sum of
    squared distances to the closest centre), ``n_iter_``, ``estimator_``, ``place_``,
    ``n_features_in_``, ``fit_seconds_``, ``backend_squares_distances_`` (whether the backend's
    ``transform`` returned squared distances, which ``transform`` then takes the root of).
    """

    def __init__(
        self, n_clusters=8, init="random", n_init=50, max_iter=300, tol=1e-4, backend="auto", random_state=None
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.backend = backend
        self.random_state = random_state

    def fit(self, X, y=None) -> "KMeans":
        X = validate_data(self, X, dtype=np.float32, order="C")
        _check_n_clusters(self.n_clusters, len(X))
        factory, self.place_ = implementation("kmeans", select_backend(self.backend))
        start = time.perf_counter()
        self.estimator_ = factory(
            n_clusters=int(self.n_clusters),
            init=self.init,
            n_init=int(self.n_init),
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            random_state=self.random_state,
        ).fit(X)
        self.fit_seconds_ = time.perf_counter() - start
        self.labels_ = to_numpy(self.estimator_.labels_).astype(np.int64)
        self.cluster_centers_ = to_numpy(self.estimator_.cluster_centers_)
        self.inertia_ = float(to_numpy(self.estimator_.inertia_))
        self.n_iter_ = int(to_numpy(self.estimator_.n_iter_))
        self.backend_squares_distances_ = transform_is_squared(self.estimator_, self.cluster_centers_)
        return self

    def _features(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float32, order="C", reset=False)

    def predict(self, X) -> np.ndarray:
        """The closest centre of each row (int64)."""
        X = self._features(X)
        return to_numpy(self.estimator_.predict(X)).astype(np.int64)

    def transform(self, X) -> np.ndarray:
        """Euclidean distances of each row to every centre [n, n_clusters] (float32)."""
        X = self._features(X)
        distances = to_numpy(self.estimator_.transform(X))
        if self.backend_squares_distances_:
            # Expanded squared distances can come out a rounding error below 0.
            distances = np.sqrt(np.maximum(distances, 0, dtype=distances.dtype))
        return distances

    def score(self, X, y=None) -> float:
        """Negative inertia of X (higher is better), as scikit-learn's KMeans.score."""
        X = self._features(X)
        return float(to_numpy(self.estimator_.score(X)))

    @property
    def _n_features_out(self) -> int:
        return self.cluster_centers_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # every input is cast to float32
        return tags


def transform_is_squared(model, centers) -> bool:
    """Whether the fitted K-Means ``model``'s ``transform`` returns squared Euclidean distances.

    Decided from the output itself rather than from a table of versions (cuML up to at least
    26.10 squares them, scikit-learn and a fixed cuML do not): one probe row is put at a known
    distance D from the first centre, D = 2 + |centre| (so D and D^2 differ by at least D, far
    beyond float32 rounding, even for the expanded |x|^2 + |c|^2 - 2 x.c form), and ``model``'s
    distance for it is compared with D and D^2. One row, so it costs one tiny ``transform``.
    """
    centers = np.asarray(centers, dtype=np.float32)
    probe = centers[:1].copy()
    probe[0, 0] += np.float32(2.0 + np.linalg.norm(centers[0].astype(np.float64)))
    distance = float(np.linalg.norm(probe[0].astype(np.float64) - centers[0].astype(np.float64)))
    returned = float(to_numpy(model.transform(probe)).reshape(-1)[0])
    return abs(returned - distance**2) < abs(returned - distance)


def silhouette(X, labels, backend="auto") -> tuple[float, str]:
    """(mean silhouette coefficient over all rows, place it was computed)."""
    labels = np.asarray(labels)
    n_labels = len(np.unique(labels))
    if not 2 <= n_labels <= len(labels) - 1:
        raise ValueError(f"the silhouette needs 2 to n_samples - 1 clusters, got {n_labels} for {len(labels)} rows")
    function, place = implementation("silhouette", select_backend(backend))
    X = np.ascontiguousarray(X, dtype=np.float32)
    if place == "cuml":
        labels = labels.astype(np.int32)
    return float(to_numpy(function(X, labels))), place


# --------------------------------------------------------------------------------------------
# Gaussian mixture
# --------------------------------------------------------------------------------------------


class GaussianMixture(DensityMixin, BaseEstimator):
    """scikit-learn's GaussianMixture on the CPU, or on a torch device via Array API dispatch.

    Parameters are scikit-learn's (defaults too, as the reference used them), plus ``backend``
    and ``device``. ``device`` matters only on the Array API path: the torch device it runs on
    (None: the backend's device); "cpu" runs that same path on torch CPU tensors
    (:meth:`fit_array_api`). On backend="sklearn" it is ignored.

    Data are cast to float64 on every place (full covariances of ~100 PCA features in float32
    lose positive definiteness). ``score`` is the mean log-likelihood per row (scikit-learn's
    DensityMixin convention), so model selection with GridSearchCV maximises held-out likelihood.

    Fitted attributes (NumPy): ``weights_``, ``means_``, ``covariances_``, ``converged_``,
    ``n_iter_``, ``lower_bound_``, ``labels_`` (most probable component of each fitted row),
    ``estimator_`` (the fitted scikit-learn GaussianMixture, holding torch tensors on the Array
    API path), ``place_``, ``init_place_`` (where the starts were computed), ``n_features_in_``,
    ``fit_seconds_``.
    """

    def __init__(
        self,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        backend="auto",
        random_state=None,
        device=None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.backend = backend
        self.random_state = random_state
        self.device = device

    def _sklearn_params(self, **overrides) -> dict:
        params = {
            "n_components": int(self.n_components),
            "covariance_type": self.covariance_type,
            "tol": float(self.tol),
            "reg_covar": float(self.reg_covar),
            "max_iter": int(self.max_iter),
            "n_init": int(self.n_init),
            "init_params": self.init_params,
            "random_state": self.random_state,
        }
        params.update(overrides)
        return params

    def fit(self, X, y=None) -> "GaussianMixture":
        factory, place = implementation("gaussian_mixture", select_backend(self.backend))
        device = place_device(place)
        if device is not None:
            device = self.device or device
            problem = array_api_problem(device)
            if problem is None:
                return self.fit_array_api(X, device=device)
            announce(f"GaussianMixture runs on the CPU: scikit-learn's Array API dispatch is unavailable ({problem})")
        X = validate_data(self, X, dtype=np.float64, order="C")
        _check_n_clusters(self.n_components, len(X))
        start = time.perf_counter()
        # The "sklearn" place is NumPy on the CPU even where the caller has switched Array API
        # dispatch on globally (under which scikit-learn refuses init_params="kmeans").
        with sklearn.config_context(array_api_dispatch=False), warnings.catch_warnings():
            # Non-convergence is recorded in converged_ (and reported by the study), not warned.
            warnings.filterwarnings("ignore", message="Best performing initialization did not converge")
            self.estimator_ = factory(**self._sklearn_params()).fit(X)
        self.fit_seconds_ = time.perf_counter() - start
        self.place_ = self.init_place_ = "sklearn"
        self._xp_device = None
        return self._collect(X)

    def fit_array_api(self, X, device="cuda") -> "GaussianMixture":
        """Fit with scikit-learn's Array API dispatch on torch tensors on ``device``."""
        import torch
        from sklearn.mixture import GaussianMixture as SkGaussianMixture
        from sklearn.utils import check_random_state

        if self.init_params not in ARRAY_API_INIT_PARAMS + EMULATED_INIT_PARAMS:
            raise ValueError(
                f"init_params={self.init_params!r} cannot run under Array API dispatch; "
                f"use one of {ARRAY_API_INIT_PARAMS + EMULATED_INIT_PARAMS}"
            )
        if self.init_params in EMULATED_INIT_PARAMS and self.covariance_type != "full":
            raise ValueError("the emulated 'kmeans' start is implemented for covariance_type='full' only")
        X = validate_data(self, X, dtype=np.float64, order="C")
        _check_n_clusters(self.n_components, len(X))
        place = f"sklearn-{torch.device(device).type}"
        start = time.perf_counter()
        with sklearn.config_context(array_api_dispatch=True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Best performing initialization did not converge")
            Xt = torch.as_tensor(X, device=device)
            if self.init_params in ARRAY_API_INIT_PARAMS:
                self.estimator_ = SkGaussianMixture(**self._sklearn_params()).fit(Xt)
                self.init_place_ = place
            else:
                # scikit-learn draws every start from one RandomState, in order; so do we.
                random_state = check_random_state(self.random_state)
                best = None
                for _ in range(int(self.n_init)):
                    weights, means, precisions = kmeans_start(X, int(self.n_components), self.reg_covar, random_state)
                    as_tensor = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
                    model = SkGaussianMixture(
                        **self._sklearn_params(n_init=1, init_params="random_from_data", random_state=0),
                        weights_init=as_tensor(weights),
                        means_init=as_tensor(means),
                        precisions_init=as_tensor(precisions),
                    ).fit(Xt)
                    if best is None or float(model.lower_bound_) > float(best.lower_bound_):
                        best = model
                # sample() draws from the model's random_state, as scikit-learn's own fit would.
                best.set_params(random_state=self.random_state)
                self.estimator_ = best
                self.init_place_ = "sklearn"
        self.fit_seconds_ = time.perf_counter() - start
        self.place_ = place
        self._xp_device = device
        return self._collect(X)

    def _collect(self, X: np.ndarray) -> "GaussianMixture":
        model = self.estimator_
        self.weights_ = to_numpy(model.weights_)
        self.means_ = to_numpy(model.means_)
        self.covariances_ = to_numpy(model.covariances_)
        self.converged_ = bool(model.converged_)
        self.n_iter_ = int(model.n_iter_)
        self.lower_bound_ = float(model.lower_bound_)
        self.labels_ = to_numpy(self._call("predict", X)).astype(np.int64)
        return self

    def _call(self, method: str, *args):
        """Call the fitted scikit-learn model, with Array API dispatch when it was fitted so."""
        if self._xp_device is None:
            return getattr(self.estimator_, method)(*args)
        args = [np.asarray(a, dtype=np.float64) if isinstance(a, np.ndarray) else a for a in args]
        return array_api_call(getattr(self.estimator_, method), self._xp_device, *args)

    def _rows(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float64, reset=False)

    def predict(self, X) -> np.ndarray:
        """The most probable component of each row (int64)."""
        return to_numpy(self._call("predict", self._rows(X))).astype(np.int64)

    def predict_proba(self, X) -> np.ndarray:
        """Posterior probability of each component for each row [n, n_components]."""
        return to_numpy(self._call("predict_proba", self._rows(X)))

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).labels_

    def score_samples(self, X) -> np.ndarray:
        """Log-likelihood of each row."""
        return to_numpy(self._call("score_samples", self._rows(X)))

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per row."""
        return float(self._call("score", self._rows(X)))

    def aic(self, X) -> float:
        return float(self._call("aic", self._rows(X)))

    def bic(self, X) -> float:
        return float(self._call("bic", self._rows(X)))

    def sample(self, n_samples=1) -> tuple[np.ndarray, np.ndarray]:
        """(rows [n_samples, n_features], their components), drawn with ``random_state``."""
        check_is_fitted(self)
        X, y = self._call("sample", int(n_samples))
        return to_numpy(X), to_numpy(y).astype(np.int64)


def kmeans_start(X: np.ndarray, n_components: int, reg_covar: float, random_state):
    """One 'kmeans' start of scikit-learn's GaussianMixture (full covariances), on the CPU.

    ``KMeans(n_clusters, n_init=1, random_state=random_state)`` labels, as scikit-learn draws
    them, turned into weights, means and precisions as scikit-learn's
    ``_estimate_gaussian_parameters`` does (component sizes padded by 10 eps, ``reg_covar`` on
    the diagonal). Returns (weights [k], means [k, d], precisions [k, d, d]), float64.
    """
    from sklearn.cluster import KMeans as SkKMeans

    n_samples, n_features = X.shape
    labels = SkKMeans(n_clusters=n_components, n_init=1, random_state=random_state).fit(X).labels_
    resp = np.zeros((n_samples, n_components), dtype=X.dtype)
    resp[np.arange(n_samples), labels] = 1
    nk = resp.sum(axis=0) + 10 * np.finfo(resp.dtype).eps
    means = resp.T @ X / nk[:, np.newaxis]
    precisions = np.empty((n_components, n_features, n_features))
    for k in range(n_components):
        diff = X - means[k]
        covariance = (resp[:, k] * diff.T) @ diff / nk[k]
        covariance.flat[:: n_features + 1] += reg_covar
        precision = np.linalg.inv(covariance)
        precisions[k] = (precision + precision.T) / 2
    return nk / n_samples, means, precisions


class MixtureFitError(ValueError):
    """A Gaussian mixture could not be fitted (e.g. a component's covariance is not positive
    definite); the message is one line and names k."""


def _check_n_clusters(n_clusters, n_samples: int) -> None:
    if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ValueError(f"the number of clusters must be a positive integer, got {n_clusters!r}")
    if n_clusters > n_samples:
        raise ValueError(f"cannot make {n_clusters} clusters of {n_samples} rows")
