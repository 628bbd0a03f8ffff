"""A resumable grid search of random forests over trees x depth, and helpers for its grids.

:class:`ForestGridSearch` scores every (n_estimators, max_depth) cell on held-out validation
rows, one of two ways (``method``):

``"truncate"`` (the default on scikit-learn): one forest of ``max(n_estimators)`` trees grown to
``max(max_depth)``, the cell (n, d) scored as its first n trees cut at depth d. A tree grows
top-down, and whether a node splits depends only on the training rows reaching it, the
settings and fresh random draws, so a tree cut at depth d is, in distribution, a tree grown with
``max_depth=d``; scikit-learn keeps at every node the class distribution a leaf there would
predict (``tree_.value``), so a cut tree predicts without a refit (:class:`DepthVotes`). Cells
at the top depth are exactly real forests, shallower cells real forests in distribution, not
tree for tree (``tests/test_forest_truncation.py`` checks both). The forest grows in batches
ending at each n of the grid (``warm_start``), so that progress and Ctrl-C can name the trees.

``"per_depth"``: one forest per depth with the grid's largest n, each smaller n scored on a
prefix of its trees (:func:`prefix_predictions`): scikit-learn draws one seed per tree, in
order, so the first k trees are exactly the forest of k trees. cuML's trees can be neither cut
nor read node by node, so there every cell is a forest of its own, whichever method was asked.

:class:`GridCache` keeps finished work in small JSON files keyed by everything that changes the
result, so an interrupted or repeated search resumes: per finished depth (``per_depth``) or per
finished grid (``truncate``, which starts its forest again: resuming in the middle would need
every row's running sums and the trees grown so far).
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
from labkit.progress import Progress, note, note_once, report, stage
from reduction.backend import implementation, select_backend
from reduction.choices import grid_axis  # noqa: F401  (light, for the command line; part of this module's API)
from reduction.estimators.forest import RandomForest
from reduction.scores import classification_metrics

METRICS = ("accuracy", "precision", "recall", "f1")
# The ways to score a grid (see the module doc).
GRID_METHODS = ("truncate", "per_depth")
# Places whose forests are prefixes of larger forests with the same seed (see the module doc).
PREFIX_PLACES = frozenset({"sklearn"})
# Places whose trees can be read node by node, so that one deep forest can be cut at every depth.
TRUNCATE_PLACES = frozenset({"sklearn"})
# Bump when the cache payload or the way cells are scored changes, so old files are ignored.
CACHE_FORMAT = 2


def node_probabilities(tree) -> np.ndarray:
    """[n_nodes, n_classes]: the class distribution at every node of a fitted scikit-learn
    ``DecisionTreeClassifier``, internal nodes included, normalised as ``predict_proba``
    normalises a leaf's (so at a leaf, what the tree predicts)."""
    value = tree.tree_.value[:, 0, : tree.n_classes_]
    total = value.sum(axis=1, keepdims=True)
    total[total == 0.0] = 1.0
    return value / total


def nodes_at_depths(tree, X, depths) -> np.ndarray:
    """[len(depths), n_rows]: the node each row's path reaches at each depth (the root is depth
    0), or its leaf where the path ends sooner. ``X`` is float32, as the trees split it.

    ``decision_path`` lists a row's nodes from the root down (a node is added to the tree
    before its children, so node ids grow along every path): the node at depth d is entry d.
    """
    path = tree.decision_path(X, check_input=False)
    starts = path.indptr[:-1]
    last = np.diff(path.indptr) - 1  # the leaf's position on the path = its depth
    return path.indices[starts + np.minimum(np.asarray(depths, dtype=np.intp)[:, None], last)]


