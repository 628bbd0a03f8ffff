"""The three studies behind ``scripts/``, built one way.

* :mod:`reduction.studies.pca_forest`: the 95% PCA and random-forest grids with and without it.
* :mod:`reduction.studies.embed`: 2-D maps (PCA, t-SNE, LLE, MDS), their figures and scores.
* :mod:`reduction.studies.cluster`: K-Means and Gaussian mixtures on PCA features of a sample.

Each module has a frozen ``Profile`` dataclass with ``FULL`` and ``QUICK`` instances, one entry
point ``run(profile, data, out_dir, backend, *, seed, ...) -> dict`` (``data``: the
``SplitArrays`` of ``datamodules.load_splits(..., val_fraction=REDUCTION_VAL_FRACTION)``),
``plot_<what>(..., path) -> Path`` figure functions and ``summary_lines(results)``. Every
``run`` returns the layout :meth:`reduction.studies.common.StudyRun.results` describes.
"""
