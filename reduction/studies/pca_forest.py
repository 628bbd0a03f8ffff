"""The study's PCA and random-forest part: every number computed from the data, none typed in.

Training part = the 80/20 stratified split of the train CSV, validation = its 20%, test = the
test CSV (``load_splits(..., val_fraction=REDUCTION_VAL_FRACTION)``).

1. PCA on the training part (:func:`_pca_step`): the components needed for 95% of the variance,
   the variance of the first two, the cumulative variance curve and 10 sampled images beside
   their reconstruction from the 95% PCA.
2. Random-forest grid searches scored on the validation rows, on raw pixels and on the 95% PCA
   features (:func:`_grid_step`), each cell from one forest cut at every depth (the profile's
   ``forest_method`` "truncate", the default) or from one forest per depth ("per_depth"; see
   :mod:`reduction.forest_grid`); the best cell of each (by validation accuracy) refit as an
   ordinary forest with its settings and
   tested, with a confusion matrix (:func:`_refit_step`); and forests with the same settings
   fitted on both feature sets and timed (:func:`_fit_time_step`), so that "is training faster
   with PCA, and what does it cost in accuracy?" has a measured answer.

:func:`run` returns a JSON-ready dict and writes the figures; scripts/pca_forest.py is its
command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules import REFERENCE_SEED, letter, reference_sample
from labkit import confusion
from labkit.figures import image_grid, plt, save
from labkit.progress import report, stage
from reduction.backend import where
from reduction.estimators import RandomForest
from reduction.forest_grid import GRID_METHODS, PREFIX_PLACES, TRUNCATE_PLACES, ForestGridSearch, grid_axis, grid_matrix
from reduction.scores import classification_metrics
from reduction.studies.common import VARIANCE_TARGET, StudyRun, fit_variance_pca, pca_transform, split_rows

N_SAMPLE_IMAGES = 10
# The two feature sets, in the order they are searched, and how the output names them.
FEATURE_NAMES = {"raw": "raw pixels", "pca": "95% PCA features"}


@dataclass(frozen=True)
class Profile:
    """Grid axes, the number of training rows the forests see (None: all of them) and how the
    grids are scored (``forest_method``: "truncate" or "per_depth", see :mod:`reduction.forest_grid`)."""

    name: str
    raw_n_estimators: tuple[int, ...]
    raw_max_depth: tuple[int, ...]
    pca_n_estimators: tuple[int, ...]
    pca_max_depth: tuple[int, ...]
    forest_train_rows: int | None = None
    forest_method: str = "truncate"

    def __post_init__(self):
        for axis in ("raw_n_estimators", "raw_max_depth", "pca_n_estimators", "pca_max_depth"):
            object.__setattr__(self, axis, grid_axis(getattr(self, axis), axis.replace("_", " ", 1)))
        if self.forest_train_rows is not None and self.forest_train_rows < 1:
            raise ValueError(f"forest_train_rows must be positive, got {self.forest_train_rows}")
        if self.forest_method not in GRID_METHODS:
            raise ValueError(f"unknown forest_method {self.forest_method!r}; choose one of {', '.join(GRID_METHODS)}")

    def axes(self, features: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(n_estimators axis, max_depth axis) of the grid on ``features`` ("raw" or "pca")."""
        return getattr(self, f"{features}_n_estimators"), getattr(self, f"{features}_max_depth")


# The reference's grids: 150 forests (60,000 trees) on raw pixels, 70 on the PCA features.
FULL = Profile(
    name="full",
    raw_n_estimators=tuple(range(50, 751, 50)),
    raw_max_depth=tuple(range(5, 51, 5)),
    pca_n_estimators=tuple(range(50, 171, 20)),
    pca_max_depth=tuple(range(5, 51, 5)),
)
# Minutes on a laptop CPU become seconds: small grids and a training-row sample for the
# forests (the PCA still sees the whole training part; it is cheap).
QUICK = Profile(
    name="quick",
    raw_n_estimators=(10, 30, 50),
    raw_max_depth=(5, 10, 15),
    pca_n_estimators=(10, 30, 50),
    pca_max_depth=(5, 10, 15),
    forest_train_rows=4000,
)


