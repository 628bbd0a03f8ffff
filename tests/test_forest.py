"""reduction.forest_grid: both ways of scoring a grid (truncate, per_depth), the prefix trick, the
resumable grid cache, Ctrl-C accounting, best-cell choice, the GPU path.

How the truncated cells compare with real forests (exactly at the top depth, in distribution
below it, over several seeds) is tested in tests/test_forest_truncation.py.
"""

from __future__ import annotations

import contextlib
import json
import logging

import numpy as np
import pytest
from conftest import requires_cuml
from sklearn.ensemble import RandomForestClassifier

from datamodules.synthetic import synthetic_arrays
from reduction.estimators import RandomForest
from reduction.forest_grid import (
    METRICS,
    ForestGridSearch,
    best_cell,
    grid_axis,
    grid_matrix,
    prefix_predictions,
)
from reduction.scores import classification_metrics

N_AXIS = (2, 5, 9)


@pytest.fixture(scope="module")
def arrays():
    """Small train and validation sets, noisy enough that small forests disagree."""
    X, y = synthetic_arrays(240, seed=1)
    X_val, y_val = synthetic_arrays(120, seed=2)
    return X, y, X_val, y_val


@contextlib.contextmanager
def logged(caplog, level):
    """Capture the sign_mnist_lab logger's lines at ``level`` into ``caplog``, whether or not a
    script test turned its propagation off (the scripts show them on stderr)."""
    from labkit.progress import logger

    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(level, logger=logger.name):
            yield
    finally:
        logger.removeHandler(caplog.handler)


def grid(depths, method="per_depth", backend="sklearn", **params):
    return ForestGridSearch(N_AXIS, depths, backend=backend, random_state=7, n_jobs=1, progress=False,
                            method=method, **params)


def test_prefix_predictions_equal_separately_grown_forests(arrays):
    X, y, X_val, _ = arrays
    largest = RandomForestClassifier(n_estimators=12, max_depth=3, random_state=3, n_jobs=-1).fit(X, y)
    prefixes = prefix_predictions(largest, X_val, [1, 4, 12], n_jobs=2)
    for k, predicted in prefixes.items():
        # n_jobs=1: predict_proba then adds the trees in order, as the prefixes do.
        alone = RandomForestClassifier(n_estimators=k, max_depth=3, random_state=3, n_jobs=1).fit(X, y)
        np.testing.assert_array_equal(predicted, alone.predict(X_val))
    assert len({tuple(p) for p in prefixes.values()}) == 3  # the prefixes do differ


def test_prefix_predictions_reject_sizes_beyond_the_forest(arrays):
    X, y, X_val, _ = arrays
    forest = RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="1..3"):
        prefix_predictions(forest, X_val, [2, 4])


def test_grid_scores_equal_separately_grown_forests(arrays):
    X, y, X_val, y_val = arrays
    search = grid([2, 4]).fit(X, y, X_val, y_val)
    assert search.forests_grown_ == 2 and search.trees_grown_ == 2 * N_AXIS[-1]  # one forest per depth
    assert search.place_ == "sklearn" and search.method_ == "per_depth"
    assert set(search.depth_seconds_) == {2, 4} and search.grow_seconds_ is None
    assert [(c["n_estimators"], c["max_depth"]) for c in search.cells_] == [(n, d) for d in (2, 4) for n in N_AXIS]
    for cell in search.cells_:
        alone = RandomForest(cell["n_estimators"], cell["max_depth"], backend="sklearn", random_state=7, n_jobs=1).fit(X, y)
        for metric, value in classification_metrics(y_val, alone.predict(X_val)).items():
            assert cell[f"val_{metric}"] == value, (cell, metric)
        for metric, value in classification_metrics(y, alone.predict(X)).items():
            assert cell[f"train_{metric}"] == value, (cell, metric)
    assert search.best_ == best_cell(search.cells_)


