"""K-Means / Gaussian-mixture estimators, sweeps, k rules and purity (CPU, small data).

GPU tests: cuML K-Means and silhouette (requires_cuml); the Gaussian mixture with scikit-learn's
Array API dispatch on torch CUDA tensors (requires_cuda).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO_ROOT, requires_cuda, requires_cuml

from reduction.cluster_sweeps import (
    check_ks,
    cluster_purity,
    first_members,
    k_by_best_silhouette,
    k_by_elbow,
    k_by_lowest,
    kmeans_sweep,
    mixture_sweep,
)
from reduction.estimators import GaussianMixture, KMeans

TRUE_K = 4


@pytest.fixture(scope="module")
def blobs():
    """Four well-separated Gaussian blobs in 5-D, 240 rows."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=240, n_features=5, centers=TRUE_K, cluster_std=0.6, center_box=(-10, 10), random_state=3)
    return X.astype(np.float32), y


# ---- k rules (pure functions) ---------------------------------------------------------------


def test_best_silhouette_picks_highest_and_smallest_on_ties():
    assert k_by_best_silhouette([5, 10, 15], [0.1, 0.3, 0.2]) == 10
    assert k_by_best_silhouette([5, 10, 15], [0.3, 0.1, 0.3]) == 5
    # order of the input does not matter
    assert k_by_best_silhouette([15, 5, 10], [0.2, 0.1, 0.3]) == 10
    assert k_by_best_silhouette([5, 10], [np.nan, 0.1]) == 10


def test_lowest_picks_minimum_and_smallest_on_ties():
    assert k_by_lowest([5, 10, 15, 20], [300.0, 100.0, 200.0, 100.0]) == 10
    assert k_by_lowest([2, 3], [-5.0, -7.0]) == 3


def test_elbow_rule():
    ks = list(range(1, 9))
    assert k_by_elbow(ks, [100, 50, 20, 15, 12, 10, 9, 8]) == 3
    # a straight line has no elbow below the chord: the first k
    assert k_by_elbow(ks, [80 - 10 * k for k in ks]) == 1
    assert k_by_elbow([5, 10], [2.0, 1.0]) == 5


@pytest.mark.parametrize(
    "rule, args",
    [
        (k_by_best_silhouette, ([], [])),
        (k_by_lowest, ([1, 2], [1.0])),
        (k_by_elbow, ([1, 2, 3], [1.0, 2.0])),
        (k_by_best_silhouette, ([2, 3], [np.nan, np.nan])),
    ],
)
def test_rules_reject_bad_input(rule, args):
    with pytest.raises(ValueError):
        rule(*args)


def test_check_ks():
    assert check_ks([10, 5, 5, 15]) == [5, 10, 15]
    for bad in ([], [1, 5], [0]):
        with pytest.raises(ValueError):
            check_ks(bad)
    assert check_ks([2, 9], n_samples=10) == [2, 9]
    with pytest.raises(ValueError, match="too large"):
        check_ks([2, 10], n_samples=10)


# ---- purity ---------------------------------------------------------------------------------


def test_cluster_purity_perfect_and_permuted():
    truth = np.array([0, 0, 1, 1, 2, 2])
    result = cluster_purity(truth, np.array([2, 2, 0, 0, 1, 1]), names=lambda label: "ABC"[label])
    assert result["ari"] == pytest.approx(1.0)
    assert result["nmi"] == pytest.approx(1.0)
    assert result["purity"] == 1.0
    assert [c["majority"] for c in result["clusters"]] == ["B", "C", "A"]


def test_cluster_purity_mixed():
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 1])
    result = cluster_purity(truth, pred)
    # cluster 0: two 0s (majority 2/2); cluster 1: one 0, two 1s, one 2 (majority 2/4)
    assert result["purity"] == pytest.approx(4 / 6)
    assert result["clusters"][1] == {"cluster": 1, "size": 4, "majority": 1, "majority_share": 0.5}
    assert -1 <= result["ari"] < 1 and 0 <= result["nmi"] < 1


def test_first_members_keeps_row_order():
    members = first_members(np.array([1, 0, 1, 1, 0, 1]), 2)
    assert {k: v.tolist() for k, v in members.items()} == {0: [1, 4], 1: [0, 2]}


# ---- K-Means --------------------------------------------------------------------------------


