"""The study's 2-D maps: PCA(2), t-SNE, LLE and MDS of the training images, with figures and scores.

:func:`run` maps the training part of the 80/20 split with each method (every algorithm through
:func:`reduction.backend.implementation`, so it runs on cuML where cuML has it); for each map
(:func:`_map_step`) it writes a scatter of the first points coloured by letter and a map of
image thumbnails, and records the rows, fit time, place, trustworthiness, 2-D k-NN accuracy and
the parameters used.

The full profile is the reference's: PCA, t-SNE and LLE on all training rows, MDS on the
5,000 rows ``DataFrame.sample(n=5000, random_state=22)`` picks, t-SNE for 1,000 iterations.
MDS keeps the reference's settings (4 SMACOF runs of up to 300 iterations) but draws the four
random starts from one seed each (``mds_n_jobs``), as scikit-learn's ``n_jobs`` does, so that
scikit-learn can run them in parallel (the torch SMACOF runs them as one batch either way); the
reference's scikit-learn drew them one after another from one random stream, so the random
starts, and the map, differ from that loop's (``init_draws`` in the results).
The quick profile maps 2,000 sampled rows, MDS 500, with 500 t-SNE iterations.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb

from datamodules import PRESENT_LABELS, REFERENCE_SEED, letter, reference_sample
from labkit.errors import SettingsError
from labkit.figures import plt, save
from labkit.progress import Progress, duration, printed_lines, report, stage
from reduction.backend import place_device, place_name, select_backend, where
from reduction.choices import MAP_METHODS
from reduction.estimators import LLE, MDS, PCA, TSNE
from reduction.scores import knn_accuracy, trustworthiness_on_sample
from reduction.studies.common import StudyRun, split_rows

METHODS = MAP_METHODS
METHOD_TITLES = {"pca": "PCA (2 components)", "tsne": "t-SNE", "lle": "LLE", "mds": "MDS"}


@dataclass(frozen=True)
class Profile:
    """How many rows each map sees, how long t-SNE runs, and how the maps are scored and drawn."""

    name: str
    map_rows: int | None  # rows for PCA / t-SNE / LLE; None: all training rows, in order
    mds_rows: int  # MDS is O(N^2) in memory and time: the reference used a 5,000-row sample
    tsne_max_iter: int
    scatter_points: int = 1000  # the first points of the map, as in the reference's scatter
    trust_sample: int = 2000  # rows for trustworthiness (its cost is quadratic)
    trust_neighbors: int = 5  # scikit-learn's default
    knn_neighbors: int = 5
    knn_folds: int = 5
    lle_neighbors: int = 10
    thumbnails_per_axis: int = 25  # thumbnail size: 1/25 of the map's width and height
    # MDS's 4 SMACOF runs in parallel on all cores (None: one after another, as the reference's
    # scikit-learn 1.2 ran them). Same algorithm and settings; each run starts from its own seed
    # drawn from the seed, so the map differs from the serial loop's (see reduction.estimators.MDS).
    mds_n_jobs: int | None = -1


FULL = Profile("full", map_rows=None, mds_rows=5000, tsne_max_iter=1000)
# 500 t-SNE iterations: scikit-learn's 250-iteration exaggeration phase plus 250 ordinary ones
# (at its minimum of 250 the map would be all exaggeration phase).
QUICK = Profile("quick", map_rows=2000, mds_rows=500, tsne_max_iter=500)


def run(
    profile: Profile,
    data,
    out_dir: str | os.PathLike,
    backend: str = "auto",
    *,
    seed: int = REFERENCE_SEED,
    methods=METHODS,
) -> dict:
    """Fit the ``methods``' maps of ``data``'s training part, write their figures to ``out_dir``; the results.

    ``data`` is the ``SplitArrays`` of ``load_splits(..., val_fraction=REDUCTION_VAL_FRACTION)``;
    ``seed`` is the maps' and the samples' random state. Progress goes to the ``sign_mnist_lab``
    logger: a line when each map starts and one when it ends, with its time.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SettingsError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    methods = [m for m in METHODS if m in methods]
    study = StudyRun.start("embed", out_dir, backend)
    progress = Progress(len(methods), "embed", estimate=False)  # a map's time says nothing of the next one's
    maps = {}
    for number, method in enumerate(methods, 1):
        maps[method] = _map_step(study, method, f"{number}/{len(methods)}", profile, data, seed)
        progress.step(f"{method} done: fit {maps[method]['seconds']:.1f} s on {maps[method]['place']}")
    headline = {f"{method}/{score}": entry[score] for method, entry in maps.items()
                for score in ("trustworthiness", "knn_accuracy")}
    return study.results(profile, seed, data=split_rows(data), headline=headline, methods=maps)


