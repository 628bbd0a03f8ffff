"""The study's clustering part: K-Means and Gaussian mixtures on PCA features of a sample.

Training part = the 80/20 stratified split of the train CSV (``load_splits(...,
val_fraction=REDUCTION_VAL_FRACTION, seed)``), 21,964 rows on the Kaggle release.

Data. ``sample_size`` rows of the training part, the rows pandas'
``DataFrame.sample(n=sample_size, random_state=seed)`` picks (10,000 and 22 as the reference),
reduced by a PCA keeping 95% of the variance. The PCA is fitted on that sample, as the reference
did (not on the whole training part): the clusters are then found in the sample's own principal
axes, and the mixture's generated rows map back to pixels through the same PCA.

4. K-Means for every k of ``ks`` (5..40 step 5), ``init="random"``, ``n_init=50``,
   ``random_state=42``; inertia and mean silhouette (on all sample rows) per k. A stated rule
   picks k (``k_rule``: "silhouette", the highest mean silhouette, by default; or "elbow", see
   :data:`reduction.cluster_sweeps.KMEANS_K_RULES`). For the chosen k: the first 20 images of each
   cluster with their true letters, and how pure the clusters are (ARI, NMI, majority-letter
   purity, per-cluster majority letter and share).
5. Gaussian mixtures (full covariances, scikit-learn's defaults, ``n_init=10``,
   ``random_state=42``) for the same ks; AIC and BIC per k; k chosen by lowest BIC; images and
   purity per cluster as above; 20 new rows drawn with ``sample(20)`` from the chosen mixture,
   mapped back to pixels with the PCA's ``inverse_transform`` and clipped to 0..255.

``run_cluster_study`` returns a JSON-ready dict (every number, timings and the place each step
ran) and writes the figures; scripts/cluster.py is its command line.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from labkit.progress import report, stage
from reduction.cluster_sweeps import (
    BIC_RULE,
    KMEANS_K_RULES,
    check_ks,
    cluster_purity,
    first_members,
    k_by_lowest,
    kmeans_sweep,
    mixture_sweep,
)
from reduction.estimators.clustering import ARRAY_API_INIT_PARAMS, EMULATED_INIT_PARAMS, MixtureFitError

VARIANCE_TARGET = 0.95
IMAGES_PER_CLUSTER = 20
# Mixture starts that run on every place (the Array API path reproduces "kmeans" itself).
GMM_INIT_CHOICES = EMULATED_INIT_PARAMS + ARRAY_API_INIT_PARAMS
N_GENERATED = 20


@dataclass(frozen=True)
class ClusterProfile:
    """What the sweeps run on and how hard they try."""

    name: str
    sample_size: int
    ks: tuple[int, ...]
    kmeans_n_init: int
    kmeans_max_iter: int
    gmm_n_init: int
    gmm_max_iter: int
    kmeans_init: str = "random"
    gmm_init_params: str = "kmeans"  # scikit-learn's default, which the reference used
    k_rule: str = "silhouette"

    def __post_init__(self):
        object.__setattr__(self, "ks", tuple(check_ks(self.ks)))
        for name in ("sample_size", "kmeans_n_init", "kmeans_max_iter", "gmm_n_init", "gmm_max_iter"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.gmm_init_params not in GMM_INIT_CHOICES:
            raise ValueError(f"unknown mixture init {self.gmm_init_params!r}; choose one of {', '.join(GMM_INIT_CHOICES)}")
        if self.k_rule not in KMEANS_K_RULES:
            raise ValueError(f"unknown k rule {self.k_rule!r}; choose one of {', '.join(KMEANS_K_RULES)}")


# The reference: 10,000 sampled rows, k = 5..40 step 5, n_init 50 (K-Means) and 10 (mixtures),
# scikit-learn's default max_iter (300 for K-Means, 100 for mixtures).
FULL_PROFILE = ClusterProfile(
    name="full", sample_size=10_000, ks=tuple(range(5, 41, 5)),
    kmeans_n_init=50, kmeans_max_iter=300, gmm_n_init=10, gmm_max_iter=100,
)
QUICK_PROFILE = ClusterProfile(
    name="quick", sample_size=2_000, ks=(5, 15, 25),
    kmeans_n_init=3, kmeans_max_iter=100, gmm_n_init=1, gmm_max_iter=50,
)


class _Clock:
    """Seconds and place per step, in the order the steps ran."""

    def __init__(self) -> None:
        self.steps: dict[str, dict] = {}

    def record(self, step: str, start: float, place: str | None = None) -> None:
        entry = {"seconds": round(time.perf_counter() - start, 3)}
        if place is not None:
            entry["place"] = place
        self.steps[step] = entry


def _say(progress: bool, message: str) -> None:
    if progress:
        report(message)


def run_cluster_study(
    out_dir: str | Path,
    data_dir=None,
    backend: str = "auto",
    seed: int = 22,
    cluster_seed: int = 42,
    profile: ClusterProfile = FULL_PROFILE,
    progress: bool = True,
) -> dict:
    """Run both clusterings, write the figures in ``out_dir``, return the results dict."""
    from datamodules import REDUCTION_VAL_FRACTION, letter, load_splits, reference_sample
    from labkit.errors import SettingsError
    from reduction.backend import select_backend
    from reduction.estimators import PCA

    out_dir = Path(out_dir)
    chosen_backend = select_backend(backend)  # BackendError (one line) before any work
    clock = _Clock()
    started = time.perf_counter()

    start = time.perf_counter()
    splits = load_splits(data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=seed)
    n_train = len(splits.train_images)
    if profile.sample_size > n_train:
        raise SettingsError(f"the sample of {profile.sample_size} rows is larger than the {n_train} rows of the training part")
    try:
        ks = check_ks(profile.ks, profile.sample_size)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    rows = reference_sample(n_train, profile.sample_size, seed)
    images, labels = splits.train_images[rows], splits.train_labels[rows]
    clock.record("load_and_sample", start)
    _say(progress, f"sample: {len(rows)} of {n_train} training rows (pandas sample, random_state={seed})")

    start = time.perf_counter()
    with stage("in the PCA step"):
        pca = PCA(VARIANCE_TARGET, backend=backend, random_state=cluster_seed).fit(images)
        Z = pca.transform(images)
    clock.record("pca", start, pca.place_)
    _say(progress, f"PCA ({pca.place_}): {pca.n_components_} components for {VARIANCE_TARGET:.0%} of the variance")

    # ---- 4. K-Means -------------------------------------------------------------------------
    start = time.perf_counter()
    with stage("in the K-Means sweep"):
        km = kmeans_sweep(
            Z, ks, init=profile.kmeans_init, n_init=profile.kmeans_n_init, max_iter=profile.kmeans_max_iter,
            random_state=cluster_seed, backend=backend, progress=progress,
        )
    clock.steps["kmeans_fits"] = {"seconds": round(sum(km.fit_seconds), 3), "place": km.place}
    clock.steps["silhouettes"] = {"seconds": round(sum(km.silhouette_seconds), 3), "place": km.silhouette_place}
    clock.record("kmeans_sweep", start, km.place)
    rule_text, rule_input, rule = KMEANS_K_RULES[profile.k_rule]
    km_k = rule(km.ks, km.silhouette if rule_input == "silhouette" else km.inertia)
    km_labels = km.models[km_k].labels_

    start = time.perf_counter()
    figures = {
        "kmeans_scores": kmeans_scores_figure(km.ks, km.silhouette, km.inertia, km_k, out_dir / "kmeans_silhouette_inertia.png"),
        "kmeans_clusters": cluster_grid_figure(
            images, labels, km_labels, out_dir / f"kmeans_clusters_k{km_k}.png",
            title=f"K-Means, k={km_k}: first {IMAGES_PER_CLUSTER} images of each cluster (true letters)",
        ),
    }
    clock.record("kmeans_figures", start)
    kmeans_results = {
        "place": km.place,
        "silhouette_place": km.silhouette_place,
        "params": {"init": profile.kmeans_init, "n_init": profile.kmeans_n_init, "max_iter": profile.kmeans_max_iter, "tol": 1e-4,
                   "random_state": cluster_seed},
        "ks": km.ks,
        "inertia": km.inertia,
        "silhouette": km.silhouette,
        "n_iter": km.n_iter,
        "fit_seconds": _rounded(km.fit_seconds),
        "silhouette_seconds": _rounded(km.silhouette_seconds),
        "k_rule": profile.k_rule,
        "k_rule_text": rule_text,
        "chosen_k": km_k,
        "chosen": _chosen_numbers(km.ks, km_k, silhouette=km.silhouette, inertia=km.inertia),
        "purity": cluster_purity(labels, km_labels, names=letter),
    }

    # ---- 5. Gaussian mixture ----------------------------------------------------------------
    start = time.perf_counter()
    try:
        with stage("in the Gaussian-mixture sweep"):
            gm = mixture_sweep(
                Z, ks, n_init=profile.gmm_n_init, max_iter=profile.gmm_max_iter, init_params=profile.gmm_init_params,
                random_state=cluster_seed, backend=backend, progress=progress,
            )
    except MixtureFitError as exc:
        raise SettingsError(f"{exc} (try a larger sample or smaller k)") from None
    clock.record("gmm_sweep", start, gm.place)
    gm_k = k_by_lowest(gm.ks, gm.bic)
    model = gm.models[gm_k]
    gm_labels = model.labels_

    start = time.perf_counter()
    generated, generated_components = generate_images(model, pca, N_GENERATED)
    clock.record("gmm_generate", start, gm.place)

    start = time.perf_counter()
    figures["gmm_aic_bic"] = aic_bic_figure(gm.ks, gm.aic, gm.bic, gm_k, out_dir / "gmm_aic_bic.png")
    figures["gmm_clusters"] = cluster_grid_figure(
        images, labels, gm_labels, out_dir / f"gmm_clusters_k{gm_k}.png",
        title=f"Gaussian mixture, k={gm_k}: first {IMAGES_PER_CLUSTER} images of each cluster (true letters)",
    )
    figures["gmm_generated"] = generated_figure(generated, generated_components, out_dir / "gmm_generated.png", gm_k)
    clock.record("gmm_figures", start)
    gmm_results = {
        "place": gm.place,
        "init_place": gm.init_place,
        "params": {"covariance_type": "full", "init_params": profile.gmm_init_params, "n_init": profile.gmm_n_init,
                   "max_iter": profile.gmm_max_iter, "tol": 1e-3, "reg_covar": 1e-6, "random_state": cluster_seed},
        "ks": gm.ks,
        "aic": gm.aic,
        "bic": gm.bic,
        "lower_bound": gm.lower_bound,
        "converged": gm.converged,
        "n_iter": gm.n_iter,
        "fit_seconds": _rounded(gm.fit_seconds),
        "k_rule_text": BIC_RULE,
        "chosen_k": gm_k,
        "k_by_lowest_aic": k_by_lowest(gm.ks, gm.aic),
        "chosen": _chosen_numbers(gm.ks, gm_k, aic=gm.aic, bic=gm.bic, converged=gm.converged),
        "purity": cluster_purity(labels, gm_labels, names=letter),
        "generated": {
            "n": N_GENERATED,
            "components": generated_components.tolist(),
            "pixel_min": float(generated.min()),
            "pixel_max": float(generated.max()),
            "pixel_mean": float(generated.mean()),
        },
    }

    return {
        "profile": asdict(profile),
        "backend": {"requested": backend, "selected": chosen_backend.name},
        "seeds": {"sample_and_split": seed, "clustering": cluster_seed},
        "data": {
            "n_train": n_train,
            "sample_size": int(len(rows)),
            "sample_letters": {letter(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))},
            "pca_fitted_on": "the sample",
        },
        "pca": {
            "place": pca.place_,
            "variance_target": VARIANCE_TARGET,
            "n_components": int(pca.n_components_),
            "explained_variance": float(np.sum(pca.explained_variance_ratio_)),
        },
        "kmeans": kmeans_results,
        "gmm": gmm_results,
        "figures": {name: str(path) for name, path in figures.items()},
        "timings": clock.steps,
        "total_seconds": round(time.perf_counter() - started, 3),
        "versions": _versions(),
    }


def generate_images(mixture, pca, n: int = N_GENERATED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows drawn with ``mixture.sample(n)`` (its random_state), mapped back to pixels by
    ``pca.inverse_transform`` and clipped to 0..255: (pixels [n, 784] float, components [n])."""
    Z, components = mixture.sample(n)
    return np.clip(pca.inverse_transform(Z), 0, 255), components