def test_kmeans_sweep_finds_true_k(blobs):
    X, y = blobs
    sweep = kmeans_sweep(X, [2, 3, 4, 5, 6], n_init=3, random_state=42, backend="sklearn")
    assert sweep.place == "sklearn" and sweep.silhouette_place == "sklearn"
    assert k_by_best_silhouette(sweep.ks, sweep.silhouette) == TRUE_K
    assert all(a > b for a, b in zip(sweep.inertia, sweep.inertia[1:]))
    assert k_by_elbow(sweep.ks, sweep.inertia) == TRUE_K
    labels = sweep.models[TRUE_K].labels_
    assert cluster_purity(y, labels)["ari"] == pytest.approx(1.0)


def test_kmeans_is_deterministic(blobs):
    X, _ = blobs
    a = KMeans(5, n_init=2, random_state=7, backend="sklearn").fit(X)
    b = KMeans(5, n_init=2, random_state=7, backend="sklearn").fit(X)
    assert np.array_equal(a.labels_, b.labels_) and a.inertia_ == b.inertia_
    assert a.place_ == "sklearn" and a.cluster_centers_.shape == (5, X.shape[1])
    assert np.array_equal(a.predict(X), a.labels_)


def test_kmeans_rejects_too_many_clusters():
    with pytest.raises(ValueError):
        KMeans(10, backend="sklearn").fit(np.zeros((5, 2)))


# ---- Gaussian mixture -----------------------------------------------------------------------


def test_mixture_sweep_bic_finds_true_k(blobs):
    X, y = blobs
    sweep = mixture_sweep(X, [2, 3, 4, 5, 6], n_init=2, random_state=42, backend="sklearn")
    assert sweep.place == "sklearn" and sweep.init_place == "sklearn"
    assert k_by_lowest(sweep.ks, sweep.bic) == TRUE_K
    assert len(sweep.converged) == len(sweep.ks)
    assert cluster_purity(y, sweep.models[TRUE_K].labels_)["ari"] == pytest.approx(1.0)


def test_mixture_sweep_reports_fits_that_did_not_converge(blobs):
    # One EM iteration cannot meet the convergence test (it compares two iterations), on any
    # machine: the sweep must say so rather than pass the fit off as converged.
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    X, _ = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sweep = mixture_sweep(X, [2, 3], n_init=1, max_iter=1, random_state=42, backend="sklearn", progress=False)
    assert sweep.converged == [False, False]