def _map_step(study: StudyRun, method: str, count: str, profile: Profile, data, seed: int) -> dict:
    """One map: fitted (steps ``<method>_fit``), drawn (``<method>_figures``), scored (``<method>_scores``)."""
    images = data.train_images
    rows = map_rows(method, len(images), profile, seed)
    X, y = images[rows].astype(np.float32), data.train_labels[rows]
    title = METHOD_TITLES[method]
    report(f"[embed {count}] {method}: fitting {len(rows)} rows ...")
    with stage(f"in the {title} map ({count}, {len(rows)} rows)"), study.timer.step(f"{method}_fit") as step:
        embedding, estimator, params, details = fit_map(method, X, profile, study.backend.name, seed)
        step.place = estimator.place_
    with study.timer.step(f"{method}_figures"):
        scatter = study.figure(f"{method}_scatter", plot_scatter(
            embedding, y, title, profile.scatter_points, study.out_dir / f"{method}_scatter.png"))
        layout = thumbnail_layout(embedding, profile.thumbnails_per_axis)
        thumbnails = study.figure(f"{method}_thumbnails", plot_thumbnails(
            embedding, images[rows], y, layout, title, study.out_dir / f"{method}_thumbnails.png"))
    with study.timer.step(f"{method}_scores"):
        trustworthiness = trustworthiness_on_sample(X, embedding, profile.trust_neighbors, profile.trust_sample, seed)
        knn = knn_accuracy(embedding, y, profile.knn_neighbors, profile.knn_folds, seed)
    return {
        "rows": int(len(rows)),
        "row_selection": "all training rows" if len(rows) == len(images) else f"reference_sample(n={len(rows)}, seed={seed})",
        "seconds": round(study.timer.seconds(f"{method}_fit"), 3),
        "place": estimator.place_,
        "trustworthiness": trustworthiness,
        "trustworthiness_neighbors": profile.trust_neighbors,
        "trustworthiness_rows": int(min(profile.trust_sample, len(rows))),
        "knn_accuracy": knn,
        "knn_neighbors": profile.knn_neighbors,
        "knn_folds": profile.knn_folds,
        "parameters": params,
        **details,
        "figures": {"scatter": scatter, "thumbnails": thumbnails},
        "thumbnails_placed": int(len(layout.chosen)),
    }


