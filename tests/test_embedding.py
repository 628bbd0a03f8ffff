"""The 2-D map estimators (reduction.estimators.embedding), their scores (reduction.scores) and the
study's pieces (reduction.studies.embed)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from conftest import requires_cuml

from datamodules.splits import PRESENT_LABELS, reference_sample
from datamodules.synthetic import synthetic_arrays
from reduction.estimators.embedding import (
    LLE,
    MDS,
    REFERENCE_MDS,
    RELATIVE_TEST_EPS,
    TSNE,
    cuml_tsne_kwargs,
    iteration_parameter_name,
    reference_mds_eps,
    sklearn_auto_learning_rate,
    sklearn_mds_kwargs,
)
from reduction.scores import knn_accuracy, sample_positions, trustworthiness_on_sample
from reduction.studies.embed import (
    FULL,
    LETTER_COLOURS,
    QUICK,
    label_colours,
    map_rows,
    place_thumbnails,
    plot_thumbnails,
    thumbnail_layout,
)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def small():
    images, labels = synthetic_arrays(150, seed=3)
    return images.astype(np.float32), labels


# ----------------------------------------------------------------------------- t-SNE


def test_tsne_sklearn_shape_determinism_and_place(small):
    X, _ = small
    first = TSNE(max_iter=250, random_state=5, backend="sklearn")
    a = first.fit_transform(X)
    b = TSNE(max_iter=250, random_state=5, backend="sklearn").fit_transform(X)
    c = TSNE(max_iter=250, random_state=6, backend="sklearn").fit_transform(X)
    assert a.shape == (150, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert first.place_ == "sklearn"
    assert first.params_["init"] == "random" and first.params_["learning_rate"] == "auto"
    assert first.params_["max_iter"] == 250 and first.params_["random_state"] == 5
    assert first.learning_rate_ == 50.0  # 150 / 12 / 4 < 50
    assert first.kl_divergence_ is not None and first.kl_divergence_ > 0
    assert first.fit(X) is first


def test_tsne_rejects_fewer_iterations_than_the_exploration_phase(small):
    with pytest.raises(ValueError, match="max_iter must be >= 250"):
        TSNE(max_iter=100, backend="sklearn").fit(small[0])


def test_auto_learning_rate_is_scikit_learns():
    assert sklearn_auto_learning_rate(21964) == pytest.approx(21964 / 12 / 4)
    assert sklearn_auto_learning_rate(21964, early_exaggeration=24.0) == pytest.approx(21964 / 24 / 4)
    assert sklearn_auto_learning_rate(1000) == 50.0


def test_cuml_tsne_kwargs_mean_what_scikit_learns_mean():
    kwargs = cuml_tsne_kwargs(21964, max_iter=1000, random_state=22)
    # cuML's gradient lacks scikit-learn's factor 4: the same step needs 4x the rate.
    assert kwargs["learning_rate"] == pytest.approx(4 * 21964 / 12 / 4)
    assert kwargs["learning_rate_method"] == "none"  # no size-based overrides
    assert kwargs["max_iter"] == 1000 and "n_iter" not in kwargs
    assert kwargs["n_components"] == 2 and kwargs["init"] == "random" and kwargs["random_state"] == 22
    assert kwargs["perplexity"] == 30.0 and kwargs["early_exaggeration"] == 12.0
    assert kwargs["n_neighbors"] == 91  # scikit-learn: int(3 * perplexity + 1)
    assert kwargs["exaggeration_iter"] == 250
    assert (kwargs["pre_momentum"], kwargs["post_momentum"]) == (0.5, 0.8)
    assert kwargs["metric"] == "euclidean" and kwargs["square_distances"] is True

    small = cuml_tsne_kwargs(60, max_iter=300, learning_rate="auto", iteration_name="n_iter")
    assert small["learning_rate"] == 4 * 50.0  # the floor of 50, in cuML's units
    assert small["n_iter"] == 300 and "max_iter" not in small
    assert small["n_neighbors"] == 59
    assert cuml_tsne_kwargs(1000, learning_rate=300.0)["learning_rate"] == 1200.0


# cuml.manifold.TSNE.__init__'s parameters in cuML 26.02-26.10 (read from its source).
CUML_26_TSNE_PARAMETERS = {
    *("n_components", "perplexity", "early_exaggeration", "late_exaggeration", "learning_rate"),
    *("max_iter", "n_iter_without_progress", "min_grad_norm", "metric", "metric_params", "init"),
    *("random_state", "method", "angle", "n_neighbors", "perplexity_max_iter", "exaggeration_iter"),
    *("pre_momentum", "post_momentum", "learning_rate_method", "square_distances", "precomputed_knn"),
    *("verbose", "output_type"),
}


def test_cuml_tsne_kwargs_are_all_cuml_26_parameters():
    assert set(cuml_tsne_kwargs(5000, random_state=1)) <= CUML_26_TSNE_PARAMETERS


def test_iteration_parameter_name_follows_the_cuml_version():
    assert iteration_parameter_name(["perplexity", "max_iter"]) == "max_iter"  # cuML >= 25.12
    assert iteration_parameter_name(["perplexity", "n_iter"]) == "n_iter"  # cuML < 25.12
    assert iteration_parameter_name([]) == "max_iter"


# ----------------------------------------------------------------------------- LLE


def test_lle_shape_determinism_and_place():
    X, _ = synthetic_arrays(120, seed=4)
    model = LLE(n_neighbors=10, random_state=1, backend="sklearn")
    a = model.fit_transform(X)
    b = LLE(n_neighbors=10, random_state=1, backend="sklearn").fit_transform(X)
    assert a.shape == (120, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert model.place_ == "sklearn"
    assert model.params_["n_neighbors"] == 10 and model.params_["random_state"] == 1
    assert model.params_["method"] == "standard" and model.params_["reg"] == 1e-3


def _singular_shift_invert(*args, **kwargs):
    # What SciPy's eigsh raises when the LU factor of M - sigma*I is exactly singular (ARPACK's
    # shift-invert mode); scikit-learn turns it into a ValueError naming ARPACK. Whether real data
    # provokes it depends on the CPU and the LAPACK build, so the test provokes it on purpose.
    raise RuntimeError("Factor is exactly singular")


def test_lle_falls_back_to_the_dense_solver_when_arpack_fails(monkeypatch):
    import sklearn.manifold._locally_linear as sklearn_lle

    monkeypatch.setattr(sklearn_lle, "eigsh", _singular_shift_invert)
    X, _ = synthetic_arrays(300, seed=0)  # above 200 rows, so "auto" picks ARPACK first
    model = LLE(random_state=0, backend="sklearn")
    embedding = model.fit_transform(X)
    assert model.params_["eigen_solver"] == "dense"
    assert embedding.shape == (300, 2) and np.isfinite(embedding).all()
    with pytest.raises(ValueError, match="ARPACK"):  # beyond dense_fallback_rows the error stands
        LLE(random_state=0, backend="sklearn", dense_fallback_rows=100).fit(X)


def test_lle_retries_only_arpack_failures(monkeypatch):
    import sklearn.manifold._locally_linear as sklearn_lle

    monkeypatch.setattr(sklearn_lle, "eigsh", _singular_shift_invert)
    X, _ = synthetic_arrays(300, seed=0)
    with pytest.raises(ValueError, match="n_neighbors"):  # any other error is the user's to see
        LLE(n_neighbors=400, random_state=0, backend="sklearn").fit(X)


# ----------------------------------------------------------------------------- MDS


def test_mds_reference_parameters_are_explicit_and_silent(cpu_mds_place):
    X, _ = synthetic_arrays(50, seed=2)
    model = MDS(random_state=3, backend="sklearn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "init will change" / deprecation warnings
        a = model.fit_transform(X)
    b = MDS(random_state=3, backend="sklearn").fit_transform(X)
    assert a.shape == (50, 2)
    np.testing.assert_array_equal(a, b)
    assert model.place_ == cpu_mds_place
    import sklearn

    expected = {**REFERENCE_MDS, "eps": reference_mds_eps(sklearn.__version__), "random_state": 3}
    if cpu_mds_place == "torch-cpu":  # scikit-learn's relative stopping test, in float64 on the CPU
        expected.update(eps=RELATIVE_TEST_EPS, device="cpu", dtype="float64")
    assert model.params_ == expected
    # scikit-learn 1.2's values, whatever the installed defaults are.
    assert expected["n_init"] == 4 and expected["init"] == "random" and expected["metric_mds"] is True
    assert expected["max_iter"] == 300 and expected["normalized_stress"] is False and expected["n_jobs"] is None
    assert model.stress_ > 0 and 1 <= model.n_iter_ <= 300
    assert 0 < model.stress_1_ < 1
    assert model.init_draws_ == "serial"


@pytest.mark.parametrize("n_jobs", [1, 2, -1])
def test_mds_in_parallel_draws_one_seed_per_init_whatever_the_worker_count(n_jobs, cpu_mds_place):
    """n_jobs set: scikit-learn's parallel branch (one seed per init, drawn from random_state
    first) for any worker count, one included, so the map depends on the seed only; it is the
    best of n_init single runs started from those seeds, and not the serial loop's map. The
    torch SMACOF draws its starts so too."""
    from sklearn.utils import check_random_state

    X, _ = synthetic_arrays(40, seed=2)
    params = dict(n_init=3, max_iter=60, random_state=5, backend="sklearn")
    parallel = MDS(**params, n_jobs=n_jobs)
    embedding = parallel.fit_transform(X)
    assert parallel.init_draws_ == "seeded" and parallel.params_["n_jobs"] >= 2
    assert parallel.params_["n_init"] == 3 and parallel.params_["max_iter"] == 60 and parallel.params_["eps"] > 0

    seeds = check_random_state(5).randint(np.iinfo(np.int32).max, size=3)
    singles = [MDS(n_init=1, max_iter=60, random_state=int(seed), backend="sklearn") for seed in seeds]
    maps = [single.fit_transform(X) for single in singles]
    best = int(np.argmin([single.stress_ for single in singles]))
    np.testing.assert_allclose(embedding, maps[best], rtol=1e-9, atol=1e-9 * np.abs(maps[best]).max())
    assert parallel.stress_ == pytest.approx(singles[best].stress_, rel=1e-9)

    serial = MDS(**params).fit_transform(X)
    assert not np.allclose(embedding, serial)  # other random starts than the serial loop


def test_mds_refuses_zero_workers():
    with pytest.raises(ValueError):
        MDS(n_jobs=0, backend="sklearn").fit(synthetic_arrays(20, seed=0)[0])


def test_reference_mds_eps_follows_the_convergence_test():
    assert reference_mds_eps("1.2.2") == 1e-3
    assert reference_mds_eps("1.6.1") == 1e-3
    assert reference_mds_eps("1.7.0") == 1e-6
    assert reference_mds_eps("1.9.1") == 1e-6


def test_mds_kwargs_in_the_spelling_of_older_scikit_learns():
    old = sklearn_mds_kwargs({"n_components", "metric", "n_init", "max_iter", "eps"}, "1.6.1", 22)
    assert old["metric"] is True and "metric_mds" not in old and "init" not in old
    assert old["n_init"] == 4 and old["eps"] == 1e-3 and old["random_state"] == 22


# ----------------------------------------------------------------------------- scores


def test_trustworthiness_and_knn_accuracy():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 2))
    assert trustworthiness_on_sample(points, points, n_sample=100, seed=1) == pytest.approx(1.0)
    centres = np.repeat(np.arange(3) * 100.0, 40)
    labels = np.repeat(np.arange(3), 40)
    separated = np.column_stack([centres, np.zeros(120)]) + rng.normal(size=(120, 2))
    assert knn_accuracy(separated, labels, seed=0) == 1.0
    assert knn_accuracy(separated[:41], labels[:41]) is None  # one row of class 1: no 2 folds


def test_sample_positions_are_sorted_distinct_and_all_when_asked_for_more():
    rows = sample_positions(100, 30, seed=4)
    assert len(rows) == len(set(rows.tolist())) == 30 and np.all(np.diff(rows) > 0) and rows.max() < 100
    np.testing.assert_array_equal(sample_positions(10, 30, seed=4), np.arange(10))


# ----------------------------------------------------------------------------- study pieces


def _greedy_reference(points, box, limits):
    placed = []
    for i, (x, y) in enumerate(points):
        (x0, x1), (y0, y1) = limits
        if x - box[0] / 2 < x0 or x + box[0] / 2 > x1 or y - box[1] / 2 < y0 or y + box[1] / 2 > y1:
            continue
        if all(abs(x - points[j, 0]) >= box[0] or abs(y - points[j, 1]) >= box[1] for j in placed):
            placed.append(i)
    return placed


def test_thumbnail_placement_never_overlaps_and_is_greedy():
    rng = np.random.default_rng(7)
    points = np.vstack([rng.normal(size=(1500, 2)), rng.uniform(-4, 4, size=(500, 2))])
    box, limits = (0.3, 0.45), ((-3.0, 3.0), (-3.0, 3.0))
    placed = place_thumbnails(points, box, limits)
    assert len(placed) > 20
    for i, j in itertools.combinations(placed, 2):
        assert abs(points[i, 0] - points[j, 0]) >= box[0] or abs(points[i, 1] - points[j, 1]) >= box[1]
    for i in placed:
        assert limits[0][0] <= points[i, 0] - box[0] / 2 and points[i, 0] + box[0] / 2 <= limits[0][1]
        assert limits[1][0] <= points[i, 1] - box[1] / 2 and points[i, 1] + box[1] / 2 <= limits[1][1]
    assert placed.tolist() == _greedy_reference(points, box, limits)


def test_thumbnail_placement_edge_cases():
    touching = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.0, 1.0]])
    assert place_thumbnails(touching, (1.0, 1.0)).tolist() == [0, 1, 3]  # touching is fine
    assert place_thumbnails(np.array([[np.nan, 0.0], [0.0, 0.0]]), (1, 1)).tolist() == [1]
    with pytest.raises(ValueError):
        place_thumbnails(touching, (0.0, 1.0))


def test_thumbnail_layout_and_figure(tmp_path):
    images, labels = synthetic_arrays(200, seed=1)
    embedding = np.random.default_rng(0).normal(size=(200, 2))
    layout = thumbnail_layout(embedding, per_axis=10)
    (xmin, xmax), (ymin, ymax) = layout.limits
    assert layout.box == pytest.approx(((xmax - xmin) / 10, (ymax - ymin) / 10))
    assert 1 <= len(layout.chosen) <= 100
    assert layout.chosen.tolist() == place_thumbnails(embedding, layout.box, layout.limits).tolist()
    path = plot_thumbnails(embedding, images, labels, layout, "test", tmp_path / "t.png")
    assert path == tmp_path / "t.png" and path.stat().st_size > 1000


def test_thumbnail_window_ignores_far_outliers():
    embedding = np.vstack([np.random.default_rng(0).normal(size=(1000, 2)), [[1e6, -1e6]]])
    (xmin, xmax), (ymin, ymax) = thumbnail_layout(embedding).limits
    assert xmax < 100 and ymin > -100  # the outlier is outside the window, not shrinking it


def test_letter_colours_are_24_distinct_colours():
    from matplotlib.colors import to_rgb

    palette = np.asarray([to_rgb(colour) for colour in LETTER_COLOURS])
    assert palette.shape == (24, 3) == (len(PRESENT_LABELS), 3)
    gaps = [np.linalg.norm(a - b) for a, b in itertools.combinations(palette, 2)]
    assert min(gaps) > 0.15  # in RGB units of 0..1 (about 28 in CIELAB)
    colours = label_colours(PRESENT_LABELS)
    assert len({tuple(c) for c in colours}) == 24


def test_profiles_and_rows():
    assert FULL.map_rows is None and FULL.mds_rows == 5000 and FULL.tsne_max_iter == 1000
    assert QUICK.tsne_max_iter >= 250 and QUICK.map_rows < 21964
    np.testing.assert_array_equal(map_rows("tsne", 21964, FULL, 22), np.arange(21964))
    np.testing.assert_array_equal(map_rows("mds", 21964, FULL, 22), reference_sample(21964, 5000, 22))
    np.testing.assert_array_equal(map_rows("lle", 21964, QUICK, 22), reference_sample(21964, 2000, 22))
    assert len(map_rows("mds", 300, QUICK, 22)) == 300  # fewer rows than asked: all of them


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@requires_cuml
def test_cuml_tsne_on_a_small_array():
    X, labels = synthetic_arrays(600, seed=0)
    model = TSNE(max_iter=500, random_state=22, backend="cuml")
    embedding = model.fit_transform(X)
    assert model.place_ == "cuml"
    assert embedding.shape == (600, 2) and np.isfinite(embedding).all()
    assert model.params_["learning_rate_method"] == "none"
    assert model.params_["learning_rate"] == pytest.approx(4 * 50.0)
    # The synthetic letters are well separated: a working t-SNE keeps them apart.
    assert trustworthiness_on_sample(X, embedding, n_sample=600) > 0.9
    assert knn_accuracy(embedding, labels) > 0.9


@pytest.mark.gpu
@requires_cuml
def test_lle_and_mds_run_elsewhere_on_the_cuml_backend():
    """cuML has neither: LLE runs with scikit-learn, MDS with the torch SMACOF (on torch's CUDA device)."""
    X, _ = synthetic_arrays(60, seed=0)
    lle, mds = LLE(random_state=0, backend="cuml"), MDS(random_state=0, backend="cuml")
    lle.fit(X)
    mds.fit(X)
    assert lle.place_ == "sklearn" and mds.place_ in ("torch-cuda", "torch-cpu")
