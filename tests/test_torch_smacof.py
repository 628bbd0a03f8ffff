"""The torch SMACOF (reduction.torch_places.smacof) computes scikit-learn 1.9's metric MDS.

From the same start, in float64 on the CPU, it gives scikit-learn's ``smacof``/``MDS`` stress
(relative difference under 1e-10), its map (relative Frobenius gap under 1e-9 after the best
rotation/reflection; the two differ by rounding only, some 1e-13 here), the same iterations per
start and the same best start. Its random starts are scikit-learn's, drawn serially or from
one seed per start, so a seed gives scikit-learn's map. A Guttman step changed by 1e-7, or one
iteration more, breaks the comparison.

Stopping is a threshold test (relative stress decrease under eps); the tests check that each
stop compared here is not a rounding accident: scikit-learn stops at the same iteration with
eps one part in a million larger or smaller.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import sklearn
import torch
from conftest import requires_cuda
from joblib import parallel_config
from scipy.linalg import orthogonal_procrustes
from sklearn.base import clone
from sklearn.manifold import MDS, smacof
from sklearn.metrics import euclidean_distances

from reduction.torch_places import smacof as torch_smacof
from reduction.torch_places.smacof import TorchSMACOF, draw_random_starts, guttman_transform

# The torch SMACOF is scikit-learn 1.9's: the relative stopping test came in 1.7, MDS's ``init``
# and ``metric_mds`` in 1.8. An older scikit-learn computes something else, so there is nothing to compare.
SKLEARN_VERSION = tuple(int(part) for part in sklearn.__version__.split(".")[:2])
pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.skipif(SKLEARN_VERSION < (1, 8), reason="requires scikit-learn >= 1.8"),
]

STRESS_RTOL = 1e-10
MAP_RTOL = 1e-9
EPS = 1e-6


@pytest.fixture(scope="module")
def points():
    """90 rows in 8-D: three loose groups (float64)."""
    rng = np.random.default_rng(7)
    return rng.normal(size=(90, 8)) + np.repeat(np.eye(3, 8) * 4, 30, axis=0)


def map_gap(A, B) -> float:
    """Relative Frobenius gap between two maps after the best rotation/reflection of A onto B."""
    A, B = A - A.mean(0), B - B.mean(0)
    rotation, _ = orthogonal_procrustes(A, B)
    return float(np.linalg.norm(A @ rotation - B) / np.linalg.norm(B))


def assert_same_smacof(torch_result, sklearn_result) -> None:
    """(map, stress, n_iter) from each side: the same to rounding."""
    (ours, our_stress, our_iter), (theirs, their_stress, their_iter) = torch_result, sklearn_result
    assert our_iter == their_iter
    assert our_stress == pytest.approx(their_stress, rel=STRESS_RTOL, abs=0)
    assert map_gap(ours, theirs) < MAP_RTOL


def sklearn_single(points, start, **settings):
    """scikit-learn's smacof from one start: (map, stress, n_iter)."""
    return smacof(euclidean_distances(points), init=start, n_init=1, return_n_iter=True, **settings)


def torch_single(points, start, **settings):
    model = TorchSMACOF(device="cpu", **settings)
    return model.fit_transform(points, init=start), model.stress_, model.n_iter_


def assert_stop_is_not_a_rounding_accident(points, start, max_iter=300) -> None:
    """scikit-learn stops at the same iteration with eps moved by one part in a million either way."""
    iterations = {sklearn_single(points, start, max_iter=max_iter, eps=EPS * factor, normalized_stress=False)[2]
                  for factor in (1 - 1e-6, 1, 1 + 1e-6)}
    assert len(iterations) == 1, iterations


def random_start(n, seed):
    return np.random.RandomState(seed).uniform(size=(n, 2))


@pytest.mark.parametrize("normalized_stress", [False, True])
def test_from_the_same_start_it_is_sklearns_smacof(points, normalized_stress):
    start = random_start(len(points), 0)
    assert_stop_is_not_a_rounding_accident(points, start)
    settings = dict(max_iter=300, eps=EPS, normalized_stress=normalized_stress)
    theirs = sklearn_single(points, start, **settings)
    assert theirs[2] < 300  # stopped by eps, the test this compares
    assert_same_smacof(torch_single(points, start, **settings), theirs)