def _chosen_numbers(ks, k, **series) -> dict:
    position = list(ks).index(k)
    return {name: values[position] for name, values in series.items() if values is not None}


def _rounded(values) -> list[float]:
    return [round(float(v), 3) for v in values]


def _versions() -> dict:
    import sklearn

    versions = {"numpy": np.__version__, "scikit-learn": sklearn.__version__}
    try:
        import cuml

        versions["cuml"] = cuml.__version__
    except Exception:
        pass
    return versions


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def kmeans_scores_figure(ks, silhouettes, inertias, chosen_k, path) -> Path:
    """Silhouette and inertia against k, side by side, the chosen k marked."""
    from labkit.figures import plt, save

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, values, name in ((left, silhouettes, "mean silhouette"), (right, inertias, "inertia")):
        ax.plot(ks, values, "o-")
        ax.axvline(chosen_k, color="tab:red", linestyle="--", label=f"chosen k={chosen_k}")
        ax.set_xlabel("k")
        ax.set_ylabel(name)
        ax.set_xticks(list(ks))
        ax.grid(alpha=0.3)
        ax.legend()
    left.set_title("Silhouette (higher is better)")
    right.set_title("Inertia (within-cluster sum of squares)")
    fig.suptitle("K-Means on the PCA features")
    fig.tight_layout()
    return save(fig, path)