def test_truncated_grid_grows_one_forest_and_its_top_depth_is_the_real_forest(arrays):
    X, y, X_val, y_val = arrays
    search = ForestGridSearch(N_AXIS, [2, 4, 30], backend="sklearn", random_state=7, n_jobs=2, progress=False).fit(
        X, y, X_val, y_val)
    assert search.method_ == "truncate" and search.place_ == "sklearn"
    assert search.forests_grown_ == 1 and search.trees_grown_ == N_AXIS[-1] and search.grown_max_depth_ == 30
    assert search.depth_seconds_ == {} and search.grow_seconds_ > 0 and search.score_seconds_ > 0
    assert search.seconds_ == pytest.approx(search.grow_seconds_ + search.score_seconds_)
    assert [(c["n_estimators"], c["max_depth"]) for c in search.cells_] == [(n, d) for d in (2, 4, 30) for n in N_AXIS]
    assert all(cell["fit_seconds"] is None for cell in search.cells_)
    assert search.best_ == best_cell(search.cells_)
    # The top depth is the depth the forest was grown to: its cells are real forests with those
    # settings (the same trees; a near-tie may turn one row's argmax, hence one row's tolerance).
    for cell in search.cells_:
        if cell["max_depth"] != 30:
            continue
        alone = RandomForest(cell["n_estimators"], 30, backend="sklearn", random_state=7, n_jobs=1).fit(X, y)
        for part, rows, truth in (("val", X_val, y_val), ("train", X, y)):
            for metric, value in classification_metrics(truth, alone.predict(rows)).items():
                assert cell[f"{part}_{metric}"] == pytest.approx(value, abs=1.01 / len(truth)), (cell, part, metric)
    # Shallower cells are scored from the cut trees: the depths differ.
    by_depth = {d: [c["val_accuracy"] for c in search.cells_ if c["max_depth"] == d] for d in (2, 4, 30)}
    assert by_depth[2] != by_depth[30]


def test_truncated_grid_does_not_depend_on_the_thread_count(arrays):
    X, y, X_val, y_val = arrays
    one, two = (ForestGridSearch(N_AXIS, [1, 3, 6], backend="sklearn", random_state=3, n_jobs=jobs, progress=False)
                .fit(X, y, X_val, y_val) for jobs in (1, 2))
    strip = lambda cells: [{k: v for k, v in c.items() if k != "fit_seconds"} for c in cells]  # noqa: E731
    for a, b in zip(strip(one.cells_), strip(two.cells_)):
        assert a == pytest.approx(b, abs=1.01 / len(y_val))


def test_unknown_grid_method_is_refused(arrays):
    X, y, X_val, y_val = arrays
    with pytest.raises(ValueError, match="unknown grid method 'fast'"):
        grid([2], method="fast").fit(X, y, X_val, y_val)