def fit_map(method: str, X: np.ndarray, profile: Profile, backend: str, seed: int):
    """Fit one map: (embedding [N, 2], fitted estimator, parameters given to it, method-specific details)."""
    if method == "pca":
        estimator = PCA(n_components=2, backend=backend, random_state=seed)
        embedding = estimator.fit_transform(X).astype(np.float64)
        params = {"n_components": 2, "random_state": seed}
        details = {"explained_variance_ratio": [float(v) for v in estimator.explained_variance_ratio_]}
    elif method == "tsne":
        estimator = TSNE(max_iter=profile.tsne_max_iter, init="random", learning_rate="auto", random_state=seed, backend=backend,
                         verbose=2)
        with printed_lines(TSNELines("[tsne]", profile.tsne_max_iter)):
            embedding = estimator.fit_transform(X)
        params = estimator.params_
        details = {"learning_rate": estimator.learning_rate_, "kl_divergence": estimator.kl_divergence_, "n_iter": estimator.n_iter_}
    elif method == "lle":
        estimator = LLE(n_neighbors=profile.lle_neighbors, random_state=seed, backend=backend)
        embedding = estimator.fit_transform(X)
        params = estimator.params_
        details = {"reconstruction_error": estimator.reconstruction_error_}
    elif method == "mds":
        # scikit-learn's serial SMACOF runs print each iteration's stress here (reported per run);
        # parallel ones run in worker processes, whose prints would bypass the log: a heartbeat
        # covers them. The torch SMACOF reports each run's end itself.
        serial = profile.mds_n_jobs is None
        estimator = MDS(random_state=seed, backend=backend, n_jobs=profile.mds_n_jobs, verbose=2 if serial else 0)
        chosen = select_backend(backend)
        device = place_device(place_name(where("mds", chosen), chosen))
        how = f"as one batch on {device}" if device else "one after another" if serial else "in parallel worker processes"
        report(f"[mds] {estimator.n_init} SMACOF runs of up to {estimator.max_iter} iterations on {len(X)} rows, {how}")
        with printed_lines(SMACOFLines("[mds]", estimator.n_init, estimator.max_iter)):
            embedding = estimator.fit_transform(X)
        params = estimator.params_
        details = {"stress": estimator.stress_, "stress_1": estimator.stress_1_, "n_iter": estimator.n_iter_,
                   "init_draws": estimator.init_draws_}
    else:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return embedding, estimator, params, details


class TSNELines:
    """scikit-learn's t-SNE prints (``verbose=2``) as progress lines: its stages, and every 50th
    iteration's KL divergence with the time left (from the pace of the last 50)."""

    ITERATION = re.compile(r"\[t-SNE\] Iteration (\d+): error = (\S+), gradient norm = \S+ \((\d+) iterations in (\S+)s\)")

    def __init__(self, title: str, max_iter: int) -> None:
        self.title, self.max_iter = title, max_iter

    def __call__(self, line: str):
        match = self.ITERATION.match(line)
        if match:
            done, error, chunk, seconds = int(match[1]), float(match[2]), int(match[3]), float(match[4].rstrip("s"))
            left = seconds / max(chunk, 1) * max(self.max_iter - done, 0)
            return (f"{self.title} iteration {done}/{self.max_iter}: KL divergence {error:.4f} ... ~{duration(left)} left",
                    False)
        text = line.removeprefix("[t-SNE] ")
        return f"{self.title} {text}", text.startswith(("KL divergence after", "Computed neighbors", "Iteration"))


class SMACOFLines:
    """scikit-learn's serial SMACOF prints (MDS ``verbose=2``) as progress lines: each run's start,
    its stress now and then with an upper bound of the time left, and its end with its stress."""

    ITERATION = re.compile(r"Iteration (\d+), stress (\S+)")
    CONVERGED = re.compile(r"Convergence criterion reached \(iteration (\d+)\)")

    def __init__(self, title: str, n_init: int, max_iter: int) -> None:
        self.title, self.n_init, self.max_iter = title, n_init, max_iter
        self.run, self.iterations, self.stress, self.open, self.began = 0, 0, None, False, time.monotonic()

    def __call__(self, line: str):
        if match := self.CONVERGED.match(line):
            return self._ended(int(match[1]) + 1, "converged")
        match = self.ITERATION.match(line)
        if not match:
            return None
        iteration, lines = int(match[1]), []
        if iteration == 0:  # a new run begins (the previous one, if open, ran all its iterations)
            lines += self.finish()
            self.run, self.open, self.began = self.run + 1, True, time.monotonic()
            lines.append((f"{self.title} SMACOF run {self.run}/{self.n_init}: started", True))
        self.iterations, self.stress = iteration + 1, float(match[2])
        pace = (time.monotonic() - self.began) / self.iterations
        bound = pace * ((self.max_iter - self.iterations) + (self.n_init - self.run) * self.max_iter)
        lines.append((f"{self.title} SMACOF run {self.run}/{self.n_init}: iteration {self.iterations}/{self.max_iter}, "
                      f"stress {self.stress:.6g} ... at most ~{duration(bound)} left", False))
        return lines

    def _ended(self, iterations: int, how: str):
        self.open = False
        return [(f"{self.title} SMACOF run {self.run}/{self.n_init}: stress {self.stress:.6g} after {iterations} "
                 f"iterations ({how}, {duration(time.monotonic() - self.began)})", True)]

    def finish(self):
        return self._ended(self.iterations, "iteration limit") if self.open else []