@dataclass(frozen=True)
class FeatureSet:
    """One feature set's rows: those the forests fit on, the validation rows, the test rows."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


class _ForestFits:
    """Forests on the study's training rows, each fit's seconds kept by (features, trees, depth).

    Callers drop the forests once used (a deep 750-tree forest holds about a gigabyte); the
    times feed the with/without-PCA comparison without fitting the same forest twice.
    """

    def __init__(self, features: dict[str, FeatureSet], labels: np.ndarray, backend: str, seed: int) -> None:
        self.features, self.labels, self.backend, self.seed = features, labels, backend, seed
        self.seconds: dict[tuple[str, int, int], float] = {}

    def fit(self, name: str, n_estimators: int, depth: int) -> RandomForest:
        forest = RandomForest(n_estimators, depth, backend=self.backend, random_state=self.seed, n_jobs=-1)
        forest.fit(self.features[name].train, self.labels)
        self.seconds[(name, n_estimators, depth)] = forest.fit_seconds_
        return forest

    def fit_seconds(self, name: str, n_estimators: int, depth: int) -> float:
        if (name, n_estimators, depth) not in self.seconds:
            self.fit(name, n_estimators, depth)
        return self.seconds[(name, n_estimators, depth)]


def run(
    profile: Profile,
    data,
    out_dir: str | os.PathLike,
    backend: str = "auto",
    *,
    seed: int = REFERENCE_SEED,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Run the PCA and forest part of the study on ``data``; write figures to ``out_dir``; return results.

    ``data`` is the ``SplitArrays`` of ``load_splits(..., val_fraction=REDUCTION_VAL_FRACTION)``;
    ``seed`` is the PCA's, the forests' and the samples' random state; ``cache_dir`` keeps
    finished grid depths, so that a rerun resumes (None: no cache).
    """
    study = StudyRun.start("pca_forest", out_dir, backend)
    n_train = len(data.train_images)
    _say(f"data: {n_train} training, {len(data.val_images)} validation, {len(data.test_images)} test rows")

    (train_pca, val_pca, test_pca), pca_results = _pca_step(study, data, seed)

    # The forests fit on a (possibly sampled) set of training rows; validation and test rows as they are.
    rows = np.arange(n_train)
    if profile.forest_train_rows is not None and profile.forest_train_rows < n_train:
        rows = reference_sample(n_train, profile.forest_train_rows, seed)
    labels = data.train_labels[rows]
    features = {
        "raw": FeatureSet(data.train_images[rows], data.val_images, data.test_images),
        "pca": FeatureSet(train_pca[rows], val_pca, test_pca),
    }
    grids = {
        name: _grid_step(study, name, profile, features[name], labels, data.val_labels, seed, cache_dir)
        for name in FEATURE_NAMES
    }
    fits = _ForestFits(features, labels, study.backend.name, seed)
    tests = {name: _refit_step(study, name, grids[name].best_, fits, data.test_labels) for name in FEATURE_NAMES}
    fit_time = _fit_time_step(study, grids, fits)

    headline = {
        "n_components_95": pca_results["n_components_95"],
        **{f"{name}/test_accuracy": tests[name]["test_accuracy"] for name in FEATURE_NAMES},
        **{f"{name}/best_val_accuracy": grids[name].best_["val_accuracy"] for name in FEATURE_NAMES},
        "fit_time_ratio_pca_to_raw": fit_time["fit_time_ratio"],
    }
    return study.results(
        profile,
        seed,
        headline=headline,
        data={**split_rows(data), "forest_train_rows": len(rows)},
        pca=pca_results,
        n_components_95=pca_results["n_components_95"],
        variance_first_two=pca_results["variance_first_two"],
        forests={name: _grid_results(grids[name], len(rows), features[name].train.shape[1]) for name in FEATURE_NAMES},
        test=tests,
        fit_time=fit_time,
        test_accuracy_difference_pca_minus_raw=tests["pca"]["test_accuracy"] - tests["raw"]["test_accuracy"],
    )


def _say(message: str) -> None:
    report(f"[pca-forest] {message}")


# Steps ---------------------------------------------------------------------------------------


