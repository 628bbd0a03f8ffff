"""The seven reduction estimators are scikit-learn estimators (backend="sklearn", small data).

clone and get/set_params, fitted attributes (``estimator_``, ``place_``), Pipeline, GridSearchCV
and cross_val_score with real scikit-learn objects, and scikit-learn's own estimator checks
(``parametrize_with_checks``) with the parameters and expected failures kept next to each
estimator (``reduction.estimators.CHECK_PARAMS`` / ``EXPECTED_FAILED_CHECKS``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone, is_classifier, is_clusterer
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import estimator_checks_generator, parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from datamodules.synthetic import synthetic_arrays
from reduction.estimators import (
    ESTIMATORS,
    EXPECTED_FAILED_CHECKS,
    LLE,
    MDS,
    PCA,
    TSNE,
    GaussianMixture,
    KMeans,
    RandomForest,
    check_instance,
)

pytestmark = pytest.mark.usefixtures("single_thread")

IDS = [cls.__name__ for cls in ESTIMATORS]


@pytest.fixture(scope="module")
def blobs():
    """Four well-separated blobs in 6-D, 96 rows (float64)."""
    X, y = make_blobs(n_samples=96, n_features=6, centers=4, cluster_std=0.8, center_box=(-10, 10), random_state=5)
    return X, y


@pytest.fixture(scope="module")
def letters():
    """Synthetic Sign-MNIST rows: 144 images of 784 pixels, 6 of each of the 24 letters."""
    return synthetic_arrays(144, seed=0)


# ---- clone, get_params / set_params ---------------------------------------------------------


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_clone_and_params_round_trip(cls):
    estimator = check_instance(cls)
    params = estimator.get_params()
    assert params["backend"] == "sklearn"
    copy = clone(estimator)
    assert type(copy) is cls and copy is not estimator
    assert copy.get_params() == params
    assert estimator.set_params(**params) is estimator
    assert estimator.get_params() == params
    estimator.set_params(random_state=3, backend="auto")
    assert estimator.get_params()["random_state"] == 3 and estimator.backend == "auto"
    assert clone(estimator).get_params() == estimator.get_params()
    with pytest.raises(ValueError, match="Invalid parameter"):
        estimator.set_params(no_such_parameter=1)
    assert repr(estimator).startswith(f"{cls.__name__}(")


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_fit_returns_self_with_estimator_and_place(cls, blobs):
    X, y = blobs
    estimator = check_instance(cls).set_params(random_state=0)
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    assert estimator.fit(X, y) is estimator
    check_is_fitted(estimator)
    # scikit-learn on the CPU; the CPU's MDS is the torch SMACOF (reduction/backend.py's table)
    package = {"sklearn": "sklearn.", "torch-cpu": "reduction.torch_places."}[estimator.place_]
    assert type(estimator.estimator_).__module__.startswith(package)
    assert estimator.n_features_in_ == X.shape[1]
    for old_name in ("backend_", "model_", "_model"):
        assert not hasattr(estimator, old_name)
    # A clone is unfitted: methods that need the fit say so.
    unfitted = clone(estimator)
    for method, args in (("predict", (X,)), ("transform", (X,)), ("score", (X, y))):
        if hasattr(unfitted, method):
            with pytest.raises(NotFittedError):
                getattr(unfitted, method)(*args)


def test_method_families_match_scikit_learns():
    assert is_classifier(RandomForest()) and is_clusterer(KMeans())
    assert get_tags(GaussianMixture()).estimator_type == "density_estimator"
    for cls in (PCA, KMeans, LLE):
        assert hasattr(cls, "transform") and hasattr(cls, "fit_transform")
    for cls in (TSNE, MDS):  # no out-of-sample mapping, as in scikit-learn
        assert not hasattr(cls, "transform") and hasattr(cls, "fit_transform")


# ---- methods that scikit-learn's tools rely on ----------------------------------------------


def test_forest_predict_proba_and_score(letters):
    X, y = letters
    forest = RandomForest(n_estimators=10, backend="sklearn", random_state=0, n_jobs=1).fit(X, y)
    proba = forest.predict_proba(X)
    assert proba.shape == (len(X), len(forest.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(forest.classes_[proba.argmax(axis=1)], forest.predict(X))
    assert forest.score(X, y) == np.mean(forest.predict(X) == y)


def test_kmeans_transform_predict_and_score(blobs):
    X, _ = blobs
    kmeans = KMeans(4, n_init=3, backend="sklearn", random_state=0).fit(X)
    distances = kmeans.transform(X)
    assert distances.shape == (len(X), 4) and distances.dtype == np.float32
    np.testing.assert_array_equal(distances.argmin(axis=1), kmeans.predict(X))
    assert kmeans.score(X) == pytest.approx(-kmeans.inertia_, rel=1e-4)
    np.testing.assert_array_equal(kmeans.fit_predict(X), kmeans.labels_)
    assert kmeans.get_feature_names_out().tolist() == ["kmeans0", "kmeans1", "kmeans2", "kmeans3"]


def test_mixture_density_methods(blobs):
    X, _ = blobs
    mixture = GaussianMixture(4, n_init=2, backend="sklearn", random_state=0).fit(X)
    per_row = mixture.score_samples(X)
    assert per_row.shape == (len(X),)
    assert mixture.score(X) == pytest.approx(per_row.mean())
    proba = mixture.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1), mixture.predict(X))
    np.testing.assert_array_equal(mixture.fit_predict(X), mixture.labels_)
    assert mixture.aic(X) < mixture.bic(X)
    rows, components = mixture.sample(7)
    assert rows.shape == (7, X.shape[1]) and components.shape == (7,)


def test_pca_refit_with_an_integer_drops_the_fraction_curve(letters):
    X, _ = letters
    pca = PCA(0.9, backend="sklearn").fit(X)
    assert hasattr(pca, "cumulative_variance_")
    pca.set_params(n_components=3).fit(X)
    assert not hasattr(pca, "cumulative_variance_") and pca.n_components_ == 3


def test_data_frames_keep_their_column_names(blobs):
    pd = pytest.importorskip("pandas")
    X, _ = blobs
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    pca = PCA(2, backend="sklearn").set_output(transform="pandas")
    out = pca.fit_transform(frame)
    assert list(out.columns) == ["pca0", "pca1"]
    assert pca.feature_names_in_.tolist() == list(frame.columns)


# ---- Pipeline, GridSearchCV, cross_val_score ------------------------------------------------


def test_pipeline_of_pca_and_forest_scores(letters):
    X, y = letters
    pipeline = make_pipeline(
        PCA(n_components=5, backend="sklearn", random_state=0),
        RandomForest(n_estimators=5, backend="sklearn", random_state=0, n_jobs=1),
    )
    score = pipeline.fit(X, y).score(X, y)
    assert 0.5 < score <= 1.0  # training rows; chance is 1/24
    assert pipeline.predict(X[:3]).shape == (3,)


def test_grid_search_over_forest_sizes(letters):
    X, y = letters
    search = GridSearchCV(RandomForest(backend="sklearn", random_state=0, n_jobs=1), {"n_estimators": [3, 5]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["n_estimators"] in (3, 5)
    assert isinstance(search.best_estimator_, RandomForest) and search.best_estimator_.place_ == "sklearn"
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert 0 <= search.score(X, y) <= 1


def test_cross_val_score_of_a_pca_forest_pipeline(letters):
    X, y = letters
    pipeline = make_pipeline(
        PCA(10, backend="sklearn", random_state=0), RandomForest(30, backend="sklearn", random_state=0, n_jobs=1)
    )
    scores = cross_val_score(pipeline, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,)
    assert scores.mean() > 0.3  # the letters are learnable: chance is 1/24


def test_pca_before_a_scikit_learn_logistic_regression(letters):
    X, y = letters
    pipeline = make_pipeline(PCA(0.9, backend="sklearn"), StandardScaler(), LogisticRegression(max_iter=200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(X, y)
    assert pipeline.score(X, y) > 0.5
    assert pipeline[0].n_components_ < X.shape[1]


def test_grid_search_picks_the_true_number_of_mixture_components(blobs):
    """Without a scorer, GridSearchCV uses GaussianMixture.score: held-out mean log-likelihood."""
    X, _ = blobs
    search = GridSearchCV(GaussianMixture(backend="sklearn", random_state=0), {"n_components": [1, 4]}, cv=3)
    search.fit(X)
    assert search.best_params_ == {"n_components": 4}


def test_grid_search_over_kmeans_clusters(blobs):
    """KMeans.score is the negative inertia of the held-out rows, as in scikit-learn."""
    X, _ = blobs
    search = GridSearchCV(KMeans(n_init=3, backend="sklearn", random_state=0), {"n_clusters": [2, 4]}, cv=3)
    search.fit(X)
    assert search.best_params_ == {"n_clusters": 4}
    assert np.all(search.cv_results_["mean_test_score"] < 0)


def test_lle_maps_new_rows_inside_a_pipeline(blobs):
    X, y = blobs
    pipeline = make_pipeline(LLE(n_neighbors=8, backend="sklearn", random_state=0), KNeighborsClassifier(3))
    scores = cross_val_score(pipeline, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and np.all((0 <= scores) & (scores <= 1))


@pytest.mark.parametrize("cls", [TSNE, MDS], ids=["TSNE", "MDS"])
def test_maps_without_transform_end_a_pipeline(cls, letters):
    X, _ = letters
    pipeline = Pipeline([("pca", PCA(10, backend="sklearn")), ("map", check_instance(cls).set_params(random_state=0))])
    embedding = pipeline.fit_transform(X)
    assert embedding.shape == (len(X), 2) and np.isfinite(embedding).all()
    np.testing.assert_array_equal(embedding, pipeline[-1].embedding_)
    name = cls.__name__.lower()
    assert pipeline[-1].get_feature_names_out().tolist() == [f"{name}0", f"{name}1"]


# ---- scikit-learn's estimator checks --------------------------------------------------------


def _expected_failures(estimator) -> dict[str, str]:
    return EXPECTED_FAILED_CHECKS[type(estimator).__name__]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_expected_failures_name_real_checks_with_reasons(cls):
    estimator = check_instance(cls)
    expected = _expected_failures(estimator)
    ran = {
        getattr(check, "func", check).__name__
        for _, check in estimator_checks_generator(estimator, legacy=True, expected_failed_checks=expected, mark=None)
    }
    assert set(expected) <= ran
    assert all(isinstance(reason, str) and len(reason) > 20 for reason in expected.values())


@parametrize_with_checks([check_instance(cls) for cls in ESTIMATORS], expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