def test_a_run_cut_by_max_iter_matches_too(points):
    start = random_start(len(points), 1)
    theirs = sklearn_single(points, start, max_iter=12, eps=EPS, normalized_stress=False)
    assert theirs[2] == 12
    assert_same_smacof(torch_single(points, start, max_iter=12, eps=EPS), theirs)


def test_a_perturbed_guttman_step_breaks_the_comparison(points, monkeypatch):
    """The comparison can fail: every update scaled by 1 + 1e-7 is caught."""
    start = random_start(len(points), 0)
    theirs = sklearn_single(points, start, max_iter=300, eps=EPS, normalized_stress=False)
    exact = guttman_transform
    monkeypatch.setattr(torch_smacof, "guttman_transform", lambda X, D, d: exact(X, D, d) * (1 + 1e-7))
    with pytest.raises(AssertionError):
        assert_same_smacof(torch_single(points, start, max_iter=300, eps=EPS), theirs)


def test_one_iteration_more_breaks_the_comparison(points):
    start = random_start(len(points), 1)
    theirs = sklearn_single(points, start, max_iter=12, eps=EPS, normalized_stress=False)
    with pytest.raises(AssertionError):
        assert_same_smacof(torch_single(points, start, max_iter=13, eps=EPS), theirs)


def test_each_start_stops_on_its_own_and_the_best_is_sklearns_choice(points):
    """Starts given as one batch: each as scikit-learn runs it alone, the lowest stress wins.

    The batch is ordered so that the best start sits in the middle, and holds one start twice
    (equal stresses: the first of them counts, as in scikit-learn).
    """
    starts = [random_start(len(points), seed) for seed in range(4)]
    for start in starts:
        assert_stop_is_not_a_rounding_accident(points, start)
    alone = [sklearn_single(points, start, max_iter=300, eps=EPS, normalized_stress=False) for start in starts]
    assert len({result[2] for result in alone}) > 1  # the starts stop at different iterations
    ranked = np.argsort([result[1] for result in alone])
    order = [ranked[1], ranked[0], ranked[2], ranked[0]]  # best second, and again fourth
    model = TorchSMACOF(device="cpu", max_iter=300, eps=EPS).fit(points, init=np.stack([starts[k] for k in order]))
    assert model.best_start_ == 1
    for position, k in enumerate(order):
        assert model.start_n_iter_[position] == alone[k][2]
        assert model.start_stress_[position] == pytest.approx(alone[k][1], rel=STRESS_RTOL, abs=0)
    assert_same_smacof((model.embedding_, model.stress_, model.n_iter_), alone[ranked[0]])


@pytest.mark.parametrize("n_jobs, draws", [(None, "serial"), (2, "seeded")])
def test_a_seed_gives_sklearns_mds(points, n_jobs, draws):
    """Random starts as scikit-learn draws them: serially (n_jobs=None) or one seed per start."""
    model = TorchSMACOF(device="cpu", n_init=4, max_iter=300, eps=EPS, random_state=3, n_jobs=n_jobs).fit(points)
    for start in draw_random_starts(len(points), 2, 4, 3, draws):
        assert_stop_is_not_a_rounding_accident(points, start)
    # scikit-learn's parallel branch in threads: the same seeds and starts as in processes.
    with parallel_config(backend="threading"):
        reference = MDS(n_init=4, init="random", max_iter=300, eps=EPS, random_state=3, n_jobs=n_jobs,
                        normalized_stress=False).fit(points)
    assert model.init_draws_ == draws
    assert_same_smacof((model.embedding_, model.stress_, model.n_iter_),
                       (reference.embedding_, reference.stress_, reference.n_iter_))


def test_the_two_ways_of_drawing_give_other_starts():
    serial, seeded = (draw_random_starts(50, 2, 3, 11, draws) for draws in ("serial", "seeded"))
    assert serial.shape == seeded.shape == (3, 50, 2)
    assert not np.allclose(serial, seeded)
    assert not np.allclose(serial[0], serial[1])


def test_the_same_seed_gives_the_same_map_and_another_seed_another(points):
    fit = lambda seed: TorchSMACOF(device="cpu", n_init=2, max_iter=50, random_state=seed).fit_transform(points)
    first, again, other = fit(5), fit(5), fit(6)
    np.testing.assert_array_equal(first, again)
    assert map_gap(other, first) > 1e-3


