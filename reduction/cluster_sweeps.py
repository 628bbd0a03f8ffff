"""K-Means and Gaussian-mixture sweeps over k, the rules that pick k, and clusters against labels.

The estimators (:class:`~reduction.estimators.KMeans`, :class:`~reduction.estimators.GaussianMixture`)
and :func:`~reduction.estimators.clustering.silhouette` live in :mod:`reduction.estimators.clustering`.

* :func:`kmeans_sweep` / :func:`mixture_sweep` fit one model per k with progress lines (the
  mixtures' k's in parallel threads with ``n_jobs``).
* k-choice rules are pure functions: :func:`k_by_best_silhouette`, :func:`k_by_elbow`,
  :func:`k_by_lowest` (lowest BIC); :data:`KMEANS_K_RULES` names the K-Means ones.
* :func:`cluster_purity`: ARI, NMI and majority-label purity against true labels;
  :func:`first_members`: the first rows of each cluster (for image grids).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from labkit.progress import Progress
from reduction.choices import check_ks  # noqa: F401  (light, for the command line; part of this module's API)
from reduction.estimators.clustering import GaussianMixture, KMeans, MixtureFitError, silhouette


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
    workers: int = 1  # k's fitted at once (1: one after another)
    models: dict[int, GaussianMixture] = field(repr=False, default_factory=dict)


def kmeans_sweep(
    X, ks, *, init="random", n_init=50, max_iter=300, tol=1e-4, random_state=None, backend="auto",
    with_silhouette=True, progress=False,
) -> KMeansSweep:
    """Fit ``KMeans`` for every k; inertia and silhouette (on all rows) per k."""
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
        sweep.place = model.place_
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
    random_state=None, backend="auto", progress=False, n_jobs=None,
) -> MixtureSweep:
    """Fit a ``GaussianMixture`` for every k; AIC and BIC on the fitted rows per k.

    ``n_jobs``: None fits one k after another (BLAS and OpenMP threads as configured). A number
    of workers (-1: all cores) fits up to that many k's at once in threads, the largest k first,
    each with one BLAS/OpenMP thread (the EM's matrix products release the GIL). Every k's fit
    is the same either way (its own ``random_state``, nothing shared between k's); only the
    floating-point rounding of the matrix products may differ with the BLAS thread count. One
    k's products are too small to keep several BLAS threads busy, and BLAS threads that spin-wait
    for each other on a machine whose cores are taken slow EM down many times over; a k per
    core avoids both. The Array API path (a GPU) runs one k after another whatever ``n_jobs``
    says: the k's would only queue on the one device. ``fit_seconds`` are each fit's own wall
    time, which overlap when k's run at once.

    A fit that fails for an ill-defined covariance raises :class:`MixtureFitError` naming k.
    """
    from reduction.backend import select_backend

    X = np.ascontiguousarray(X, dtype=np.float64)
    ks = check_ks(ks, len(X))
    bar = Progress(len(ks), "gaussian mixture") if progress else None
    params = dict(covariance_type=covariance_type, tol=tol, reg_covar=reg_covar, max_iter=max_iter, n_init=n_init,
                  init_params=init_params, backend=backend, random_state=random_state)
    sweep = MixtureSweep(ks, [], [], [], [], [], [], "", "")

    def report(k: int, model: GaussianMixture, bic: float, aic: float) -> None:
        if bar:
            note = "" if model.converged_ else ", NOT converged"
            bar.step(f"k={k}: BIC {bic:.6g}, AIC {aic:.6g} ({model.fit_seconds_:.1f} s{note})", item=f"k={k}")

    def fit_one(k: int) -> tuple[GaussianMixture, float, float]:
        if bar:
            bar.started(f"k={k}")  # a k may take minutes: say when each begins (the heartbeat names the running ones)
        return _fit_mixture(X, k, params)

    done: dict[int, tuple[GaussianMixture, float, float]] = {}
    if n_jobs is None or select_backend(backend).name != "sklearn":
        for k in ks:
            done[k] = fit_one(k)
            report(k, *done[k])
    else:
        from joblib import Parallel, delayed, effective_n_jobs
        from threadpoolctl import threadpool_limits

        workers = sweep.workers = max(1, min(effective_n_jobs(n_jobs), len(ks)))
        with threadpool_limits(limits=1):
            def fit(k: int):
                return k, fit_one(k)

            fits = Parallel(n_jobs=workers, prefer="threads", return_as="generator_unordered")(
                delayed(fit)(k) for k in sorted(ks, reverse=True)
            )
            for k, fitted in fits:  # reported as they finish
                done[k] = fitted
                report(k, *fitted)
    for k in ks:
        model, bic, aic = done[k]
        sweep.models[k] = model
        sweep.aic.append(aic)
        sweep.bic.append(bic)
        sweep.lower_bound.append(model.lower_bound_)
        sweep.converged.append(model.converged_)
        sweep.n_iter.append(model.n_iter_)
        sweep.fit_seconds.append(model.fit_seconds_)
        sweep.place, sweep.init_place = model.place_, model.init_place_
    return sweep


def _fit_mixture(X, k: int, params: dict) -> tuple[GaussianMixture, float, float]:
    """(fitted mixture, BIC, AIC) for one k; :class:`MixtureFitError` for an ill-defined covariance."""
    model = GaussianMixture(k, **params)
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
    return model, model.bic(X), model.aic(X)


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

