"""A resumable grid search of random forests over trees x depth, and helpers for its grids.

``ForestGridSearch`` scores every (n_estimators, max_depth) cell of a grid on held-out
validation rows with :class:`reduction.estimators.RandomForest`; :func:`best_cell`,
:func:`grid_matrix` and :func:`grid_axis` choose, lay out and validate the cells.

Why the grid is cheap on scikit-learn: a scikit-learn forest draws one seed per tree, in order,
from ``random_state``, so with the same settings and ``random_state`` the forest of k trees is
exactly the first k trees of the forest of K > k trees. The search therefore grows only the
largest forest per depth and scores each smaller cell on a prefix of its trees
(:func:`prefix_predictions`), summing the trees' class probabilities in tree order, as
``RandomForestClassifier.predict_proba`` does. cuML grows its trees on the GPU with its own
seeding, so there every cell is a forest of its own.

Finished depths are cached on disk (:class:`GridCache`: one small JSON file per depth, keyed by
a fingerprint of the data, the n_estimators axis and every setting that changes the result) so
that an interrupted or repeated search picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from labkit.files import atomic_path
from labkit.progress import Progress, note, stage
from reduction.backend import implementation, select_backend
from reduction.estimators.forest import RandomForest
from reduction.scores import classification_metrics

METRICS = ("accuracy", "precision", "recall", "f1")
# Places whose forests are prefixes of larger forests with the same seed (see the module doc).
PREFIX_PLACES = frozenset({"sklearn"})
# Bump when the cache payload or the way cells are scored changes, so old files are ignored.
CACHE_FORMAT = 1


def prefix_predictions(forest, X, sizes, n_jobs=-1) -> dict[int, np.ndarray]:
    """Predicted labels of the forests made of the first k trees of a fitted scikit-learn
    ``RandomForestClassifier``, for every k in ``sizes``.

    The probabilities are summed tree by tree in the forest's order and divided by k, exactly
    as ``predict_proba`` does with ``n_jobs=1``, so each prefix predicts what a forest grown with
    ``n_estimators=k`` and the same ``random_state`` predicts. Rows are split among threads
    (tree prediction releases the GIL); each thread still adds its trees in order.
    """
    from joblib import Parallel, delayed, effective_n_jobs

    sizes = sorted({int(k) for k in sizes})
    if not sizes or sizes[0] < 1 or sizes[-1] > len(forest.estimators_):
        raise ValueError(f"prefix sizes must be in 1..{len(forest.estimators_)}, got {sizes}")
    X = np.ascontiguousarray(X, dtype=np.float32)  # the dtype the trees split on
    trees = forest.estimators_[: sizes[-1]]
    wanted = set(sizes)

    def predict_rows(rows):
        block = X[rows]
        total = np.zeros((len(rows), forest.n_classes_), dtype=np.float64)
        codes = {}
        for count, tree in enumerate(trees, start=1):
            total += tree.predict_proba(block, check_input=False)
            if count in wanted:
                codes[count] = np.argmax(total / count, axis=1)
        return codes

    n_blocks = max(1, min(effective_n_jobs(n_jobs), len(X)))
    blocks = np.array_split(np.arange(len(X)), n_blocks)
    per_block = Parallel(n_jobs=n_blocks, prefer="threads")(delayed(predict_rows)(rows) for rows in blocks)
    return {k: forest.classes_.take(np.concatenate([codes[k] for codes in per_block])) for k in sizes}


def best_cell(cells, metric: str = "val_accuracy") -> dict:
    """The cell with the highest ``metric``; ties go to fewer trees, then to shallower trees
    (the cheaper model), so the choice does not depend on the order of ``cells``."""
    cells = list(cells)
    if not cells:
        raise ValueError("no grid cells to choose from")
    return min(cells, key=lambda cell: (-cell[metric], cell["n_estimators"], cell["max_depth"]))


def grid_matrix(cells, metric: str = "val_accuracy"):
    """(values [depth, n_estimators], n_estimators axis, depth axis) for heatmaps; NaN where
    a cell is missing."""
    n_axis = sorted({cell["n_estimators"] for cell in cells})
    depth_axis = sorted({cell["max_depth"] for cell in cells})
    values = np.full((len(depth_axis), len(n_axis)), np.nan)
    for cell in cells:
        values[depth_axis.index(cell["max_depth"]), n_axis.index(cell["n_estimators"])] = cell[metric]
    return values, n_axis, depth_axis


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


def array_fingerprint(*arrays) -> str:
    """sha256 of the arrays' dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class GridCache:
    """Finished grid depths as JSON files in ``directory``, read back only when their key matches.

    A file that cannot be read, is not JSON, carries another key or is incomplete counts as
    absent (it is recomputed and overwritten). Files are written to a temporary name and
    renamed, so an interrupted write never leaves half a file under the real name.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path(self, name: str, depth: int, key: str) -> Path:
        return self.directory / f"{name}-depth{depth:03d}-{key[:16]}.json"

    def load(self, path: Path, key: str, n_estimators: tuple[int, ...]) -> dict | None:
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text())
            cells = payload["cells"]
            valid = (
                payload["key"] == key
                and [cell["n_estimators"] for cell in cells] == list(n_estimators)
                and all(
                    isinstance(cell[f"{part}_{metric}"], float) and math.isfinite(cell[f"{part}_{metric}"])
                    for cell in cells
                    for part in ("train", "val")
                    for metric in METRICS
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            note(f"ignoring unusable grid cache file {path}; recomputing it")
            return None
        return payload

    def store(self, path: Path, payload: dict) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(payload, indent=1))


class ForestGridSearch:
    """Random forests over ``n_estimators_grid`` x ``max_depth_grid``, scored on validation rows.

    ``fit(X, y, X_val, y_val)`` records, for every cell, accuracy and weighted precision, recall
    and F1 on the training rows (``train_*``) and on the validation rows (``val_*``).
    With ``cache_dir`` set, each finished depth is stored there and reused by later fits on the
    same data and settings; ``name`` labels the files (e.g. "raw", "pca").

    Fitted attributes: ``cells_`` (dicts: n_estimators, max_depth, the eight metrics and
    ``fit_seconds``, which is None for prefix-scored cells), ``best_`` (see :func:`best_cell`),
    ``place_`` (the place the forests ran), ``depth_seconds_`` ({depth: seconds to grow and
    score that depth}), ``forests_grown_`` (forests fitted by this call), ``depths_from_cache_``.
    """

    def __init__(
        self,
        n_estimators_grid,
        max_depth_grid,
        backend="auto",
        random_state=None,
        n_jobs=-1,
        cache_dir=None,
        name="forest",
        progress=True,
    ) -> None:
        self.n_estimators_grid = n_estimators_grid
        self.max_depth_grid = max_depth_grid
        self.backend = backend
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.cache_dir = cache_dir
        self.name = name
        self.progress = progress

    def fit(self, X, y, X_val, y_val) -> "ForestGridSearch":
        n_axis = grid_axis(self.n_estimators_grid, "n_estimators grid")
        depth_axis = grid_axis(self.max_depth_grid, "max_depth grid")
        factory, self.place_ = implementation("random_forest", select_backend(self.backend))
        X = np.ascontiguousarray(X, dtype=np.float32)
        X_val = np.ascontiguousarray(X_val, dtype=np.float32)
        y, y_val = np.asarray(y), np.asarray(y_val)
        cache = self._cache()
        data_key = array_fingerprint(X, y, X_val, y_val) if cache else None
        progress = Progress(len(depth_axis), f"forests {self.name}") if self.progress else None

        self.cells_, self.depth_seconds_, self.depths_from_cache_ = [], {}, []
        self.forests_grown_ = 0
        for depth in depth_axis:
            # The whole depth, cache look-up, store and report included: Ctrl-C anywhere names it.
            with stage(f"at depth {depth}"):
                payload = self._depth(cache, data_key, factory, X, y, X_val, y_val, n_axis, depth)
                self.cells_.extend(payload["cells"])
                self.depth_seconds_[depth] = payload["seconds"]
                if progress:
                    best = best_cell(payload["cells"])
                    source = "from cache" if depth in self.depths_from_cache_ else f"{payload['seconds']:.1f} s"
                    progress.step(
                        f"max_depth={depth}: best validation accuracy {best['val_accuracy']:.4f} "
                        f"at n_estimators={best['n_estimators']} ({source})"
                    )
        self.best_ = best_cell(self.cells_)
        return self

    def _depth(self, cache, data_key, factory, X, y, X_val, y_val, n_axis, depth) -> dict:
        """One depth's cells and seconds: from the cache when it has them, else grown (and stored)."""
        if cache:
            key = self._depth_key(data_key, n_axis, depth, factory)
            path = cache.path(self.name, depth, key)
            payload = cache.load(path, key, n_axis)
            if payload is not None:
                self.depths_from_cache_.append(depth)
                return payload
        start = time.perf_counter()
        score = self._score_prefixes if self.place_ in PREFIX_PLACES else self._score_each
        payload = {"cells": score(X, y, X_val, y_val, n_axis, depth), "seconds": time.perf_counter() - start}
        if cache:
            cache.store(path, {"format": CACHE_FORMAT, "key": key, "name": self.name, "max_depth": depth, **payload})
        return payload

    def _forest(self, n_estimators, depth) -> RandomForest:
        return RandomForest(n_estimators, depth, backend=self.backend, random_state=self.random_state, n_jobs=self.n_jobs)

    def _score_prefixes(self, X, y, X_val, y_val, n_axis, depth) -> list[dict]:
        forest = self._forest(n_axis[-1], depth).fit(X, y)
        self.forests_grown_ += 1
        model = forest.estimator_
        train = prefix_predictions(model, X, n_axis, self.n_jobs)
        val = prefix_predictions(model, X_val, n_axis, self.n_jobs)
        return [_cell(n, depth, y, train[n], y_val, val[n], None) for n in n_axis]

    def _score_each(self, X, y, X_val, y_val, n_axis, depth) -> list[dict]:
        cells = []
        for n in n_axis:
            forest = self._forest(n, depth).fit(X, y)
            self.forests_grown_ += 1
            cells.append(_cell(n, depth, y, forest.predict(X), y_val, forest.predict(X_val), forest.fit_seconds_))
        return cells

    def _cache(self) -> GridCache | None:
        if self.cache_dir is None:
            return None
        if not (self.random_state is None or isinstance(self.random_state, (int, np.integer))):
            # A RandomState object gives other trees on every fit: nothing to reuse.
            note("the grid cache needs an integer random_state; not caching")
            return None
        if self.random_state is None:
            note("random_state=None gives other forests on every run; not caching")
            return None
        return GridCache(self.cache_dir)

    def _depth_key(self, data_key, n_axis, depth, factory) -> str:
        library = importlib.import_module(factory.__module__.split(".")[0])
        settings = {
            "format": CACHE_FORMAT,
            "data": data_key,
            "n_estimators": list(n_axis),
            "max_depth": int(depth),
            "random_state": int(self.random_state),
            "place": self.place_,
            "library": f"{library.__name__} {getattr(library, '__version__', '?')}",
            "prefix_scoring": self.place_ in PREFIX_PLACES,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _cell(n_estimators, depth, y, y_pred, y_val, y_val_pred, fit_seconds) -> dict:
    cell = {"n_estimators": int(n_estimators), "max_depth": int(depth)}
    for part, truth, predicted in (("train", y, y_pred), ("val", y_val, y_val_pred)):
        for metric, value in classification_metrics(truth, predicted).items():
            cell[f"{part}_{metric}"] = value
    cell["fit_seconds"] = fit_seconds
    return cell
