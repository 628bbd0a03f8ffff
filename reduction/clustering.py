"""K-Means and Gaussian mixtures on cuML or scikit-learn, k sweeps, k-choice rules, purity.

Estimators follow scikit-learn's conventions: ``__init__`` stores the parameters, ``fit`` returns
the estimator, fitted attributes end in ``_`` and include ``backend_``, the place the fit ran
("cuml", "sklearn-cuda" or "sklearn", from :func:`reduction.backend.implementation`).

* :class:`KMeans` runs ``cuml.cluster.KMeans`` or ``sklearn.cluster.KMeans``. Both take the
  reference's ``init="random"``, ``n_init`` and ``random_state``; the runs differ in their random
  streams (the GPU cannot reproduce NumPy's draws) and in ``tol``: scikit-learn scales it by the
  mean feature variance, cuML compares it with the centroid shift.
* :class:`GaussianMixture` is scikit-learn's GaussianMixture (cuML has none). On the GPU it runs
  with scikit-learn's Array API dispatch on torch CUDA tensors ("sklearn-cuda"). scikit-learn
  1.9 allows only ``init_params`` "random" and "random_from_data" under Array API; the
  reference's default "kmeans" is therefore reproduced here: each of the ``n_init`` starts draws
  ``KMeans(n_init=1)`` labels on the CPU from the same ``RandomState`` stream scikit-learn would
  use, the start's weights, means and precisions are computed from those labels as scikit-learn
  computes them, and EM runs on the device from there; the start with the highest lower bound
  wins (the first on ties), as in scikit-learn. Array API dispatch also needs the environment
  variable ``SCIPY_ARRAY_API=1`` set before SciPy is first imported (scripts/cluster.py sets it);
  without it the mixture runs on the CPU and says so.
* :func:`silhouette` runs ``cuml.metrics.cluster.silhouette_score`` or scikit-learn's.
* :func:`kmeans_sweep` / :func:`mixture_sweep` fit one model per k with progress lines.
* k-choice rules are pure functions: :func:`k_by_best_silhouette`, :func:`k_by_elbow`,
  :func:`k_by_lowest` (lowest BIC); :data:`KMEANS_K_RULES` names the K-Means ones.
* :func:`cluster_purity`: ARI, NMI and majority-label purity against true labels.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from reduction.backend import announce, implementation, select_backend, to_numpy

# scikit-learn's GaussianMixture under Array API dispatch accepts only these init_params.
ARRAY_API_INIT_PARAMS = ("random", "random_from_data")
# init_params the Array API path reproduces itself (starts computed on the CPU, EM on the device).
EMULATED_INIT_PARAMS = ("kmeans",)


# --------------------------------------------------------------------------------------------
# K-Means
# --------------------------------------------------------------------------------------------


class KMeans:
    """K-Means on cuML (GPU) or scikit-learn (CPU), with scikit-learn's parameter meanings.

    Fitted attributes: ``labels_`` (int64, NumPy), ``cluster_centers_``, ``inertia_`` (sum of
    squared distances to the closest centre), ``n_iter_``, ``backend_``, ``fit_seconds_``.
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
        X = np.ascontiguousarray(X, dtype=np.float32)
        _check_n_clusters(self.n_clusters, len(X))
        factory, self.backend_ = implementation("kmeans", select_backend(self.backend))
        start = time.perf_counter()
        self.model_ = factory(
            n_clusters=int(self.n_clusters),
            init=self.init,
            n_init=int(self.n_init),
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            random_state=self.random_state,
        ).fit(X)
        self.fit_seconds_ = time.perf_counter() - start
        self.labels_ = to_numpy(self.model_.labels_).astype(np.int64)
        self.cluster_centers_ = to_numpy(self.model_.cluster_centers_)
        self.inertia_ = float(to_numpy(self.model_.inertia_))
        self.n_iter_ = int(to_numpy(self.model_.n_iter_))
        return self

    def predict(self, X) -> np.ndarray:
        return to_numpy(self.model_.predict(np.ascontiguousarray(X, dtype=np.float32))).astype(np.int64)

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).labels_


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


def array_api_problem() -> str | None:
    """Why scikit-learn's Array API dispatch cannot run here, or None when it can."""
    try:
        import sklearn

        with sklearn.config_context(array_api_dispatch=True):
            pass
    except (RuntimeError, ImportError) as exc:  # e.g. SCIPY_ARRAY_API unset when SciPy was imported
        return str(exc).split(". ")[0]
    if os.environ.get("SCIPY_ARRAY_API") != "1":
        return "SCIPY_ARRAY_API=1 is not set"
    return None