def test_grid_resumes_from_a_half_finished_cache(arrays, tmp_path):
    X, y, X_val, y_val = arrays
    cache = tmp_path / "cache"
    grid([2, 4], cache_dir=cache, name="raw").fit(X, y, X_val, y_val)  # as if stopped after two depths
    files = sorted(cache.glob("raw-depth*.json"))
    assert len(files) == 2
    written = {path: path.stat().st_mtime_ns for path in files}

    resumed = grid([2, 4, 6], cache_dir=cache, name="raw").fit(X, y, X_val, y_val)
    assert resumed.forests_grown_ == 1  # only depth 6 was grown
    assert resumed.depths_from_cache_ == [2, 4]
    assert {path: path.stat().st_mtime_ns for path in files} == written
    assert len(list(cache.glob("raw-depth*.json"))) == 3
    assert not list(cache.glob("*.tmp"))

    fresh = grid([2, 4, 6]).fit(X, y, X_val, y_val)
    assert resumed.cells_ == fresh.cells_
    assert resumed.best_ == fresh.best_

    again = grid([2, 4, 6], cache_dir=cache, name="raw").fit(X, y, X_val, y_val)
    assert again.forests_grown_ == 0 and again.cells_ == fresh.cells_


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # a write cut short
        lambda text: "",
        lambda text: text.replace('"key": "', '"key": "0'),  # another run's file under this name
        lambda text: json.dumps({**json.loads(text), "cells": json.loads(text)["cells"][:-1]}),  # cells missing
        lambda text: text.replace('"val_accuracy": ', '"val_accuracy": "x", "ignored": ', 1),  # not a number
    ],
    ids=["truncated", "empty", "foreign-key", "missing-cells", "bad-value"],
)
@pytest.mark.parametrize("method", ["per_depth", "truncate"])
def test_unusable_cache_file_is_ignored_and_rebuilt(arrays, tmp_path, caplog, damage, method):
    X, y, X_val, y_val = arrays
    cache = tmp_path / "cache"
    first = grid([2, 4], method, cache_dir=cache, name="pca").fit(X, y, X_val, y_val)
    pattern = "pca-depth002-*.json" if method == "per_depth" else "pca-truncate-*.json"
    target = sorted(cache.glob(pattern))[0]
    target.write_text(damage(target.read_text()))

    with logged(caplog, logging.WARNING):
        rebuilt = grid([2, 4], method, cache_dir=cache, name="pca").fit(X, y, X_val, y_val)
    assert rebuilt.forests_grown_ == 1
    assert rebuilt.depths_from_cache_ == ([4] if method == "per_depth" else [])
    assert rebuilt.cells_ == first.cells_
    assert "ignoring unusable grid cache file" in caplog.text
    stored = first.cells_[: len(N_AXIS)] if method == "per_depth" else first.cells_
    assert json.loads(target.read_text())["cells"] == stored


def test_cache_is_not_reused_for_other_data_or_seed(arrays, tmp_path):
    X, y, X_val, y_val = arrays
    cache = tmp_path / "cache"
    grid([2], cache_dir=cache).fit(X, y, X_val, y_val)
    assert grid([2], cache_dir=cache).fit(X[:-1], y[:-1], X_val, y_val).forests_grown_ == 1
    other_seed = ForestGridSearch(N_AXIS, [2], backend="sklearn", random_state=8, n_jobs=1, cache_dir=cache, progress=False)
    assert other_seed.fit(X, y, X_val, y_val).forests_grown_ == 1
    assert grid([2], cache_dir=cache).fit(X, y, X_val, y_val).forests_grown_ == 0


def test_truncated_grid_is_cached_whole_and_apart_from_the_per_depth_files(arrays, tmp_path):
    X, y, X_val, y_val = arrays
    cache = tmp_path / "cache"
    first = grid([2, 4], "truncate", cache_dir=cache, name="raw").fit(X, y, X_val, y_val)
    assert [path.name.split("-")[1] for path in cache.glob("*.json")] == ["truncate"]
    again = grid([2, 4], "truncate", cache_dir=cache, name="raw").fit(X, y, X_val, y_val)
    assert again.forests_grown_ == 0 and again.trees_grown_ == 0 and again.depths_from_cache_ == [2, 4]
    assert again.cells_ == first.cells_ and again.best_ == first.best_
    assert (again.grow_seconds_, again.score_seconds_) == (first.grow_seconds_, first.score_seconds_)
    # The method is part of the key: the per-depth way grows its own forests, and another grid
    # (one more depth) is another truncated forest.
    assert grid([2, 4], "per_depth", cache_dir=cache, name="raw").fit(X, y, X_val, y_val).forests_grown_ == 2
    assert grid([2, 4, 6], "truncate", cache_dir=cache, name="raw").fit(X, y, X_val, y_val).forests_grown_ == 1
    assert len(list(cache.glob("raw-truncate-*.json"))) == 2 and len(list(cache.glob("raw-depth*.json"))) == 2
    assert not [path for path in cache.iterdir() if ".tmp" in path.name]


