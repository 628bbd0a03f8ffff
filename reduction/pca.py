"""PCA on cuML or scikit-learn, with scikit-learn's meaning of ``n_components``."""

from __future__ import annotations

import numpy as np

from reduction.backend import implementation, select_backend, to_numpy


class PCA:
    """Principal component analysis.

    ``n_components`` is an integer (that many components) or a float in (0, 1) (the fewest
    components that explain at least that fraction of the variance), as in scikit-learn. cuML's
    PCA takes only integers, so on cuML a fraction is resolved from a full fit first.

    Fitted attributes: ``n_components_``, ``components_``, ``mean_``,
    ``explained_variance_ratio_`` (of the kept components), ``cumulative_variance_``
    (of all components, when ``n_components`` is a fraction), ``backend_`` (where it ran).
    """

    def __init__(self, n_components=0.95, backend: str = "auto", random_state=None) -> None:
        self.n_components = n_components
        self.backend = backend
        self.random_state = random_state

    def fit(self, X, y=None) -> "PCA":
        X = np.asarray(X, dtype=np.float32)
        backend = select_backend(self.backend)
        factory, self.backend_ = implementation("pca", backend)
        n = self.n_components
        is_fraction = isinstance(n, float) and 0 < n < 1
        if not is_fraction and not (isinstance(n, (int, np.integer)) and 1 <= n <= min(X.shape)):
            raise ValueError(f"n_components must be in (0, 1) or 1..{min(X.shape)}, got {n!r}")
        if is_fraction:
            # A full fit gives the whole spectrum (for the cumulative-variance curve) and the
            # component count; cuML's PCA takes only integers, so both backends go this way.
            full = factory(n_components=min(X.shape), svd_solver="full", random_state=self.random_state).fit(X)
            ratios = to_numpy(full.explained_variance_ratio_)
            self.cumulative_variance_ = np.cumsum(ratios)
            n = _components_for(ratios, self.n_components)
        # An exact solver on the refit too: a randomized one could keep the same number of
        # components yet explain slightly less than the fraction asked for.
        self._model = factory(n_components=int(n), svd_solver="full", random_state=self.random_state).fit(X)
        self.components_ = to_numpy(self._model.components_)
        self.mean_ = to_numpy(self._model.mean_)
        self.explained_variance_ratio_ = to_numpy(self._model.explained_variance_ratio_)
        self.n_components_ = len(self.components_)
        return self

    def transform(self, X) -> np.ndarray:
        return to_numpy(self._model.transform(np.asarray(X, dtype=np.float32)))

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, Z) -> np.ndarray:
        return to_numpy(self._model.inverse_transform(np.asarray(Z, dtype=np.float32)))


def _components_for(ratios: np.ndarray, fraction: float) -> int:
    """The fewest leading components whose variance ratios sum to at least ``fraction``."""
    # side="right" as scikit-learn does: a cumulative sum exactly at the fraction takes one more.
    return int(np.searchsorted(np.cumsum(ratios), fraction, side="right") + 1)