class GaussianMixture:
    """scikit-learn's GaussianMixture on the CPU, or on a CUDA device via Array API dispatch.

    Parameters are scikit-learn's (defaults too, as the reference used them), plus ``backend``.
    ``device`` is the torch device of the Array API path (None: "cuda"); "cpu" runs that same
    path on torch CPU tensors, which is how it is tested without a GPU (:meth:`fit_array_api`).

    Data are cast to float64 on every place (full covariances of ~100 PCA features in float32
    lose positive definiteness).

    Fitted attributes (NumPy): ``weights_``, ``means_``, ``covariances_``, ``converged_``,
    ``n_iter_``, ``lower_bound_``, ``labels_`` (most probable component of each fitted row),
    ``backend_``, ``init_place_`` (where the starts were computed), ``fit_seconds_``.
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
        if place == "sklearn-cuda":
            problem = array_api_problem()
            if problem is not None:
                announce(f"GaussianMixture runs on the CPU: scikit-learn's Array API dispatch is unavailable ({problem})")
                place = "sklearn"
        if place == "sklearn-cuda":
            return self.fit_array_api(X, device=self.device or "cuda")
        X = np.ascontiguousarray(X, dtype=np.float64)
        _check_n_clusters(self.n_components, len(X))
        start = time.perf_counter()
        with warnings.catch_warnings():
            # Non-convergence is recorded in converged_ (and reported by the study), not warned.
            warnings.filterwarnings("ignore", message="Best performing initialization did not converge")
            self.model_ = factory(**self._sklearn_params()).fit(X)
        self.fit_seconds_ = time.perf_counter() - start
        self.backend_ = self.init_place_ = "sklearn"
        self._xp_device = None
        return self._collect(X)

    def fit_array_api(self, X, device="cuda") -> "GaussianMixture":
        """Fit with scikit-learn's Array API dispatch on torch tensors on ``device``."""
        import sklearn
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
        X = np.ascontiguousarray(X, dtype=np.float64)
        _check_n_clusters(self.n_components, len(X))
        place = "sklearn-cuda" if str(device).startswith("cuda") else "sklearn"
        start = time.perf_counter()
        with sklearn.config_context(array_api_dispatch=True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Best performing initialization did not converge")
            Xt = torch.as_tensor(X, device=device)
            if self.init_params in ARRAY_API_INIT_PARAMS:
                self.model_ = SkGaussianMixture(**self._sklearn_params()).fit(Xt)
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
                self.model_ = best
                self.init_place_ = "sklearn"
        self.fit_seconds_ = time.perf_counter() - start
        self.backend_ = place
        self._xp_device = device
        return self._collect(X)

    def _collect(self, X: np.ndarray) -> "GaussianMixture":
        model = self.model_
        self.weights_ = to_numpy(model.weights_)
        self.means_ = to_numpy(model.means_)
        self.covariances_ = to_numpy(model.covariances_)
        self.converged_ = bool(model.converged_)
        self.n_iter_ = int(model.n_iter_)
        self.lower_bound_ = float(model.lower_bound_)
        self.labels_ = self.predict(X)
        return self

    def _call(self, method: str, *args):
        """Call the fitted scikit-learn model, with Array API dispatch when it was fitted so."""
        if self._xp_device is None:
            return getattr(self.model_, method)(*args)
        import sklearn
        import torch

        args = [torch.as_tensor(np.asarray(a, dtype=np.float64), device=self._xp_device) if isinstance(a, np.ndarray) else a for a in args]
        with sklearn.config_context(array_api_dispatch=True):
            return getattr(self.model_, method)(*args)

    def predict(self, X) -> np.ndarray:
        return to_numpy(self._call("predict", np.asarray(X, dtype=np.float64))).astype(np.int64)

    def score(self, X) -> float:
        """Mean log-likelihood per row."""
        return float(self._call("score", np.asarray(X, dtype=np.float64)))

    def aic(self, X) -> float:
        return float(self._call("aic", np.asarray(X, dtype=np.float64)))

    def bic(self, X) -> float:
        return float(self._call("bic", np.asarray(X, dtype=np.float64)))

    def sample(self, n_samples=1) -> tuple[np.ndarray, np.ndarray]:
        """(rows [n_samples, n_features], their components), drawn with ``random_state``."""
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


# --------------------------------------------------------------------------------------------
# Sweeps over k
# --------------------------------------------------------------------------------------------


@dataclass
class KMeansSweep:
    """One K-Means model per k, with inertia and (optionally) silhouette."""

    ks: list[int]
    inertia: list[float]
    silhouette: list[float] | None
    n_iter: list[int]
    fit_seconds: list[float]
    silhouette_seconds: list[float]
    place: str
    silhouette_place: str | None
    models: dict[int, KMeans] = field(repr=False, default_factory=dict)


@dataclass
class MixtureSweep:
    """One Gaussian mixture per k, with AIC, BIC and convergence."""

    ks: list[int]
    aic: list[float]
    bic: list[float]
    lower_bound: list[float]
    converged: list[bool]
    n_iter: list[int]
    fit_seconds: list[float]
    place: str
    init_place: str
    models: dict[int, GaussianMixture] = field(repr=False, default_factory=dict)


def check_ks(ks, n_samples: int | None = None) -> list[int]:
    """Sorted distinct k values; ValueError for an empty list, k < 2 or k >= n_samples."""
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ValueError("the list of k values is empty")
    if ks[0] < 2:
        raise ValueError(f"every k must be at least 2, got {ks[0]}")
    if n_samples is not None and ks[-1] > n_samples - 1:
        raise ValueError(f"k={ks[-1]} is too large for {n_samples} rows (the silhouette needs k <= rows - 1)")
    return ks


def kmeans_sweep(
    X, ks, *, init="random", n_init=50, max_iter=300, tol=1e-4, random_state=None, backend="auto",
    with_silhouette=True, progress=False,
) -> KMeansSweep:
    """Fit ``KMeans`` for every k; inertia and silhouette (on all rows) per k."""
    from datamodules.cli import Progress

    X = np.ascontiguousarray(X, dtype=np.float32)
    ks = check_ks(ks, len(X))
    bar = Progress(len(ks), "k-means") if progress else None
    sweep = KMeansSweep(ks, [], [] if with_silhouette else None, [], [], [], "", None)
    for k in ks:
        model = KMeans(k, init=init, n_init=n_init, max_iter=max_iter, tol=tol, backend=backend, random_state=random_state).fit(X)
        sweep.models[k] = model
        sweep.inertia.append(model.inertia_)
        sweep.n_iter.append(model.n_iter_)
        sweep.fit_seconds.append(model.fit_seconds_)
        sweep.place = model.backend_
        label = f"k={k}: inertia {model.inertia_:.4g} ({model.fit_seconds_:.1f} s)"
        if with_silhouette:
            start = time.perf_counter()
            score, sweep.silhouette_place = silhouette(X, model.labels_, backend=backend)
            sweep.silhouette_seconds.append(time.perf_counter() - start)
            sweep.silhouette.append(score)
            label += f", silhouette {score:.4f} ({sweep.silhouette_seconds[-1]:.1f} s)"
        if bar:
            bar.step(label)
    return sweep


def mixture_sweep(
    X, ks, *, n_init=10, max_iter=100, tol=1e-3, reg_covar=1e-6, init_params="kmeans", covariance_type="full",
    random_state=None, backend="auto", progress=False,
) -> MixtureSweep:
    """Fit a ``GaussianMixture`` for every k; AIC and BIC on the fitted rows per k."""
    from datamodules.cli import Progress

    X = np.ascontiguousarray(X, dtype=np.float64)
    ks = check_ks(ks, len(X))
    bar = Progress(len(ks), "gaussian mixture") if progress else None
    sweep = MixtureSweep(ks, [], [], [], [], [], [], "", "")
    for k in ks:
        model = GaussianMixture(
            k, covariance_type=covariance_type, tol=tol, reg_covar=reg_covar, max_iter=max_iter, n_init=n_init,
            init_params=init_params, backend=backend, random_state=random_state,
        )
        try:
            model.fit(X)
        except Exception as exc:
            # scikit-learn raises ValueError for an ill-defined covariance on NumPy; on torch the
            # Cholesky failure surfaces as torch's LinAlgError.
            ill_defined = isinstance(exc, ValueError) and "ill-defined empirical covariance" in str(exc)
            if not (ill_defined or type(exc).__name__ == "LinAlgError"):
                raise
            reason = str(exc).split(". ")[0].splitlines()[0]
            raise MixtureFitError(f"the Gaussian mixture with k={k} could not be fitted: {reason}") from exc
        sweep.models[k] = model
        sweep.aic.append(model.aic(X))
        sweep.bic.append(model.bic(X))
        sweep.lower_bound.append(model.lower_bound_)
        sweep.converged.append(model.converged_)
        sweep.n_iter.append(model.n_iter_)
        sweep.fit_seconds.append(model.fit_seconds_)
        sweep.place, sweep.init_place = model.backend_, model.init_place_
        if bar:
            note = "" if model.converged_ else ", NOT converged"
            bar.step(f"k={k}: BIC {sweep.bic[-1]:.6g}, AIC {sweep.aic[-1]:.6g} ({model.fit_seconds_:.1f} s{note})")
    return sweep


# --------------------------------------------------------------------------------------------
# Rules that pick k (pure functions of the sweep's numbers)
# --------------------------------------------------------------------------------------------


def _paired(ks, values) -> tuple[np.ndarray, np.ndarray]:
    ks, values = np.asarray(ks, dtype=float), np.asarray(values, dtype=float)
    if ks.ndim != 1 or len(ks) == 0 or ks.shape != values.shape:
        raise ValueError("ks and values must be non-empty lists of the same length")
    order = np.argsort(ks, kind="stable")
    return ks[order], values[order]


def k_by_best_silhouette(ks, silhouettes) -> int:
    """The k with the highest silhouette (the smallest such k on ties)."""
    ks, values = _paired(ks, silhouettes)
    if np.all(np.isnan(values)):
        raise ValueError("no silhouette value to choose from")
    return int(ks[np.nanargmax(values)])


def k_by_lowest(ks, values) -> int:
    """The k with the lowest value, e.g. BIC (the smallest such k on ties)."""
    ks, values = _paired(ks, values)
    if np.all(np.isnan(values)):
        raise ValueError("no value to choose from")
    return int(ks[np.nanargmin(values)])


def k_by_elbow(ks, inertias) -> int:
    """The elbow of a decreasing inertia curve: the k farthest below the chord joining the
    curve's first and last points, with both axes scaled to [0, 1] (the "kneedle" rule).
    With fewer than 3 ks, or no point below the chord, there is no elbow; the smallest k is returned."""
    ks, values = _paired(ks, inertias)
    if len(ks) < 3:
        return int(ks[0])
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    span = values[0] - values[-1]
    y = (values - values[-1]) / span if span != 0 else np.zeros_like(values)
    # Chord from (0, 1) to (1, 0): y = 1 - x. Distance below it (positive on a convex curve).
    below = (1 - x) - y
    if not np.nanmax(below) > 1e-9:  # straight or concave: no elbow
        return int(ks[0])
    return int(ks[int(np.nanargmax(below))])


KMEANS_K_RULES = {
    "silhouette": ("the k with the highest mean silhouette (smallest k on ties)", "silhouette", k_by_best_silhouette),
    "elbow": (
        "the elbow of the inertia curve: the k farthest below the chord from the first to the last k, "
        "both axes scaled to [0, 1]",
        "inertia",
        k_by_elbow,
    ),
}
BIC_RULE = "the k with the lowest BIC (smallest k on ties)"


# --------------------------------------------------------------------------------------------
# Clusters against the true labels
# --------------------------------------------------------------------------------------------


def cluster_purity(labels_true, labels_pred, names=None) -> dict:
    """How well clusters match true labels.

    Returns ``ari`` (adjusted Rand index), ``nmi`` (normalized mutual information),
    ``purity`` (share of rows whose true label is their cluster's most common one) and,
    per cluster in label order, its ``size``, ``majority`` label (``names(label)`` when given)
    and ``majority_share``.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels_true, labels_pred = np.asarray(labels_true), np.asarray(labels_pred)
    if labels_true.shape != labels_pred.shape or labels_true.ndim != 1 or len(labels_true) == 0:
        raise ValueError("labels_true and labels_pred must be non-empty 1-D arrays of the same length")
    clusters = []
    majority_total = 0
    for cluster in np.unique(labels_pred):
        members = labels_true[labels_pred == cluster]
        values, counts = np.unique(members, return_counts=True)
        top = int(np.argmax(counts))
        majority_total += int(counts[top])
        majority = values[top].item()
        clusters.append(
            {
                "cluster": int(cluster),
                "size": int(len(members)),
                "majority": names(majority) if names else majority,
                "majority_share": float(counts[top] / len(members)),
            }
        )
    return {
        "ari": float(adjusted_rand_score(labels_true, labels_pred)),
        "nmi": float(normalized_mutual_info_score(labels_true, labels_pred)),
        "purity": float(majority_total / len(labels_true)),
        "clusters": clusters,
    }


def first_members(labels, n_per_cluster: int, clusters=None) -> dict[int, np.ndarray]:
    """{cluster: positions of its first ``n_per_cluster`` rows, in row order}."""
    labels = np.asarray(labels)
    clusters = np.unique(labels) if clusters is None else clusters
    return {int(c): np.flatnonzero(labels == c)[:n_per_cluster] for c in clusters}


def _check_n_clusters(n_clusters, n_samples: int) -> None:
    if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ValueError(f"the number of clusters must be a positive integer, got {n_clusters!r}")
    if n_clusters > n_samples:
        raise ValueError(f"cannot make {n_clusters} clusters of {n_samples} rows")