def test_mixture_sweep_with_parallel_ks_fits_what_the_serial_sweep_fits(blobs, caplog):
    """k's in parallel threads (one BLAS thread each, largest k first) give every k the fit the
    one-after-another sweep gives it; the results stay in k order."""
    import logging

    from labkit.progress import logger

    X, y = blobs
    serial = mixture_sweep(X, [2, 3, 4, 5, 6], n_init=2, random_state=42, backend="sklearn")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            parallel = mixture_sweep(X, [6, 2, 4, 3, 5], n_init=2, random_state=42, backend="sklearn", n_jobs=2,
                                     progress=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert serial.workers == 1 and parallel.workers == 2
    assert parallel.ks == serial.ks == [2, 3, 4, 5, 6] and list(parallel.models) == serial.ks
    np.testing.assert_allclose(parallel.bic, serial.bic, rtol=1e-9)
    np.testing.assert_allclose(parallel.aic, serial.aic, rtol=1e-9)
    np.testing.assert_allclose(parallel.lower_bound, serial.lower_bound, rtol=1e-9)
    assert parallel.n_iter == serial.n_iter and parallel.converged == serial.converged
    for k in serial.ks:
        assert cluster_purity(serial.models[k].labels_, parallel.models[k].labels_)["ari"] == pytest.approx(1.0)
    lines = {message for message in caplog.messages if message.startswith("[gaussian mixture ")}
    assert sorted(line.split("]")[0] for line in lines) == [f"[gaussian mixture {i}/5" for i in range(1, 6)]
    assert all(f"k={k}:" in caplog.text for k in serial.ks)
    # each k also says when it starts (a k of the full sweep takes minutes)
    starts = {message.split()[2] for message in caplog.messages if message.startswith("[gaussian mixture] ")}
    assert sorted(starts) == sorted(f"k={k}:" for k in serial.ks)


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_mixture_sweep_names_the_k_that_cannot_be_fitted(n_jobs):
    from reduction.estimators.clustering import MixtureFitError

    collapsed = np.repeat(np.eye(3), 10, axis=0)  # three points, ten times each: no covariance without reg_covar
    with pytest.raises(MixtureFitError, match=r"k=\d could not be fitted: .*ill-defined empirical covariance"):
        mixture_sweep(collapsed, [2, 3], n_init=1, reg_covar=0.0, random_state=0, backend="sklearn", n_jobs=n_jobs)


def test_mixture_is_deterministic_and_samples(blobs):
    X, _ = blobs
    a = GaussianMixture(4, n_init=2, random_state=42, backend="sklearn").fit(X)
    b = GaussianMixture(4, n_init=2, random_state=42, backend="sklearn").fit(X)
    assert np.array_equal(a.labels_, b.labels_) and a.lower_bound_ == b.lower_bound_
    assert a.bic(X) == b.bic(X) and a.aic(X) < a.bic(X)
    rows, components = a.sample(20)
    assert rows.shape == (20, X.shape[1]) and components.shape == (20,)
    assert set(components.tolist()) <= set(range(4))
    again, _ = a.sample(20)  # sample() draws from random_state afresh, as scikit-learn does
    assert np.array_equal(rows, again)


def test_generated_images_shape_and_range():
    from datamodules.synthetic import synthetic_arrays
    from reduction.estimators import PCA
    from reduction.studies.cluster import generate_images

    images, _ = synthetic_arrays(200, seed=1)
    pca = PCA(20, backend="sklearn", random_state=0).fit(images)
    mixture = GaussianMixture(3, n_init=1, random_state=42, backend="sklearn").fit(pca.transform(images))
    pixels, components = generate_images(mixture, pca, 20)
    assert pixels.shape == (20, 784) and components.shape == (20,)
    assert pixels.min() >= 0 and pixels.max() <= 255
    assert pixels.std() > 0


_ARRAY_API_CHECK = """
from reduction.backend import enable_scipy_array_api

enable_scipy_array_api()  # before SciPy loads, as scripts/cluster.py does
import numpy as np
from sklearn.datasets import make_blobs
from reduction.estimators.clustering import GaussianMixture, array_api_problem

assert array_api_problem() is None, array_api_problem()
X, _ = make_blobs(300, n_features=4, centers=3, random_state=1)
cpu = GaussianMixture(3, n_init=3, random_state=42, backend="sklearn").fit(X)
xp = GaussianMixture(3, n_init=3, random_state=42, backend="sklearn").fit_array_api(X, device=DEVICE)
assert xp.place_ == PLACE and xp.init_place_ == "sklearn", (xp.place_, xp.init_place_)
assert np.array_equal(cpu.labels_, xp.labels_)
assert np.isclose(cpu.lower_bound_, xp.lower_bound_, rtol=1e-9), (cpu.lower_bound_, xp.lower_bound_)
assert np.isclose(cpu.bic(X), xp.bic(X), rtol=1e-9) and np.isclose(cpu.aic(X), xp.aic(X), rtol=1e-9)
assert np.allclose(cpu.sample(5)[0], xp.sample(5)[0])
other = GaussianMixture(3, n_init=2, init_params="random_from_data", random_state=0).fit_array_api(X, device=DEVICE)
assert other.init_place_ == PLACE and np.isfinite(other.lower_bound_)
print("ok")
"""


def _run_array_api_check(device: str, place: str) -> None:
    # SCIPY_ARRAY_API must be set before SciPy is imported, hence a fresh interpreter, which
    # sets it with reduction.backend.enable_scipy_array_api.
    env = {name: value for name, value in os.environ.items() if name != "SCIPY_ARRAY_API"}
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    code = f"DEVICE = {device!r}\nPLACE = {place!r}\n" + textwrap.dedent(_ARRAY_API_CHECK)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_mixture_array_api_path_matches_numpy_on_torch_cpu():
    """The GPU path (Array API dispatch, 'kmeans' starts reproduced) on torch CPU tensors gives
    scikit-learn's own result: same labels, lower bound, BIC/AIC and samples."""
    _run_array_api_check("cpu", "sklearn-cpu")


# ---- GPU ------------------------------------------------------------------------------------


@pytest.mark.gpu
@requires_cuml
def test_cuml_kmeans_and_silhouette(blobs):
    X, y = blobs
    sweep = kmeans_sweep(X, [2, 3, 4, 5, 6], n_init=5, random_state=42, backend="cuml")
    assert sweep.place == "cuml" and sweep.silhouette_place == "cuml"
    assert k_by_best_silhouette(sweep.ks, sweep.silhouette) == TRUE_K
    assert cluster_purity(y, sweep.models[TRUE_K].labels_)["ari"] == pytest.approx(1.0)
    from sklearn.metrics import silhouette_score

    labels = sweep.models[TRUE_K].labels_
    assert sweep.silhouette[sweep.ks.index(TRUE_K)] == pytest.approx(silhouette_score(X, labels), abs=1e-3)


@pytest.mark.gpu
@requires_cuda
def test_mixture_array_api_on_cuda_matches_numpy():
    _run_array_api_check("cuda", "sklearn-cuda")
