"""reduction.PCA on scikit-learn (synthetic data), and the 95% count on the real training part."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import requires_cuml
from sklearn.decomposition import PCA as SklearnPCA

from datamodules.synthetic import synthetic_arrays
from reduction.estimators import PCA


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def images():
    return synthetic_arrays(200, seed=3)[0]


def test_fraction_picks_the_fewest_components_reaching_it(images):
    pca = PCA(0.95, backend="sklearn", random_state=0).fit(images)
    assert pca.place_ == "sklearn"
    assert pca.n_components_ == SklearnPCA(0.95).fit(images.astype(np.float32)).n_components_
    cumulative = pca.cumulative_variance_
    assert len(cumulative) == min(images.shape)
    assert np.all(np.diff(cumulative) >= -1e-6)
    assert cumulative[-1] == pytest.approx(1.0, abs=1e-4)
    assert cumulative[pca.n_components_ - 1] >= 0.95 > cumulative[pca.n_components_ - 2]
    np.testing.assert_allclose(pca.explained_variance_ratio_, np.diff(cumulative, prepend=0)[: pca.n_components_], atol=1e-4)


def test_integer_keeps_that_many_components(images):
    pca = PCA(5, backend="sklearn", random_state=0).fit(images)
    assert pca.n_components_ == 5
    assert pca.components_.shape == (5, images.shape[1])
    assert pca.explained_variance_ratio_.shape == (5,)
    assert not hasattr(pca, "cumulative_variance_")


def test_transform_and_inverse_transform_shapes(images):
    pca = PCA(0.9, backend="sklearn", random_state=0)
    Z = pca.fit_transform(images)
    assert Z.shape == (len(images), pca.n_components_)
    restored = pca.inverse_transform(Z)
    assert restored.shape == images.shape
    # the kept components explain 90% of the variance, so the reconstruction is close
    residual = np.sum((restored - images) ** 2) / np.sum((images - images.mean(axis=0)) ** 2)
    assert residual <= 0.1 + 1e-3


@pytest.mark.parametrize("n_components", [0, 0.0, 1.0, 1.5, -3, 10**6])
def test_impossible_n_components_is_refused(images, n_components):
    with pytest.raises(ValueError, match="n_components"):
        PCA(n_components, backend="sklearn").fit(images)


@pytest.mark.slow
def test_real_training_part_needs_113_components_for_95_percent(real_data_dir):
    from datamodules import REDUCTION_VAL_FRACTION, load_splits

    splits = load_splits(real_data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=22)
    pca = PCA(0.95, backend="sklearn", random_state=22).fit(splits.train_images)
    assert len(splits.train_images) == 21964
    assert pca.n_components_ == 113


@pytest.mark.gpu
@requires_cuml
def test_cuml_pca_agrees_with_scikit_learn(images):
    gpu = PCA(0.95, backend="cuml", random_state=0).fit(images)
    cpu = PCA(0.95, backend="sklearn", random_state=0).fit(images)
    assert gpu.place_ == "cuml"
    assert abs(gpu.n_components_ - cpu.n_components_) <= 1
    np.testing.assert_allclose(gpu.cumulative_variance_, cpu.cumulative_variance_, atol=1e-3)
    assert gpu.inverse_transform(gpu.transform(images)).shape == images.shape
