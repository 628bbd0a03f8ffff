"""The unsupervised studies' settings that the command line checks before anything heavy loads.

Pure Python (no NumPy, scikit-learn or cuML), so that a script answers ``--help``, a bad flag or
a bad value at once. The modules that use these names import them from here:
:mod:`reduction.studies.embed` (the maps), :mod:`reduction.cluster_sweeps` (k lists) and
:mod:`reduction.forest_grid` (grid axes).
"""

from __future__ import annotations

# The 2-D maps of reduction.studies.embed, in the order they are made.
MAP_METHODS = ("pca", "tsne", "lle", "mds")


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


def grid_axis(values, name: str) -> tuple[int, ...]:
    """A sorted tuple of distinct positive integers; a ValueError names the axis otherwise."""
    try:
        axis = tuple(sorted({int(v) for v in values}))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be positive integers, got {values!r}") from None
    if not axis:
        raise ValueError(f"{name} is empty")
    if axis[0] < 1:
        raise ValueError(f"{name} must be positive integers, got {list(axis)}")
    return axis