class DepthVotes:
    """Running sums over trees of every row's class distribution at each depth of ``depths``.

    ``add(trees)`` adds trees in order; ``proba()`` ([len(depths), n_rows, n_classes]) is, per
    depth d, the mean over the trees added so far of the distribution at the node each row
    reaches at depth d (or its leaf): ``predict_proba`` of those trees cut at d. Rows are split
    into blocks, one per thread, each adding the trees in order, so the sums do not depend on
    the number of threads.
    """

    def __init__(self, X, depths, n_classes: int, n_jobs=-1) -> None:
        from joblib import effective_n_jobs

        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.depths = np.asarray(depths, dtype=np.intp)
        if self.depths.ndim != 1 or len(self.depths) == 0 or self.depths.min() < 0:
            raise ValueError(f"depths must be a non-empty list of non-negative integers, got {depths!r}")
        self.sums = np.zeros((len(self.depths), len(self.X), int(n_classes)))
        self.n_trees = 0
        n_blocks = max(1, min(effective_n_jobs(n_jobs), len(self.X)))
        bounds = np.linspace(0, len(self.X), n_blocks + 1).astype(int)
        self.blocks = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def add(self, trees) -> "DepthVotes":
        from joblib import Parallel, delayed

        trees = list(trees)
        tables = [node_probabilities(tree) for tree in trees]
        if any(table.shape[1] != self.sums.shape[2] for table in tables):
            raise ValueError(f"every tree must have {self.sums.shape[2]} classes")

        def add_block(rows: slice) -> None:
            X, sums = self.X[rows], self.sums[:, rows]
            buffer = np.empty(sums.shape[1:])
            for tree, table in zip(trees, tables):
                for position, nodes in enumerate(nodes_at_depths(tree, X, self.depths)):
                    np.take(table, nodes, axis=0, out=buffer)
                    sums[position] += buffer

        if len(self.blocks) == 1:
            add_block(self.blocks[0])
        else:
            Parallel(n_jobs=len(self.blocks), prefer="threads")(delayed(add_block)(rows) for rows in self.blocks)
        self.n_trees += len(trees)
        return self

    def proba(self) -> np.ndarray:
        """[len(depths), n_rows, n_classes]: the mean distribution over the trees added so far."""
        if self.n_trees == 0:
            raise ValueError("no trees added yet")
        return self.sums / self.n_trees

    def predicted_codes(self) -> np.ndarray:
        """[len(depths), n_rows]: the class position with the highest mean probability (the first on ties)."""
        return np.argmax(self.proba(), axis=2)


def truncated_proba(forest, X, depths, n_trees=None, n_jobs=1) -> np.ndarray:
    """[len(depths), n_rows, n_classes]: the first ``n_trees`` (all: None) trees of a fitted
    scikit-learn ``RandomForestClassifier`` cut at each depth, their class probabilities
    averaged as ``predict_proba`` averages them. Columns in the order of ``forest.classes_``."""
    trees = forest.estimators_ if n_trees is None else forest.estimators_[: int(n_trees)]
    return DepthVotes(X, depths, forest.n_classes_, n_jobs).add(trees).proba()