def _pca_step(study: StudyRun, data, seed: int) -> tuple[tuple[np.ndarray, ...], dict]:
    """The 95% PCA of the training part: ((train, val, test) PCA features, the "pca" results section)."""
    with stage("in the PCA step"):
        pca = fit_variance_pca(study, data.train_images, seed)
        transformed = pca_transform(study, pca, data.train_images, data.val_images, data.test_images)
        first_two = [float(r) for r in pca.explained_variance_ratio_[:2]]
        _say(f"PCA: {pca.n_components_} components explain {VARIANCE_TARGET:.0%} of the variance "
             f"(first two: {first_two[0]:.2%} + {first_two[1]:.2%}) on {pca.place_}")
        study.figure("pca_cumulative_variance", plot_cumulative_variance(pca, study.out_dir / "pca_cumulative_variance.png"))
        n_train = len(data.train_images)
        sample = reference_sample(n_train, min(N_SAMPLE_IMAGES, n_train), seed)
        originals = data.train_images[sample]
        with study.timer.step("pca_reconstruct", pca.place_):
            reconstructed = np.clip(pca.inverse_transform(transformed[0][sample]), 0, 255)
        study.figure("pca_reconstruction", plot_reconstruction(
            originals, reconstructed, data.train_labels[sample], pca.n_components_, study.out_dir / "pca_reconstruction.png"))
    return transformed, {
        "variance_target": VARIANCE_TARGET,
        "n_components_95": int(pca.n_components_),
        "variance_first_two": first_two,
        "variance_first_two_total": float(sum(first_two)),
        "cumulative_variance": [float(v) for v in pca.cumulative_variance_],
        "reconstruction_rows": [int(i) for i in sample],
        "reconstruction_mse": float(np.mean((reconstructed - originals.astype(np.float64)) ** 2)),
        "backend": pca.place_,
    }


def _grid_step(study: StudyRun, name: str, profile: Profile, features: FeatureSet, labels, val_labels, seed: int,
               cache_dir) -> ForestGridSearch:
    """The grid search on one feature set, scored on the validation rows, and its heatmap."""
    n_axis, depth_axis = profile.axes(name)
    feature_name = FEATURE_NAMES[name]
    _say(f"forest grid on {feature_name}: n_estimators {list(n_axis)} x max_depth {list(depth_axis)}, "
         f"{len(labels)} training rows")
    grid = ForestGridSearch(n_axis, depth_axis, backend=study.backend.name, random_state=seed, n_jobs=-1,
                            cache_dir=cache_dir, name=name, method=profile.forest_method)
    # What a Ctrl-C keeps follows the cache's unit: a depth, or a whole truncated grid (cuML's
    # trees cannot be cut, so there the grid goes depth by depth whatever the profile says).
    truncates = profile.forest_method == "truncate" and where("random_forest", study.backend) in TRUNCATE_PLACES
    kept = None
    if cache_dir and truncates:
        kept = ("finished grids are cached and a rerun takes them from there; this grid starts again; "
                "no results.json written")
    elif cache_dir:
        kept = "finished depths are cached and a rerun resumes from there; no results.json written"
    with stage(f"in the {feature_name} grid", kept), study.timer.step(f"forest_grid_{name}") as step:
        grid.fit(features.train, labels, features.val, val_labels)
        step.place = grid.place_
    study.figure(f"forest_{name}_heatmap",
                 plot_grid_heatmap(grid, feature_name, study.out_dir / f"forest_{name}_val_accuracy.png"))
    return grid


def _refit_step(study: StudyRun, name: str, best: dict, fits: _ForestFits, test_labels) -> dict:
    """The grid's best cell refit and tested, with its confusion matrix: a "test" results entry."""
    feature_name = FEATURE_NAMES[name]
    with (stage(f"while refitting and testing the best forest on {feature_name}"),
          study.timer.step(f"forest_best_{name}_refit_and_test") as step):
        forest = fits.fit(name, best["n_estimators"], best["max_depth"])
        predicted = forest.predict(fits.features[name].test)
        step.place = forest.place_
    test = {
        "n_estimators": best["n_estimators"],
        "max_depth": best["max_depth"],
        **{f"test_{metric}": value for metric, value in classification_metrics(test_labels, predicted).items()},
        "fit_seconds": forest.fit_seconds_,
        "backend": forest.place_,
    }
    del forest
    study.figure(f"forest_{name}_confusion", plot_confusion(
        test_labels, predicted,
        f"Random forest on {feature_name} (n_estimators={best['n_estimators']}, max_depth={best['max_depth']}): test set",
        study.out_dir / f"forest_{name}_confusion.png"))
    _say(f"best on {feature_name}: n_estimators={best['n_estimators']}, max_depth={best['max_depth']}, "
         f"validation accuracy {best['val_accuracy']:.4f}, test accuracy {test['test_accuracy']:.4f}")
    return test


