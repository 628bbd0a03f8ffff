"""The study's PCA and random-forest part: every number computed from the data, none typed in.

Training part = the 80/20 stratified split of the train CSV, validation = its 20%, test = the
test CSV (``load_splits(..., val_fraction=REDUCTION_VAL_FRACTION)``).

1. PCA on the training part: the components needed for 95% of the variance, the variance of
   the first two, the cumulative variance curve and 10 sampled images beside their
   reconstruction from the 95% PCA.
2. Random-forest grid searches scored on the validation rows, on raw pixels and on the 95% PCA
   features; the best cell of each (by validation accuracy) refit and tested, with a confusion
   matrix; and forests with the same settings fitted on both feature sets and timed, so that
   "is training faster with PCA, and what does it cost in accuracy?" has a measured answer.

``run_pca_forest_study`` returns a JSON-ready dict and writes the figures; scripts/pca_forest.py
is its command line.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labkit.progress import report, stage
from reduction.backend import select_backend
from reduction.estimators import PCA, RandomForest
from reduction.forest_grid import PREFIX_PLACES, ForestGridSearch, grid_axis, grid_matrix
from reduction.scores import classification_metrics

VARIANCE_TARGET = 0.95
N_SAMPLE_IMAGES = 10


@dataclass(frozen=True)
class StudyProfile:
    """Grid axes and the number of training rows the forests see (None: all of them)."""

    name: str
    raw_n_estimators: tuple[int, ...]
    raw_max_depth: tuple[int, ...]
    pca_n_estimators: tuple[int, ...]
    pca_max_depth: tuple[int, ...]
    forest_train_rows: int | None = None

    def __post_init__(self):
        for axis in ("raw_n_estimators", "raw_max_depth", "pca_n_estimators", "pca_max_depth"):
            object.__setattr__(self, axis, grid_axis(getattr(self, axis), axis.replace("_", " ", 1)))
        if self.forest_train_rows is not None and self.forest_train_rows < 1:
            raise ValueError(f"forest_train_rows must be positive, got {self.forest_train_rows}")


# The reference's grids: 150 forests (60,000 trees) on raw pixels, 70 on the PCA features.
FULL_PROFILE = StudyProfile(
    name="full",
    raw_n_estimators=tuple(range(50, 751, 50)),
    raw_max_depth=tuple(range(5, 51, 5)),
    pca_n_estimators=tuple(range(50, 171, 20)),
    pca_max_depth=tuple(range(5, 51, 5)),
)
# Minutes on a laptop CPU become seconds: small grids and a training-row sample for the
# forests (the PCA still sees the whole training part; it is cheap).
QUICK_PROFILE = StudyProfile(
    name="quick",
    raw_n_estimators=(10, 30, 50),
    raw_max_depth=(5, 10, 15),
    pca_n_estimators=(10, 30, 50),
    pca_max_depth=(5, 10, 15),
    forest_train_rows=4000,
)
PROFILES = {profile.name: profile for profile in (FULL_PROFILE, QUICK_PROFILE)}


@dataclass
class _Clock:
    """Seconds and place per step, in the order the steps ran."""

    seconds: dict = field(default_factory=dict)
    places: dict = field(default_factory=dict)

    def record(self, step: str, start: float, place: str | None = None) -> None:
        self.seconds[step] = time.perf_counter() - start
        if place is not None:
            self.places[step] = place


def run_pca_forest_study(
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    backend: str = "auto",
    seed: int = 22,
    profile: StudyProfile = FULL_PROFILE,
    cache_dir: str | os.PathLike | None = None,
    limit_rows: int | None = None,
    progress: bool = True,
) -> dict:
    """Run the PCA and forest part of the study; write figures to ``out_dir``; return results.

    ``cache_dir`` keeps finished grid depths (None: no cache). ``limit_rows`` keeps the first
    rows of each CSV (quick trials and tests).
    """
    from datamodules import REDUCTION_VAL_FRACTION, load_splits, reference_sample

    chosen = select_backend(backend)  # first, so that an impossible backend fails before any work
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    figures: dict[str, str] = {}

    def note(message: str) -> None:
        if progress:
            report(f"[pca-forest] {message}")

    start = time.perf_counter()
    splits = load_splits(data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=seed, limit_rows=limit_rows)
    clock.record("load_data", start)
    n_train = len(splits.train_images)
    note(f"data: {n_train} training, {len(splits.val_images)} validation, {len(splits.test_images)} test rows")

    # 1. PCA on the whole training part.
    with stage("in the PCA step"):
        start = time.perf_counter()
        pca = PCA(n_components=VARIANCE_TARGET, backend=chosen.name, random_state=seed).fit(splits.train_images)
        clock.record("pca_fit", start, pca.place_)
        start = time.perf_counter()
        train_pca = pca.transform(splits.train_images)
        val_pca = pca.transform(splits.val_images)
        test_pca = pca.transform(splits.test_images)
        clock.record("pca_transform", start, pca.place_)
        first_two = [float(r) for r in pca.explained_variance_ratio_[:2]]
        note(f"PCA: {pca.n_components_} components explain {VARIANCE_TARGET:.0%} of the variance "
             f"(first two: {first_two[0]:.2%} + {first_two[1]:.2%}) on {pca.place_}")
        figures["pca_cumulative_variance"] = _name(_plot_cumulative_variance(pca, out_dir / "pca_cumulative_variance.png"))
        sample = reference_sample(n_train, min(N_SAMPLE_IMAGES, n_train), seed)
        start = time.perf_counter()
        reconstructed = np.clip(pca.inverse_transform(train_pca[sample]), 0, 255)
        clock.record("pca_reconstruct", start, pca.place_)
        figures["pca_reconstruction"] = _name(_plot_reconstruction(splits.train_images[sample], reconstructed,
                                                                splits.train_labels[sample], pca.n_components_,
                                                                out_dir / "pca_reconstruction.png"))
        pca_results = {
            "variance_target": VARIANCE_TARGET,
            "n_components_95": int(pca.n_components_),
            "variance_first_two": first_two,
            "variance_first_two_total": float(sum(first_two)),
            "cumulative_variance": [float(v) for v in pca.cumulative_variance_],
            "reconstruction_rows": [int(i) for i in sample],
            "reconstruction_mse": float(np.mean((reconstructed - splits.train_images[sample].astype(np.float64)) ** 2)),
            "backend": pca.place_,
        }

    # 2. Forest grids on a (possibly sampled) set of training rows; validation rows as they are.
    rows = np.arange(n_train)
    if profile.forest_train_rows is not None and profile.forest_train_rows < n_train:
        rows = reference_sample(n_train, profile.forest_train_rows, seed)
    y_rows = splits.train_labels[rows]
    features = {
        "raw": (splits.train_images[rows], splits.val_images, splits.test_images),
        "pca": (train_pca[rows], val_pca, test_pca),
    }
    axes = {
        "raw": (profile.raw_n_estimators, profile.raw_max_depth),
        "pca": (profile.pca_n_estimators, profile.pca_max_depth),
    }
    grids = {}
    for name in ("raw", "pca"):
        n_axis, depth_axis = axes[name]
        note(f"forest grid on {_FEATURE_NAMES[name]}: n_estimators {list(n_axis)} x max_depth {list(depth_axis)}, "
             f"{len(rows)} training rows")
        start = time.perf_counter()
        X_train, X_val, _ = features[name]
        grid = ForestGridSearch(n_axis, depth_axis, backend=chosen.name, random_state=seed, n_jobs=-1,
                                cache_dir=cache_dir, name=name, progress=progress)
        kept = "finished depths are cached and a rerun resumes from there; no results.json written" if cache_dir else None
        with stage(f"in the {_FEATURE_NAMES[name]} grid", kept):
            grid.fit(X_train, y_rows, X_val, splits.val_labels)
        clock.record(f"forest_grid_{name}", start, grid.place_)
        grids[name] = grid
        heatmap = out_dir / f"forest_{name}_val_accuracy.png"
        figures[f"forest_{name}_heatmap"] = _name(_plot_heatmap(grid, _FEATURE_NAMES[name], heatmap))

    # 3. Best cells refit and tested. Each fit is timed; the times feed step 4, the forests are
    # dropped (a deep 750-tree forest holds about a gigabyte).
    fit_seconds: dict[tuple[str, int, int], float] = {}

    def fit_forest(name: str, n_estimators: int, depth: int) -> RandomForest:
        forest = RandomForest(n_estimators, depth, backend=chosen.name, random_state=seed, n_jobs=-1)
        forest.fit(features[name][0], y_rows)
        fit_seconds[(name, n_estimators, depth)] = forest.fit_seconds_
        return forest

    def timed_fit(name: str, n_estimators: int, depth: int) -> float:
        if (name, n_estimators, depth) not in fit_seconds:
            fit_forest(name, n_estimators, depth)
        return fit_seconds[(name, n_estimators, depth)]

    tests = {}
    for name in ("raw", "pca"):
        best = grids[name].best_
        start = time.perf_counter()
        with stage(f"while refitting and testing the best forest on {_FEATURE_NAMES[name]}"):
            forest = fit_forest(name, best["n_estimators"], best["max_depth"])
            predicted = forest.predict(features[name][2])
        clock.record(f"forest_best_{name}_refit_and_test", start, forest.place_)
        tests[name] = {
            "n_estimators": best["n_estimators"],
            "max_depth": best["max_depth"],
            **{f"test_{metric}": value for metric, value in classification_metrics(splits.test_labels, predicted).items()},
            "fit_seconds": forest.fit_seconds_,
            "backend": forest.place_,
        }
        del forest
        figures[f"forest_{name}_confusion"] = _name(_plot_confusion(
            splits.test_labels, predicted,
            f"Random forest on {_FEATURE_NAMES[name]} (n_estimators={best['n_estimators']}, "
            f"max_depth={best['max_depth']}): test accuracy {tests[name]['test_accuracy']:.3f}",
            out_dir / f"forest_{name}_confusion.png"))
        note(f"best on {_FEATURE_NAMES[name]}: n_estimators={best['n_estimators']}, max_depth={best['max_depth']}, "
             f"validation accuracy {best['val_accuracy']:.4f}, test accuracy {tests[name]['test_accuracy']:.4f}")

    # 4. Same settings on both feature sets, timed: at each grid's best cell.
    pca_seconds = clock.seconds["pca_fit"] + clock.seconds["pca_transform"]
    comparisons = []
    start = time.perf_counter()
    for name in ("raw", "pca"):
        n_estimators, depth = grids[name].best_["n_estimators"], grids[name].best_["max_depth"]
        if comparisons and (comparisons[0]["n_estimators"], comparisons[0]["max_depth"]) == (n_estimators, depth):
            comparisons[0]["settings_from"] += f" and best {name} cell"
            continue
        with stage("while timing forests with and without PCA"):
            without_pca = timed_fit("raw", n_estimators, depth)
            with_pca = timed_fit("pca", n_estimators, depth)
        comparisons.append({
            "settings_from": f"best {name} cell",
            "n_estimators": n_estimators,
            "max_depth": depth,
            "fit_seconds_without_pca": without_pca,
            "fit_seconds_with_pca": with_pca,
            "fit_time_ratio": with_pca / without_pca,
            "fit_seconds_with_pca_including_pca": with_pca + pca_seconds,
        })
    clock.record("forest_fit_time_comparison", start, grids["raw"].place_)
    headline = comparisons[0]

    results = {
        "study": "pca_forest",
        "profile": profile.name,
        "seed": seed,
        "backend": {"requested": backend, "selected": chosen.name},
        "data": {
            "n_train": n_train,
            "n_val": len(splits.val_images),
            "n_test": len(splits.test_images),
            "forest_train_rows": len(rows),
            "limit_rows": limit_rows,
        },
        "pca": pca_results,
        "n_components_95": pca_results["n_components_95"],
        "variance_first_two": first_two,
        "forests": {name: _grid_results(grids[name], len(rows), features[name][0].shape[1]) for name in ("raw", "pca")},
        "test": tests,
        "fit_time": {
            "pca_seconds": pca_seconds,
            "fit_seconds_without_pca": headline["fit_seconds_without_pca"],
            "fit_seconds_with_pca": headline["fit_seconds_with_pca"],
            "fit_time_ratio": headline["fit_time_ratio"],
            "comparisons": comparisons,
            "note": "one timed fit per entry (n_jobs=-1 on scikit-learn); the headline uses the best raw-pixel "
            "cell's settings; pca_seconds is the PCA fit (full spectrum, then the 95% components) plus transforms",
        },
        "test_accuracy_difference_pca_minus_raw": tests["pca"]["test_accuracy"] - tests["raw"]["test_accuracy"],
        "timings": clock.seconds,
        "places": clock.places,
        "figures": figures,
    }
    return results


_FEATURE_NAMES = {"raw": "raw pixels", "pca": "95% PCA features"}


def _name(path: Path) -> str:
    """Figures are listed by file name: results.json sits in the same folder."""
    return Path(path).name


def _grid_results(grid: ForestGridSearch, n_rows: int, n_features: int) -> dict:
    return {
        "n_estimators": sorted({cell["n_estimators"] for cell in grid.cells_}),
        "max_depth": sorted({cell["max_depth"] for cell in grid.cells_}),
        "n_features": int(n_features),
        "n_train_rows": int(n_rows),
        "backend": grid.place_,
        "scoring": "prefixes of one forest per depth" if grid.place_ in PREFIX_PLACES else "one forest per cell",
        "cells": grid.cells_,
        "best": grid.best_,
        "depth_seconds": {str(depth): seconds for depth, seconds in grid.depth_seconds_.items()},
        "forests_grown": grid.forests_grown_,
        "depths_from_cache": grid.depths_from_cache_,
    }


def summary_lines(results: dict) -> list[str]:
    """A few lines for the terminal: the numbers the study asks for."""
    pca = results["pca"]
    lines = [
        f"PCA ({pca['backend']}): {pca['n_components_95']} components explain 95% of the variance; "
        f"the first two explain {pca['variance_first_two'][0]:.2%} and {pca['variance_first_two'][1]:.2%}",
    ]
    for name in ("raw", "pca"):
        best, test = results["forests"][name]["best"], results["test"][name]
        lines.append(
            f"forest on {_FEATURE_NAMES[name]} ({test['backend']}): best n_estimators={best['n_estimators']}, "
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


# Figures ----------------------------------------------------------------------------------


def _plot_cumulative_variance(pca: PCA, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from labkit.figures import save

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


def _plot_reconstruction(originals, reconstructed, labels, n_components: int, path: Path) -> Path:
    from datamodules import letter
    from labkit.figures import image_grid

    titles = [letter(label) for label in labels] * 2
    return image_grid(
        np.concatenate([originals, reconstructed]),
        path,
        titles=titles,
        ncols=len(originals),
        suptitle=f"Training images (top) and their reconstruction from {n_components} PCA components (bottom)",
        row_labels=["original", f"{n_components} PCs"],
    )


def _plot_heatmap(grid: ForestGridSearch, feature_name: str, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from labkit.figures import save

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


def _plot_confusion(y_true, y_pred, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    from datamodules import letter
    from labkit.figures import save

    labels = np.union1d(np.unique(y_true), np.unique(y_pred))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    names = [letter(label) for label in labels]
    fig, ax = plt.subplots(figsize=(0.36 * len(labels) + 2.5, 0.36 * len(labels) + 2))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="test images")
    ax.set_xticks(range(len(labels)), names)
    ax.set_yticks(range(len(labels)), names)
    ax.set_xlabel("predicted letter")
    ax.set_ylabel("true letter")
    threshold = matrix.max() / 2
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=5,
                    color="white" if count > threshold else "black")
    ax.set_title(title, fontsize=9)
    return save(fig, path)


__all__ = [
    "FULL_PROFILE",
    "PROFILES",
    "QUICK_PROFILE",
    "StudyProfile",
    "run_pca_forest_study",
    "summary_lines",
]