def prefix_predictions(forest, X, sizes, n_jobs=-1) -> dict[int, np.ndarray]:
    """Predicted labels of the forests made of the first k trees of a fitted scikit-learn
    ``RandomForestClassifier``, for every k in ``sizes``: what a forest grown with
    ``n_estimators=k`` and the same ``random_state`` predicts (the probabilities summed tree by
    tree in order and divided by k, as ``predict_proba`` does with ``n_jobs=1``; rows split
    among threads, each adding its trees in order).
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


def array_fingerprint(*arrays) -> str:
    """sha256 of the arrays' dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class GridCache:
    """Finished grid depths (method "per_depth") or whole grids ("truncate") as JSON files in
    ``directory``, read back only when their key matches; a file that cannot be read, carries
    another key or is incomplete counts as absent. Files are written atomically."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path(self, name: str, depth: int, key: str) -> Path:
        """The file of one depth of a per-depth grid."""
        return self.directory / f"{name}-depth{depth:03d}-{key[:16]}.json"

    def grid_path(self, name: str, key: str) -> Path:
        """The file of a whole truncated grid."""
        return self.directory / f"{name}-truncate-{key[:16]}.json"

    def load(self, path: Path, key: str, cells) -> dict | None:
        """The payload at ``path`` if its key is ``key`` and it holds exactly the (n_estimators,
        max_depth) ``cells``, in that order, each with every metric; else None."""
        if not path.is_file():
            return None
        expected = [(int(n), int(d)) for n, d in cells]
        try:
            payload = json.loads(path.read_text())
            stored = payload["cells"]
            valid = (
                payload["key"] == key
                and [(cell["n_estimators"], cell["max_depth"]) for cell in stored] == expected
                and all(
                    isinstance(cell[f"{part}_{metric}"], float) and math.isfinite(cell[f"{part}_{metric}"])
                    for cell in stored
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

    ``fit(X, y, X_val, y_val)`` records for every cell the accuracy and the weighted precision,
    recall and F1 on the training rows (``train_*``) and on the validation rows (``val_*``).

    Parameters
    ----------
    method
        "truncate" or "per_depth" (see the module doc); where trees cannot be cut (cuML),
        "per_depth" with one forest per cell, with a note.
    cache_dir, name
        Where finished work is kept and reused by later fits on the same data and settings
        (None: nowhere), and the label of its files (e.g. "raw", "pca").
    backend, random_state, n_jobs
        As :class:`~reduction.estimators.RandomForest`'s; ``progress`` reports each step.

    Attributes
    ----------
    cells_
        Dicts: n_estimators, max_depth, the eight metrics, ``fit_seconds`` (None when scored
        from a larger forest).
    best_, place_, method_
        The best cell (:func:`best_cell`), where the forests ran, the method that ran.
    forests_grown_, trees_grown_, depths_from_cache_
        Grown by this call; the depths taken from the cache (all, for a cached truncated grid).
    seconds_, depth_seconds_, grow_seconds_, score_seconds_, grown_max_depth_
        Growing and scoring (as first computed, for cached work); per depth ("per_depth"
        only); growing and scoring, and the depth grown to ("truncate" only, else None).
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
        method="truncate",
    ) -> None:
        self.n_estimators_grid = n_estimators_grid
        self.max_depth_grid = max_depth_grid
        self.backend = backend
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.cache_dir = cache_dir
        self.name = name
        self.progress = progress
        self.method = method

    def fit(self, X, y, X_val, y_val) -> "ForestGridSearch":
        if self.method not in GRID_METHODS:
            raise ValueError(f"unknown grid method {self.method!r}; choose one of {', '.join(GRID_METHODS)}")
        n_axis = grid_axis(self.n_estimators_grid, "n_estimators grid")
        depth_axis = grid_axis(self.max_depth_grid, "max_depth grid")
        factory, self.place_ = implementation("random_forest", select_backend(self.backend))
        self.method_ = self.method
        if self.method == "truncate" and self.place_ not in TRUNCATE_PLACES:
            note_once(f"{self.place_} trees cannot be cut at a depth; the forest grid grows one forest per cell")
            self.method_ = "per_depth"
        X = np.ascontiguousarray(X, dtype=np.float32)
        X_val = np.ascontiguousarray(X_val, dtype=np.float32)
        y, y_val = np.asarray(y), np.asarray(y_val)
        cache = self._cache()
        data_key = array_fingerprint(X, y, X_val, y_val) if cache else None

        self.cells_, self.depth_seconds_, self.depths_from_cache_ = [], {}, []
        self.forests_grown_ = self.trees_grown_ = 0
        self.grow_seconds_ = self.score_seconds_ = self.grown_max_depth_ = None
        if self.method_ == "truncate":
            self._fit_truncated(cache, data_key, factory, X, y, X_val, y_val, n_axis, depth_axis)
        else:
            self._fit_per_depth(cache, data_key, factory, X, y, X_val, y_val, n_axis, depth_axis)
        self.best_ = best_cell(self.cells_)
        return self

    # The per-depth way ----------------------------------------------------------------------

    def _fit_per_depth(self, cache, data_key, factory, X, y, X_val, y_val, n_axis, depth_axis) -> None:
        progress = Progress(len(depth_axis), f"forests {self.name}") if self.progress else None
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
        self.seconds_ = float(sum(self.depth_seconds_.values()))

    def _depth(self, cache, data_key, factory, X, y, X_val, y_val, n_axis, depth) -> dict:
        """One depth's cells and seconds: from the cache when it has them, else grown (and stored)."""
        if cache:
            key = self._key(data_key, factory, n_estimators=list(n_axis), max_depth=int(depth),
                            prefix_scoring=self.place_ in PREFIX_PLACES)
            path = cache.path(self.name, depth, key)
            payload = cache.load(path, key, [(n, depth) for n in n_axis])
            if payload is not None:
                self.depths_from_cache_.append(depth)
                return payload
        start = time.perf_counter()
        score = self._score_prefixes if self.place_ in PREFIX_PLACES else self._score_each
        payload = {"cells": score(X, y, X_val, y_val, n_axis, depth), "seconds": time.perf_counter() - start}
        if cache:
            cache.store(path, {"format": CACHE_FORMAT, "key": key, "name": self.name, "method": "per_depth",
                               "max_depth": depth, **payload})
        return payload

    def _forest(self, n_estimators, depth) -> RandomForest:
        return RandomForest(n_estimators, depth, backend=self.backend, random_state=self.random_state, n_jobs=self.n_jobs)

    def _score_prefixes(self, X, y, X_val, y_val, n_axis, depth) -> list[dict]:
        forest = self._forest(n_axis[-1], depth).fit(X, y)
        self.forests_grown_ += 1
        self.trees_grown_ += n_axis[-1]
        model = forest.estimator_
        train = prefix_predictions(model, X, n_axis, self.n_jobs)
        val = prefix_predictions(model, X_val, n_axis, self.n_jobs)
        return [_cell(n, depth, y, train[n], y_val, val[n], None) for n in n_axis]

    def _score_each(self, X, y, X_val, y_val, n_axis, depth) -> list[dict]:
        cells = []
        for n in n_axis:
            forest = self._forest(n, depth).fit(X, y)
            self.forests_grown_ += 1
            self.trees_grown_ += n
            cells.append(_cell(n, depth, y, forest.predict(X), y_val, forest.predict(X_val), forest.fit_seconds_))
        return cells

    # The truncated way ----------------------------------------------------------------------

    def _fit_truncated(self, cache, data_key, factory, X, y, X_val, y_val, n_axis, depth_axis) -> None:
        """One forest of ``n_axis[-1]`` trees grown to ``depth_axis[-1]``, in batches ending at each
        n of the grid; after each batch every depth's cells for that n are scored."""
        self.grown_max_depth_ = depth_axis[-1]
        expected = [(n, depth) for depth in depth_axis for n in n_axis]
        if cache:
            key = self._key(data_key, factory, n_estimators=list(n_axis), max_depth=list(depth_axis),
                            grown_max_depth=int(depth_axis[-1]))
            path = cache.grid_path(self.name, key)
            payload = cache.load(path, key, expected)
            if payload is not None:
                self.cells_ = payload["cells"]
                self.depths_from_cache_ = list(depth_axis)
                self.seconds_ = payload["seconds"]
                self.grow_seconds_, self.score_seconds_ = payload["grow_seconds"], payload["score_seconds"]
                if self.progress:
                    best = best_cell(self.cells_)
                    report(f"[forests {self.name}] all {len(self.cells_)} cells (from cache): best validation accuracy "
                           f"{best['val_accuracy']:.4f} at n_estimators={best['n_estimators']}, max_depth={best['max_depth']}")
                return
        progress = Progress(len(n_axis), f"forests {self.name}") if self.progress else None
        forest = factory(n_estimators=n_axis[0], max_depth=int(depth_axis[-1]), random_state=self.random_state,
                         n_jobs=self.n_jobs, warm_start=True)
        classes = np.unique(y)
        train_votes = DepthVotes(X, depth_axis, len(classes), self.n_jobs)
        val_votes = DepthVotes(X_val, depth_axis, len(classes), self.n_jobs)
        cells: dict[tuple[int, int], dict] = {}
        grow = score = 0.0
        done = 0
        for n in n_axis:
            with stage(f"while growing and scoring trees {done + 1}-{n} of {n_axis[-1]}"):
                start = time.perf_counter()
                # warm_start adds trees n_done+1..n, drawing their seeds as one fit of n trees would.
                forest.set_params(n_estimators=n).fit(X, y)
                grown = time.perf_counter()
                new_trees = forest.estimators_[done:n]
                train_votes.add(new_trees)
                val_votes.add(new_trees)
                train_codes, val_codes = train_votes.predicted_codes(), val_votes.predicted_codes()
                batch = []
                for position, depth in enumerate(depth_axis):
                    cells[(n, depth)] = _cell(n, depth, y, forest.classes_.take(train_codes[position]),
                                              y_val, forest.classes_.take(val_codes[position]), None)
                    batch.append(cells[(n, depth)])
                finished = time.perf_counter()
                grow += grown - start
                score += finished - grown
                self.trees_grown_ += n - done
                done = n
                if progress:
                    best = best_cell(batch)
                    progress.step(
                        f"{n} trees (grown to max_depth={depth_axis[-1]}): best validation accuracy "
                        f"{best['val_accuracy']:.4f} at max_depth={best['max_depth']} "
                        f"({grown - start:.1f} s growing, {finished - grown:.1f} s scoring)"
                    )
        self.forests_grown_ = 1
        self.cells_ = [cells[pair] for pair in expected]
        self.grow_seconds_, self.score_seconds_, self.seconds_ = grow, score, grow + score
        if cache:
            cache.store(path, {"format": CACHE_FORMAT, "key": key, "name": self.name, "method": "truncate",
                               "max_depth": list(depth_axis), "grown_max_depth": int(depth_axis[-1]),
                               "cells": self.cells_, "seconds": self.seconds_, "grow_seconds": grow,
                               "score_seconds": score})

    # The cache ------------------------------------------------------------------------------

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

    def _key(self, data_key, factory, **settings) -> str:
        """The cache key: every setting that changes the cells, the method that ran included."""
        library = importlib.import_module(factory.__module__.split(".")[0])
        settings = {
            "format": CACHE_FORMAT,
            "data": data_key,
            "random_state": int(self.random_state),
            "place": self.place_,
            "library": f"{library.__name__} {getattr(library, '__version__', '?')}",
            "method": self.method_,
            **settings,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _cell(n_estimators, depth, y, y_pred, y_val, y_val_pred, fit_seconds) -> dict:
    cell = {"n_estimators": int(n_estimators), "max_depth": int(depth)}
    for part, truth, predicted in (("train", y, y_pred), ("val", y_val, y_val_pred)):
        for metric, value in classification_metrics(truth, predicted).items():
            cell[f"{part}_{metric}"] = value
    cell["fit_seconds"] = fit_seconds
    return cell