def _fit_time_step(study: StudyRun, grids: dict[str, ForestGridSearch], fits: _ForestFits) -> dict:
    """Forests with the same settings on both feature sets, timed at each grid's best cell."""
    pca_seconds = study.timer.seconds("pca_fit") + study.timer.seconds("pca_transform")
    comparisons = []
    with study.timer.step("forest_fit_time_comparison", grids["raw"].place_):
        for name in FEATURE_NAMES:
            n_estimators, depth = grids[name].best_["n_estimators"], grids[name].best_["max_depth"]
            if comparisons and (comparisons[0]["n_estimators"], comparisons[0]["max_depth"]) == (n_estimators, depth):
                comparisons[0]["settings_from"] += f" and best {name} cell"
                continue
            with stage("while timing forests with and without PCA"):
                without_pca = fits.fit_seconds("raw", n_estimators, depth)
                with_pca = fits.fit_seconds("pca", n_estimators, depth)
            comparisons.append({
                "settings_from": f"best {name} cell",
                "n_estimators": n_estimators,
                "max_depth": depth,
                "fit_seconds_without_pca": without_pca,
                "fit_seconds_with_pca": with_pca,
                "fit_time_ratio": with_pca / without_pca,
                "fit_seconds_with_pca_including_pca": with_pca + pca_seconds,
            })
    headline = comparisons[0]
    return {
        "pca_seconds": pca_seconds,
        "fit_seconds_without_pca": headline["fit_seconds_without_pca"],
        "fit_seconds_with_pca": headline["fit_seconds_with_pca"],
        "fit_time_ratio": headline["fit_time_ratio"],
        "comparisons": comparisons,
        "note": "one timed fit per entry (n_jobs=-1 on scikit-learn); the headline uses the best raw-pixel "
        "cell's settings; pca_seconds is the PCA fit (full spectrum, then the 95% components) plus transforms",
    }


def _grid_results(grid: ForestGridSearch, n_rows: int, n_features: int) -> dict:
    return {
        "n_estimators": sorted({cell["n_estimators"] for cell in grid.cells_}),
        "max_depth": sorted({cell["max_depth"] for cell in grid.cells_}),
        "n_features": int(n_features),
        "n_train_rows": int(n_rows),
        "backend": grid.place_,
        "method": grid.method_,
        "scoring": _scoring_text(grid),
        "cells": grid.cells_,
        "best": grid.best_,
        "seconds": grid.seconds_,
        "grow_seconds": grid.grow_seconds_,
        "score_seconds": grid.score_seconds_,
        "grown_max_depth": grid.grown_max_depth_,
        "depth_seconds": {str(depth): seconds for depth, seconds in grid.depth_seconds_.items()},
        "forests_grown": grid.forests_grown_,
        "trees_grown": grid.trees_grown_,
        "depths_from_cache": grid.depths_from_cache_,
    }


def _scoring_text(grid: ForestGridSearch) -> str:
    if grid.method_ == "truncate":
        return (f"one forest of {max(c['n_estimators'] for c in grid.cells_)} trees grown to max_depth="
                f"{grid.grown_max_depth_}, cut at each depth, scored on prefixes of its trees")
    return "prefixes of one forest per depth" if grid.place_ in PREFIX_PLACES else "one forest per cell"


