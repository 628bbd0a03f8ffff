"""The study's 2-D maps: PCA(2), t-SNE, LLE and MDS of the training images, with figures and scores.

:func:`run_embed_study` loads the 80/20 split's training part, fits each map (every algorithm
through :func:`reduction.backend.implementation`, so it runs on cuML where cuML has it), and for
each map writes a scatter of the first points coloured by letter and a map of image thumbnails,
and returns a JSON-ready dict with the rows, fit time, place, trustworthiness, 2-D k-NN accuracy
and the parameters used.

The full profile is the reference's: PCA, t-SNE and LLE on all training rows, MDS on the
5,000 rows ``DataFrame.sample(n=5000, random_state=22)`` picks, t-SNE for 1,000 iterations.
The quick profile maps 2,000 sampled rows, MDS 500, with 500 t-SNE iterations.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb

from labkit.figures import plt, save

METHODS = ("pca", "tsne", "lle", "mds")
METHOD_TITLES = {"pca": "PCA (2 components)", "tsne": "t-SNE", "lle": "LLE", "mds": "MDS"}


@dataclass(frozen=True)
class Profile:
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


FULL = Profile("full", map_rows=None, mds_rows=5000, tsne_max_iter=1000)
# 500 t-SNE iterations: scikit-learn's 250-iteration exaggeration phase plus 250 ordinary ones
# (at its minimum of 250 the map would be all exaggeration phase).
QUICK = Profile("quick", map_rows=2000, mds_rows=500, tsne_max_iter=500)

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
    from datamodules.splits import PRESENT_LABELS

    palette = np.asarray([to_rgb(colour) for colour in LETTER_COLOURS])
    position = {label: k for k, label in enumerate(PRESENT_LABELS)}
    return palette[[position[int(label)] for label in labels]]


# ----------------------------------------------------------------------------- figures


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


def _robust_limits(embedding: np.ndarray, margin: float = 0.05):
    """The 0.5-99.5 percentile window, widened by ``margin``: a few far outliers (LLE makes
    them) would otherwise shrink the thumbnails of everything else to nothing."""
    limits = []
    for column in embedding.T:
        low, high = np.percentile(column, [0.5, 99.5])
        span = high - low if high > low else 1.0
        limits.append((low - margin * span, high + margin * span))
    return tuple(limits)


def scatter_figure(embedding, labels, path, title: str, n_points: int = 1000) -> Path:
    """The first ``n_points`` of the map, one colour per letter, with a legend of letters."""
    from datamodules.splits import PRESENT_LABELS, letter

    embedding, labels = np.asarray(embedding)[:n_points], np.asarray(labels)[:n_points]
    colours = label_colours(labels)
    fig, ax = plt.subplots(figsize=(8.5, 7))
    for k, label in enumerate(PRESENT_LABELS):
        mask = labels == label
        if mask.any():
            ax.scatter(*embedding[mask].T, s=12, color=colours[mask][0], label=letter(label), alpha=0.85, linewidths=0)
    ax.set_title(f"{title}: first {len(embedding)} points")
    ax.legend(title="letter", loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=2, fontsize=8, markerscale=1.5)
    ax.set_xlabel("dimension 1")
    ax.set_ylabel("dimension 2")
    return save(fig, path)


def thumbnail_figure(embedding, images, labels, path, title: str, per_axis: int = 25) -> tuple[Path, int]:
    """The map with image thumbnails at their points, where they do not overlap.

    All points are drawn as small dots in their letter's colour; thumbnails (framed in the same
    colour) are placed greedily in row order by :func:`place_thumbnails`. Returns the path and
    the number of thumbnails.
    """
    embedding = np.asarray(embedding, dtype=float)
    limits = _robust_limits(embedding)
    box = ((limits[0][1] - limits[0][0]) / per_axis, (limits[1][1] - limits[1][0]) / per_axis)
    chosen = place_thumbnails(embedding, box, limits)
    colours = label_colours(labels)
    fig, ax = plt.subplots(figsize=(10, 10))
    ax.scatter(*embedding.T, s=2, c=colours, alpha=0.3, linewidths=0)
    for index in chosen:
        x, y = embedding[index]
        extent = (x - box[0] / 2, x + box[0] / 2, y - box[1] / 2, y + box[1] / 2)
        ax.imshow(np.asarray(images[index]).reshape(28, 28), cmap="gray", vmin=0, vmax=255, extent=extent, zorder=2)
        ax.add_patch(
            plt.Rectangle((extent[0], extent[2]), box[0], box[1], fill=False, edgecolor=colours[index], linewidth=1.2, zorder=3)
        )
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_aspect("auto")
    ax.set_title(f"{title}: {len(chosen)} thumbnails of {len(embedding)} points")
    return save(fig, path), int(len(chosen))


# ----------------------------------------------------------------------------- the study


def fit_map(method: str, X: np.ndarray, profile: Profile, backend: str, seed: int):
    """Fit one map; (embedding [N, 2], fitted estimator, method-specific details)."""
    from reduction.estimators import LLE, MDS, PCA, TSNE

    if method == "pca":
        estimator = PCA(n_components=2, backend=backend, random_state=seed)
        embedding = estimator.fit_transform(X).astype(np.float64)
        params = {"n_components": 2, "random_state": seed}
        details = {"explained_variance_ratio": [float(v) for v in estimator.explained_variance_ratio_]}
    elif method == "tsne":
        estimator = TSNE(max_iter=profile.tsne_max_iter, init="random", learning_rate="auto", random_state=seed, backend=backend)
        embedding = estimator.fit_transform(X)
        params = estimator.params_
        details = {"learning_rate": estimator.learning_rate_, "kl_divergence": estimator.kl_divergence_, "n_iter": estimator.n_iter_}
    elif method == "lle":
        estimator = LLE(n_neighbors=profile.lle_neighbors, random_state=seed, backend=backend)
        embedding = estimator.fit_transform(X)
        params = estimator.params_
        details = {"reconstruction_error": estimator.reconstruction_error_}
    elif method == "mds":
        estimator = MDS(random_state=seed, backend=backend)
        embedding = estimator.fit_transform(X)
        params = estimator.params_
        details = {"stress": estimator.stress_, "stress_1": estimator.stress_1_, "n_iter": estimator.n_iter_}
    else:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return embedding, estimator, params, details


def map_rows(method: str, n_train: int, profile: Profile, seed: int) -> np.ndarray:
    """Positions in the training part that a method maps (the reference's pandas samples)."""
    from datamodules.splits import reference_sample

    n = profile.mds_rows if method == "mds" else profile.map_rows
    if n is None or n >= n_train:
        return np.arange(n_train)
    return reference_sample(n_train, n, seed)


def run_embed_study(
    data_dir=None,
    out_dir="runs/embed",
    backend: str = "auto",
    seed: int = 22,
    quick: bool = False,
    methods=METHODS,
    limit_rows: int | None = None,
) -> dict:
    """Fit the requested maps, write their figures to ``out_dir``; the results as a dict.

    ``limit_rows`` keeps only the first rows of each CSV (for tests). Progress goes to the
    ``sign_mnist_lab`` logger: a line when each map starts and one when it ends, with its time.
    """
    import sklearn

    from labkit.errors import SettingsError
    from labkit.progress import Progress, report, stage
    from datamodules.splits import REDUCTION_VAL_FRACTION, load_splits
    from reduction.backend import select_backend
    from reduction.scores import knn_accuracy, trustworthiness_on_sample

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SettingsError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    methods = [m for m in METHODS if m in methods]
    selected = select_backend(backend)  # fails early, before loading data, if cuML was asked for and is missing
    profile = QUICK if quick else FULL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    splits = load_splits(data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=seed, limit_rows=limit_rows)
    images, labels = splits.train_images, splits.train_labels
    results = {
        "study": "2-D maps",
        "profile": asdict(profile),
        "seed": seed,
        "backend": {"requested": backend, "selected": selected.name},
        "train_rows": int(len(images)),
        "software": {"scikit-learn": sklearn.__version__, "cuml": _cuml_version()},
        "methods": {},
    }
    progress = Progress(len(methods), "embed")
    for number, method in enumerate(methods, 1):
        rows = map_rows(method, len(images), profile, seed)
        X, y = images[rows].astype(np.float32), labels[rows]
        report(f"[embed {number}/{len(methods)}] {method}: fitting {len(rows)} rows ...")
        start = time.perf_counter()
        with stage(f"in the {METHOD_TITLES[method]} map ({number}/{len(methods)}, {len(rows)} rows)"):
            embedding, estimator, params, details = fit_map(method, X, profile, backend, seed)
        seconds = time.perf_counter() - start
        title = METHOD_TITLES[method]
        scatter = scatter_figure(embedding, y, out_dir / f"{method}_scatter.png", title, profile.scatter_points)
        thumbs, n_thumbs = thumbnail_figure(
            embedding, images[rows], y, out_dir / f"{method}_thumbnails.png", title, profile.thumbnails_per_axis
        )
        results["methods"][method] = {
            "rows": int(len(rows)),
            "row_selection": "all training rows" if len(rows) == len(images) else f"reference_sample(n={len(rows)}, seed={seed})",
            "seconds": round(seconds, 3),
            "place": estimator.place_,
            "trustworthiness": trustworthiness_on_sample(
                X, embedding, profile.trust_neighbors, profile.trust_sample, seed
            ),
            "trustworthiness_neighbors": profile.trust_neighbors,
            "trustworthiness_rows": int(min(profile.trust_sample, len(rows))),
            "knn_accuracy": knn_accuracy(embedding, y, profile.knn_neighbors, profile.knn_folds, seed),
            "knn_neighbors": profile.knn_neighbors,
            "knn_folds": profile.knn_folds,
            "parameters": params,
            **details,
            "figures": {"scatter": scatter.name, "thumbnails": thumbs.name},
            "thumbnails_placed": n_thumbs,
        }
        progress.step(f"{method} done: fit {seconds:.1f} s on {estimator.place_}")
    return results


def format_summary(results: dict) -> str:
    """A small table: one line per map."""
    header = f"{'map':<6}{'rows':>7}  {'place':<13}{'fit s':>8}{'trust':>8}{'k-NN acc':>10}"
    lines = [header, "-" * len(header)]
    for method, r in results["methods"].items():
        knn = "-" if r["knn_accuracy"] is None else f"{r['knn_accuracy']:.3f}"
        lines.append(f"{method:<6}{r['rows']:>7}  {r['place']:<13}{r['seconds']:>8.1f}{r['trustworthiness']:>8.3f}{knn:>10}")
    return "\n".join(lines)


def _cuml_version() -> str | None:
    try:
        import cuml

        return str(cuml.__version__)
    except Exception:
        return None