def aic_bic_figure(ks, aics, bics, chosen_k, path) -> Path:
    """AIC and BIC against k, the chosen (lowest-BIC) k marked."""
    from labkit.figures import plt, save

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(ks, aics, "o-", label="AIC")
    ax.plot(ks, bics, "s-", label="BIC")
    ax.axvline(chosen_k, color="tab:red", linestyle="--", label=f"lowest BIC: k={chosen_k}")
    ax.set_xlabel("k (components)")
    ax.set_ylabel("information criterion (lower is better)")
    ax.set_xticks(list(ks))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Gaussian mixtures on the PCA features")
    fig.tight_layout()
    return save(fig, path)


def cluster_grid_figure(images, labels, cluster_labels, path, title: str, per_cluster: int = IMAGES_PER_CLUSTER) -> Path:
    """One row per cluster: its first ``per_cluster`` images (sample order), each with its true
    letter above it; rows of small clusters end in blank cells.

    Drawn as one mosaic image (a 40 x 20 grid of separate axes takes matplotlib most of a minute).
    """
    from datamodules import letter
    from labkit.figures import plt, save

    side, gap = 28, 8  # pixels per image, and between images (room for the letters)
    members = first_members(cluster_labels, per_cluster)
    counts = np.bincount(np.asarray(cluster_labels))
    n_rows = len(members)
    cell = side + gap
    mosaic = np.full((n_rows * cell, per_cluster * cell), np.nan)
    fig, ax = plt.subplots(figsize=(0.55 * per_cluster + 1.2, 0.62 * n_rows + 0.8))
    for row, (cluster, positions) in enumerate(members.items()):
        for column, position in enumerate(positions):
            top, left = row * cell + gap, column * cell + gap // 2
            mosaic[top : top + side, left : left + side] = np.asarray(images[position], dtype=float).reshape(side, side)
            ax.text(left + side / 2, top - 1, letter(labels[position]), ha="center", va="bottom", fontsize=6)
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([row * cell + gap + side / 2 for row in range(n_rows)])
    ax.set_yticklabels([f"cluster {cluster} (n={counts[cluster]})" for cluster in members], fontsize=7)
    ax.tick_params(axis="y", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def generated_figure(pixels, components, path, k: int) -> Path:
    from labkit.figures import image_grid

    return image_grid(
        pixels, path, titles=[f"comp {c}" for c in components], ncols=10,
        suptitle=f"{len(pixels)} images drawn from the Gaussian mixture (k={k}), mapped back through the PCA",
    )


def summary_lines(results: dict) -> list[str]:
    """A few lines for the terminal: the numbers the study asks for."""
    km, gm, pca = results["kmeans"], results["gmm"], results["pca"]
    kp, gp = km["purity"], gm["purity"]
    chosen_sil = km["chosen"].get("silhouette")
    lines = [
        f"sample: {results['data']['sample_size']} of {results['data']['n_train']} training rows; "
        f"PCA ({pca['place']}) fitted on the sample: {pca['n_components']} components, "
        f"{pca['explained_variance']:.2%} of the variance",
        f"K-Means ({km['place']}, silhouette on {km['silhouette_place']}), k in {km['ks']}: "
        f"chosen k={km['chosen_k']} by rule '{km['k_rule']}' ({km['k_rule_text']})"
        + (f"; silhouette {chosen_sil:.4f}" if chosen_sil is not None else ""),
        f"  clusters vs letters: ARI {kp['ari']:.4f}, NMI {kp['nmi']:.4f}, majority-letter purity {kp['purity']:.4f}",
        f"Gaussian mixture ({gm['place']}, starts on {gm['init_place']}): chosen k={gm['chosen_k']} by lowest BIC "
        f"({gm['chosen']['bic']:.6g}); lowest AIC at k={gm['k_by_lowest_aic']}",
        f"  clusters vs letters: ARI {gp['ari']:.4f}, NMI {gp['nmi']:.4f}, majority-letter purity {gp['purity']:.4f}",
    ]
    if not all(gm["converged"]):
        bad = [k for k, ok in zip(gm["ks"], gm["converged"]) if not ok]
        lines.append(f"  note: the best start did not converge within max_iter for k in {bad}")
    timing = results["timings"]
    lines.append(
        "time: " + ", ".join(f"{step} {entry['seconds']:.1f} s" for step, entry in timing.items())
        + f"; total {results['total_seconds']:.1f} s"
    )
    return lines
