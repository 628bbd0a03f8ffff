"""Input checks: cuML's ``check_random_seed`` (cuML 26.10,
python/cuml/cuml/internals/validation.py), and the inputs the project promises cuML."""

from __future__ import annotations

import numbers

import numpy as np


def check_random_seed(random_state) -> int:
    """cuML's: None, an int in [0, 2**32) or a RandomState; ValueError / TypeError otherwise."""
    if isinstance(random_state, numbers.Integral):
        if random_state < 0 or random_state >= 2**32:
            raise ValueError(f"Expected `0 <= random_state <= 2**32 - 1`, got {random_state}")
        return int(random_state)
    if random_state is None:
        randint = np.random.randint
    elif isinstance(random_state, np.random.RandomState):
        randint = random_state.randint
    else:
        raise TypeError(
            f"`random_state` must be an `int`, an instance of `RandomState`, or `None`. Got {random_state!r} instead."
        )
    return int(randint(low=0, high=2**32, dtype=np.uint32))


def check_features(X, who: str, ensure_min_samples: int = 1, ensure_min_features: int = 1, n_features=None):
    """The project's promise to cuML: features are a 2-D float32 NumPy array (cuML itself would
    convert float64 and others; the project hands it float32, its working type). Then cuML's own
    ``check_inputs`` minimums (ValueError, as cuML raises them)."""
    if not isinstance(X, np.ndarray) or X.dtype != np.float32:
        raise TypeError(f"cuML stand-in {who}: features must be a float32 NumPy array, got "
                        f"{type(X).__name__} of {getattr(X, 'dtype', None)}")
    if X.ndim != 2:
        raise ValueError(f"{who}: expected a 2-D array, got {X.ndim}-D")
    if X.shape[0] < ensure_min_samples:
        raise ValueError(f"Found array with {X.shape[0]} sample(s) while a minimum of {ensure_min_samples} is required.")
    if X.shape[1] < ensure_min_features:
        raise ValueError(f"Found array with {X.shape[1]} feature(s) while a minimum of {ensure_min_features} is required.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but {who} is expecting {n_features} features as input.")
    return X