def test_classical_mds_start_and_precomputed_dissimilarities_match_sklearn(points):
    reference = MDS(n_init=1, init="classical_mds", max_iter=300, eps=EPS, normalized_stress=False).fit(points)
    model = TorchSMACOF(device="cpu", init="classical_mds", max_iter=300, eps=EPS).fit(points)
    assert model.init_draws_ == "classical_mds"
    assert_same_smacof((model.embedding_, model.stress_, model.n_iter_),
                       (reference.embedding_, reference.stress_, reference.n_iter_))
    precomputed = TorchSMACOF(device="cpu", init="classical_mds", metric="precomputed", max_iter=300, eps=EPS)
    precomputed.fit(euclidean_distances(points))
    assert_same_smacof((precomputed.embedding_, precomputed.stress_, precomputed.n_iter_),
                       (reference.embedding_, reference.stress_, reference.n_iter_))


def test_guttman_step_treats_a_zero_map_distance_as_sklearn_does():
    """Two points on top of each other in the map (an off-diagonal distance of exactly 0) count as 1e-5 apart."""
    rng = np.random.default_rng(3)
    X = rng.uniform(size=(6, 2))
    X[4] = X[1]
    D = euclidean_distances(rng.normal(size=(6, 3)))
    distances = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    assert distances[1, 4] == 0
    # scikit-learn's Guttman transform, as _smacof_single writes it
    replaced = distances.copy()
    replaced[replaced == 0] = 1e-5
    ratio = D / replaced
    B = -ratio
    B[np.arange(6), np.arange(6)] += ratio.sum(axis=1)
    expected = 1.0 / 6 * B @ X
    ours = guttman_transform(torch.as_tensor(X)[None], torch.as_tensor(D), torch.as_tensor(distances)[None].clone())[0]
    # D / 1e-5 is ~1e5 here, so both sides cancel terms of that size: agreement to ~1e-11.
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-9)


def test_float32_gives_nearly_the_float64_stress(points):
    settings = dict(device="cpu", n_init=2, max_iter=100, random_state=0)
    double = TorchSMACOF(**settings).fit(points)
    single = TorchSMACOF(dtype="float32", **settings).fit(points)
    assert single.stress_ == pytest.approx(double.stress_, rel=1e-3)
    assert single.embedding_.dtype == np.float64


def test_it_is_a_scikit_learn_estimator_with_clear_errors(points):
    model = TorchSMACOF(n_init=2, random_state=0, device="cpu")
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert model.fit(points[:20]) is model
    assert model.embedding_.shape == (20, 2) and model.embedding_.dtype == np.float64
    assert model.n_features_in_ == 8 and model.start_stress_.shape == (2,)
    for bad, message in [({"metric_mds": False}, "metric MDS only"), ({"init": "pca"}, "init must be"),
                         ({"dtype": "float16"}, "dtype must be"), ({"n_init": 0}, "n_init must be"),
                         ({"metric": "cosine"}, "metric must be")]:
        with pytest.raises(ValueError, match=message):
            TorchSMACOF(**bad).fit(points[:20])
    with pytest.raises(ValueError, match="init must have shape"):
        TorchSMACOF().fit(points[:20], init=np.zeros((19, 2)))


def test_progress_reports_each_start_and_beats_while_running(points, caplog, monkeypatch):
    monkeypatch.setattr("reduction.torch_places.common.HEARTBEAT_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="sign_mnist_lab"):
        TorchSMACOF(device="cpu", n_init=3, max_iter=20, random_state=0).fit(points)
    lines = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("SMACOF: 3 start(s) on 90 rows") for line in lines)
    for start in (1, 2, 3):
        assert any(line.startswith(f"SMACOF start {start}/3: stress ") and "after 20 iterations" in line for line in lines)
    assert any(line.startswith("SMACOF iteration 5/20") for line in lines)


@pytest.mark.gpu
@requires_cuda
def test_on_cuda_from_the_same_start_it_is_sklearns_smacof(points):
    start = random_start(len(points), 0)
    settings = dict(max_iter=300, eps=EPS, normalized_stress=False)
    model = TorchSMACOF(device="cuda", max_iter=300, eps=EPS)
    ours = model.fit_transform(points, init=start), model.stress_, model.n_iter_
    assert_same_smacof(ours, sklearn_single(points, start, **settings))