def summary_lines(results: dict) -> list[str]:
    """A few lines for the terminal: the numbers the study asks for."""
    pca = results["pca"]
    lines = [
        f"PCA ({pca['backend']}): {pca['n_components_95']} components explain 95% of the variance; "
        f"the first two explain {pca['variance_first_two'][0]:.2%} and {pca['variance_first_two'][1]:.2%}",
    ]
    for name, feature_name in FEATURE_NAMES.items():
        best, test = results["forests"][name]["best"], results["test"][name]
        lines.append(
            f"forest on {feature_name} ({test['backend']}): best n_estimators={best['n_estimators']}, "
            f"max_depth={best['max_depth']} (validation accuracy {best['val_accuracy']:.4f}); test accuracy "
            f"{test['test_accuracy']:.4f}, precision {test['test_precision']:.4f}, recall {test['test_recall']:.4f}, "
            f"F1 {test['test_f1']:.4f}"
        )
    fit = results["fit_time"]
    for comparison in fit["comparisons"]:
        lines.append(
            f"fit time at n_estimators={comparison['n_estimators']}, max_depth={comparison['max_depth']} "
            f"({comparison['settings_from']}): {comparison['fit_seconds_without_pca']:.2f} s on raw pixels, "
            f"{comparison['fit_seconds_with_pca']:.2f} s on PCA features (ratio {comparison['fit_time_ratio']:.2f}; "
            f"PCA itself {fit['pca_seconds']:.2f} s)"
        )
    difference = results["test_accuracy_difference_pca_minus_raw"]
    lines.append(f"test accuracy with PCA minus without: {difference:+.4f}")
    return lines


# Figures -------------------------------------------------------------------------------------


def plot_cumulative_variance(pca, path: str | os.PathLike) -> Path:
    """The cumulative explained variance against the number of components, the 95% count marked."""
    cumulative = pca.cumulative_variance_
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(cumulative) + 1), cumulative, lw=1.5)
    ax.axhline(VARIANCE_TARGET, color="gray", ls="--", lw=1)
    ax.axvline(pca.n_components_, color="tab:red", ls=":", lw=1)
    ax.annotate(f"{pca.n_components_} components", (pca.n_components_, VARIANCE_TARGET),
                xytext=(8, -18), textcoords="offset points", color="tab:red")
    ax.set_xscale("log")
    ax.set_xlabel("number of components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_title("PCA on the training part")
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_reconstruction(originals, reconstructed, labels, n_components: int, path: str | os.PathLike) -> Path:
    """Images (top row) above their reconstruction from ``n_components`` components (bottom row)."""
    titles = [letter(label) for label in labels] * 2
    return image_grid(
        np.concatenate([originals, reconstructed]),
        path,
        titles=titles,
        ncols=len(originals),
        suptitle=f"Training images (top) and their reconstruction from {n_components} PCA components (bottom)",
        row_labels=["original", f"{n_components} PCs"],
    )


def plot_grid_heatmap(grid: ForestGridSearch, feature_name: str, path: str | os.PathLike) -> Path:
    """Validation accuracy per (n_estimators, max_depth) cell, the best cell framed in red."""
    from matplotlib.patches import Rectangle

    values, n_axis, depth_axis = grid_matrix(grid.cells_, "val_accuracy")
    fig, ax = plt.subplots(figsize=(max(5, 0.62 * len(n_axis) + 2), max(3, 0.45 * len(depth_axis) + 1.5)))
    image = ax.imshow(values, cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label="validation accuracy")
    ax.set_xticks(range(len(n_axis)), [str(n) for n in n_axis], rotation=90 if len(n_axis) > 10 else 0)
    ax.set_yticks(range(len(depth_axis)), [str(d) for d in depth_axis])
    ax.set_xlabel("n_estimators")
    ax.set_ylabel("max_depth")
    middle = np.nanmin(values) + 0.5 * (np.nanmax(values) - np.nanmin(values))
    for (row, col), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(col, row, f"{value:.3f}", ha="center", va="center", fontsize=6,
                    color="black" if value > middle else "white")
    best = grid.best_
    col, row = n_axis.index(best["n_estimators"]), depth_axis.index(best["max_depth"])
    ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    ax.set_title(f"Random forest on {feature_name}: validation accuracy ({grid.place_})")
    return save(fig, path)


def plot_confusion(y_true, y_pred, title: str, path: str | os.PathLike) -> Path:
    """The test letters' confusion matrix (:func:`labkit.confusion.confusion_figure`) as a PNG."""
    return save(confusion.confusion_figure(y_true, y_pred, letter, title), path)