def _interrupt_at_cell(monkeypatch, number):
    """Make the grid's ``number``-th scored cell raise KeyboardInterrupt, as Ctrl-C would there."""
    import reduction.forest_grid as forest_module

    real, calls = forest_module._cell, []

    def cell(*args):
        calls.append(args)
        if len(calls) == number:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(forest_module, "_cell", cell)


def test_ctrl_c_names_the_depth_in_the_per_depth_way(arrays, tmp_path, monkeypatch):
    X, y, X_val, y_val = arrays
    _interrupt_at_cell(monkeypatch, len(N_AXIS) + 1)  # the first cell of the second depth
    with pytest.raises(KeyboardInterrupt) as info:
        grid([2, 4, 6], cache_dir=tmp_path).fit(X, y, X_val, y_val)
    assert info.value.interrupted_where == "at depth 4"
    assert len(list(tmp_path.glob("forest-depth002-*.json"))) == 1 and not list(tmp_path.glob("*depth004*"))


def test_ctrl_c_names_the_trees_in_the_truncated_way(arrays, tmp_path, monkeypatch):
    X, y, X_val, y_val = arrays
    _interrupt_at_cell(monkeypatch, 3)  # the first cell of the second batch (trees 3-5)
    with pytest.raises(KeyboardInterrupt) as info:
        grid([2, 4], "truncate", cache_dir=tmp_path).fit(X, y, X_val, y_val)
    assert info.value.interrupted_where == f"while growing and scoring trees 3-5 of {N_AXIS[-1]}"
    assert not list(tmp_path.glob("*.json"))  # an unfinished truncated grid is not cached


def test_progress_lines_name_each_depth(arrays, caplog):
    X, y, X_val, y_val = arrays
    with logged(caplog, logging.INFO):
        ForestGridSearch((2,), (2, 3), backend="sklearn", random_state=0, n_jobs=1, name="raw",
                         method="per_depth").fit(X, y, X_val, y_val)
    assert "[forests raw 1/2] max_depth=2" in caplog.text and "[forests raw 2/2] max_depth=3" in caplog.text


def test_progress_lines_name_each_batch_of_trees_in_the_truncated_way(arrays, caplog, tmp_path):
    X, y, X_val, y_val = arrays
    search = lambda: ForestGridSearch((2, 4), (2, 3), backend="sklearn", random_state=0, n_jobs=1,  # noqa: E731
                                      name="raw", cache_dir=tmp_path)
    with logged(caplog, logging.INFO):
        search().fit(X, y, X_val, y_val)
    assert "[forests raw 1/2] 2 trees (grown to max_depth=3)" in caplog.text
    assert "[forests raw 2/2] 4 trees (grown to max_depth=3)" in caplog.text
    caplog.clear()
    with logged(caplog, logging.INFO):
        search().fit(X, y, X_val, y_val)
    assert "[forests raw] all 4 cells (from cache)" in caplog.text


def test_best_cell_takes_highest_validation_accuracy_then_the_cheaper_model():
    cells = [
        {"n_estimators": 50, "max_depth": 10, "val_accuracy": 0.90},
        {"n_estimators": 30, "max_depth": 15, "val_accuracy": 0.95},
        {"n_estimators": 30, "max_depth": 10, "val_accuracy": 0.95},
        {"n_estimators": 70, "max_depth": 5, "val_accuracy": 0.95},
    ]
    assert best_cell(cells) == cells[2]
    assert best_cell(cells[::-1]) == cells[2]
    assert best_cell(cells[:1]) == cells[0]
    with pytest.raises(ValueError):
        best_cell([])


def test_grid_matrix_lays_cells_out_by_depth_and_trees():
    cells = [{"n_estimators": n, "max_depth": d, "val_accuracy": n / 100 + d} for d in (5, 10) for n in (10, 30)]
    values, n_axis, depth_axis = grid_matrix(cells[:-1])
    assert n_axis == [10, 30] and depth_axis == [5, 10]
    np.testing.assert_allclose(values[:, 0], [5.1, 10.1])
    assert values[0, 1] == pytest.approx(5.3) and np.isnan(values[1, 1])