def map_rows(method: str, n_train: int, profile: Profile, seed: int) -> np.ndarray:
    """Positions in the training part that a method maps (the reference's pandas samples)."""
    n = profile.mds_rows if method == "mds" else profile.map_rows
    if n is None or n >= n_train:
        return np.arange(n_train)
    return reference_sample(n_train, n, seed)


def summary_lines(results: dict) -> list[str]:
    """A small table for the terminal: one line per map."""
    header = f"{'map':<6}{'rows':>7}  {'place':<13}{'fit s':>8}{'trust':>8}{'k-NN acc':>10}"
    lines = [header, "-" * len(header)]
    for method, r in results["methods"].items():
        knn = "-" if r["knn_accuracy"] is None else f"{r['knn_accuracy']:.3f}"
        lines.append(f"{method:<6}{r['rows']:>7}  {r['place']:<13}{r['seconds']:>8.1f}{r['trustworthiness']:>8.3f}{knn:>10}")
    return lines


# Figures -------------------------------------------------------------------------------------

# 24 clearly distinct colours, one per letter present: tab10, then 14 more picked one by one
# from matplotlib's qualitative palettes (and a few named colours), each the farthest in CIELAB
# from those already picked, skipping colours too light for a white background. The closest
# pair differs by a CIELAB distance of about 28 (10 is already easy to tell apart).
LETTER_COLOURS = (
    *("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"),
    *("#bcbd22", "#17becf", "#ff00ff", "#000000", "#000080", "#e7cb94", "#637939", "#ff1493"),
    *("#a6761d", "#ff9896", "#1b9e77", "#98df8a", "#aec7e8", "#393b79", "#800000", "#e6ab02"),
)


def label_colours(labels) -> np.ndarray:
    """RGB [N, 3] for labels, one colour per present letter (PRESENT_LABELS order)."""
    palette = np.asarray([to_rgb(colour) for colour in LETTER_COLOURS])
    position = {label: k for k, label in enumerate(PRESENT_LABELS)}
    return palette[[position[int(label)] for label in labels]]


@dataclass(frozen=True)
class ThumbnailLayout:
    """Where a map's thumbnails go: the drawn window, one thumbnail's size, the points that get one."""

    limits: tuple[tuple[float, float], tuple[float, float]]  # ((xmin, xmax), (ymin, ymax))
    box: tuple[float, float]  # (width, height)
    chosen: np.ndarray  # indices of the points with a thumbnail


def thumbnail_layout(embedding, per_axis: int = 25) -> ThumbnailLayout:
    """Thumbnails 1/``per_axis`` of the window wide and high, placed by :func:`place_thumbnails`.

    The window is the 0.5-99.5 percentile range of each axis widened by 5%: a few far outliers
    (LLE makes them) would otherwise shrink the thumbnails of everything else to nothing.
    """
    embedding = np.asarray(embedding, dtype=float)
    limits = []
    for column in embedding.T:
        low, high = np.percentile(column, [0.5, 99.5])
        span = high - low if high > low else 1.0
        limits.append((low - 0.05 * span, high + 0.05 * span))
    limits = tuple(limits)
    box = ((limits[0][1] - limits[0][0]) / per_axis, (limits[1][1] - limits[1][0]) / per_axis)
    return ThumbnailLayout(limits, box, place_thumbnails(embedding, box, limits))