def test_grid_axis_validation():
    assert grid_axis([30, 10, 30], "trees") == (10, 30)
    for bad in ([], [0, 5], ["x"]):
        with pytest.raises(ValueError, match="trees"):
            grid_axis(bad, "trees")


def test_classification_metrics_are_weighted():
    y_true = np.array([0, 0, 0, 1])
    y_pred = np.array([0, 0, 1, 1])
    metrics = classification_metrics(y_true, y_pred)
    assert set(metrics) == set(METRICS)
    assert metrics["accuracy"] == 0.75
    # class 0: precision 1, recall 2/3 (weight 3/4); class 1: precision 1/2, recall 1 (weight 1/4)
    assert metrics["precision"] == pytest.approx(0.75 * 1 + 0.25 * 0.5)
    assert metrics["recall"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx(0.75 * 0.8 + 0.25 * (2 / 3))


def test_random_forest_keeps_labels_that_are_not_consecutive(arrays):
    X, y, X_val, y_val = arrays
    assert 9 not in set(y)  # J is absent, as in the real data
    forest = RandomForest(20, 6, backend="sklearn", random_state=0).fit(X, y)
    predicted = forest.predict(X_val)
    assert forest.place_ == "sklearn" and forest.fit_seconds_ > 0
    np.testing.assert_array_equal(forest.classes_, np.unique(y))
    assert set(predicted) <= set(y)
    assert np.mean(predicted == y_val) > 0.5


def test_cuml_conventions_and_one_forest_per_cell(arrays, cuml_standin):
    """On cuML (here its stand-in, tests/cuml_standin): float32 features, int32 label codes
    decoded back to the labels, no n_jobs, and a grid of one forest per cell."""
    X, y, X_val, y_val = arrays
    forest = RandomForest(9, 4, backend="cuml", random_state=7).fit(X, y)
    assert forest.place_ == "cuml" and type(forest.estimator_).__module__.startswith("cuml.")
    expected = RandomForestClassifier(9, max_depth=4, random_state=7, n_jobs=1).fit(X, y).predict(X_val)
    np.testing.assert_array_equal(forest.predict(X_val), expected)  # labels decoded, J still absent

    per_cell = grid([2, 4], "truncate", backend="cuml").fit(X, y, X_val, y_val)  # cuML's trees cannot be cut
    assert per_cell.place_ == "cuml" and per_cell.method_ == "per_depth"
    assert per_cell.forests_grown_ == len(N_AXIS) * 2
    assert all(cell["fit_seconds"] > 0 for cell in per_cell.cells_)
    prefixes = grid([2, 4], backend="sklearn").fit(X, y, X_val, y_val)
    strip = [{k: v for k, v in cell.items() if k != "fit_seconds"} for cell in per_cell.cells_]
    assert strip == [{k: v for k, v in cell.items() if k != "fit_seconds"} for cell in prefixes.cells_]


@pytest.mark.gpu
@requires_cuml
def test_cuml_forest_and_grid_on_the_gpu(arrays):
    X, y, X_val, y_val = arrays
    forest = RandomForest(20, 8, backend="cuml", random_state=0).fit(X, y)
    predicted = forest.predict(X_val)
    assert forest.place_ == "cuml"
    assert predicted.shape == y_val.shape and set(predicted) <= set(y)
    assert np.mean(predicted == y_val) > 0.5

    search = ForestGridSearch((5, 10), (4, 8), backend="cuml", random_state=0, progress=False).fit(X, y, X_val, y_val)
    assert search.place_ == "cuml" and search.method_ == "per_depth"  # cuML's trees cannot be cut
    assert search.forests_grown_ == 4  # no prefix trick on cuML: one forest per cell
    assert all(cell["fit_seconds"] > 0 for cell in search.cells_)
    assert 0 <= search.best_["val_accuracy"] <= 1