def place_thumbnails(points, box, limits=None) -> np.ndarray:
    """Greedy thumbnail placement: indices of the points that get a thumbnail.

    Each thumbnail is a ``box = (width, height)`` rectangle centred on its point. Points are
    taken in order; a point gets a thumbnail when its rectangle lies inside ``limits``
    ``((xmin, xmax), (ymin, ymax))`` (if given) and overlaps no thumbnail already placed
    (rectangles that only touch do not overlap). A grid of box-sized cells keeps this linear.
    """
    points = np.asarray(points, dtype=float)
    width, height = float(box[0]), float(box[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"box must have a positive width and height, got {box}")
    placed: list[int] = []
    cells: dict[tuple[int, int], list[int]] = {}
    for index, (x, y) in enumerate(points):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        if limits is not None:
            (xmin, xmax), (ymin, ymax) = limits
            if x - width / 2 < xmin or x + width / 2 > xmax or y - height / 2 < ymin or y + height / 2 > ymax:
                continue
        cx, cy = int(np.floor(x / width)), int(np.floor(y / height))
        # Overlapping rectangles have centres closer than (width, height): neighbouring cells.
        clash = any(
            abs(points[other, 0] - x) < width and abs(points[other, 1] - y) < height
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
            for other in cells.get((cx + dx, cy + dy), ())
        )
        if not clash:
            placed.append(index)
            cells.setdefault((cx, cy), []).append(index)
    return np.asarray(placed, dtype=int)


def plot_scatter(embedding, labels, title: str, n_points: int, path: str | os.PathLike) -> Path:
    """The first ``n_points`` of the map, one colour per letter, with a legend of letters."""
    embedding, labels = np.asarray(embedding)[:n_points], np.asarray(labels)[:n_points]
    colours = label_colours(labels)
    fig, ax = plt.subplots(figsize=(8.5, 7))
    for label in PRESENT_LABELS:
        mask = labels == label
        if mask.any():
            ax.scatter(*embedding[mask].T, s=12, color=colours[mask][0], label=letter(label), alpha=0.85, linewidths=0)
    ax.set_title(f"{title}: first {len(embedding)} points")
    ax.legend(title="letter", loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=2, fontsize=8, markerscale=1.5)
    ax.set_xlabel("dimension 1")
    ax.set_ylabel("dimension 2")
    return save(fig, path)


def plot_thumbnails(embedding, images, labels, layout: ThumbnailLayout, title: str, path: str | os.PathLike) -> Path:
    """The map with image thumbnails at the points ``layout`` chose.

    All points are drawn as small dots in their letter's colour; the thumbnails are framed in
    the same colour.
    """
    embedding = np.asarray(embedding, dtype=float)
    box = layout.box
    colours = label_colours(labels)
    fig, ax = plt.subplots(figsize=(10, 10))
    ax.scatter(*embedding.T, s=2, c=colours, alpha=0.3, linewidths=0)
    for index in layout.chosen:
        x, y = embedding[index]
        extent = (x - box[0] / 2, x + box[0] / 2, y - box[1] / 2, y + box[1] / 2)
        ax.imshow(np.asarray(images[index]).reshape(28, 28), cmap="gray", vmin=0, vmax=255, extent=extent, zorder=2)
        ax.add_patch(
            plt.Rectangle((extent[0], extent[2]), box[0], box[1], fill=False, edgecolor=colours[index], linewidth=1.2, zorder=3)
        )
    ax.set_xlim(*layout.limits[0])
    ax.set_ylim(*layout.limits[1])
    ax.set_aspect("auto")
    ax.set_title(f"{title}: {len(layout.chosen)} thumbnails of {len(embedding)} points")
    return save(fig, path)
