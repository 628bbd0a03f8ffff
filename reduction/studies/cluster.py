"""The study's clustering part: K-Means and Gaussian mixtures on PCA features of a sample.

Training part = the 80/20 stratified split of the train CSV (``load_splits(...,
val_fraction=REDUCTION_VAL_FRACTION, seed)``), 21,964 rows on the Kaggle release.

Data (:func:`_sample_step`). ``sample_size`` rows of the training part, the rows pandas'
``DataFrame.sample(n=sample_size, random_state=seed)`` picks (10,000 and 22 as the reference),
reduced by a PCA keeping 95% of the variance. The PCA is fitted on that sample, as the reference
did (not on the whole training part): the clusters are then found in the sample's own principal
axes, and the mixture's generated rows map back to pixels through the same PCA.

4. K-Means (:func:`_kmeans_step`) for every k of ``ks`` (5..40 step 5), ``init="random"``,
   ``n_init=50``, ``random_state=42``; inertia and mean silhouette (on all sample rows) per k. A
   stated rule picks k (``k_rule``: "silhouette", the highest mean silhouette, by default; or
   "elbow", see :data:`reduction.cluster_sweeps.KMEANS_K_RULES`). For the chosen k: the first 20
   images of each cluster with their true letters, and how pure the clusters are (ARI, NMI,
   majority-letter purity, per-cluster majority letter and share).
5. Gaussian mixtures (:func:`_mixture_step`; full covariances, scikit-learn's defaults,
   ``n_init=10``, ``random_state=42``; the k's fitted in parallel threads, ``gmm_n_jobs``) for
   the same ks; AIC and BIC per k; k chosen by lowest
   BIC; images and purity per cluster as above; 20 new rows drawn with ``sample(20)`` from the
   chosen mixture, mapped back to pixels with the PCA's ``inverse_transform`` and clipped to 0..255.

:func:`run` returns a JSON-ready dict (every number, timings and the place each step ran) and
writes the figures; scripts/cluster.py is its command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules import REFERENCE_SEED, letter, reference_sample
from labkit.errors import SettingsError
from labkit.figures import image_grid, plt, save
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
from reduction.studies.common import VARIANCE_TARGET, StudyRun, fit_variance_pca, pca_transform, split_rows

IMAGES_PER_CLUSTER = 20
# Mixture starts that run on every place (the Array API path reproduces "kmeans" itself).
GMM_INIT_CHOICES = EMULATED_INIT_PARAMS + ARRAY_API_INIT_PARAMS
N_GENERATED = 20
# The reference's random_state for K-Means, the mixtures and the mixture's samples.
CLUSTER_SEED = 42


@dataclass(frozen=True)
class Profile:
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
    # The mixtures' k's fitted in parallel threads, one BLAS thread each (None: one k after
    # another). The same fits either way; see reduction.cluster_sweeps.mixture_sweep.
    gmm_n_jobs: int | None = -1

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
FULL = Profile(
    name="full", sample_size=10_000, ks=tuple(range(5, 41, 5)),
    kmeans_n_init=50, kmeans_max_iter=300, gmm_n_init=10, gmm_max_iter=100,
)
QUICK = Profile(
    name="quick", sample_size=2_000, ks=(5, 15, 25),
    kmeans_n_init=3, kmeans_max_iter=100, gmm_n_init=1, gmm_max_iter=50,
)


@dataclass(frozen=True)
class Sample:
    """The clustered rows: images and true labels of the sample, and its 95% PCA features."""

    images: np.ndarray
    labels: np.ndarray
    features: np.ndarray


def run(
    profile: Profile,
    data,
    out_dir: str | os.PathLike,
    backend: str = "auto",
    *,
    seed: int = REFERENCE_SEED,
    cluster_seed: int = CLUSTER_SEED,
) -> dict:
    """Run both clusterings on a sample of ``data``'s training part, write the figures in ``out_dir``; the results.

    ``data`` is the ``SplitArrays`` of ``load_splits(..., val_fraction=REDUCTION_VAL_FRACTION)``;
    ``seed`` picks the sample; ``cluster_seed`` is the random state of the PCA, K-Means, the
    mixtures and their samples. Sizes that cannot work with the data are a :class:`SettingsError`.
    """
    study = StudyRun.start("cluster", out_dir, backend)
    n_train = len(data.train_images)
    if profile.sample_size > n_train:
        raise SettingsError(f"the sample of {profile.sample_size} rows is larger than the {n_train} rows of the training part")
    try:
        ks = check_ks(profile.ks, profile.sample_size)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None

    images, labels = _sample_step(study, profile, data, seed)
    with stage("in the PCA step"):
        pca = fit_variance_pca(study, images, cluster_seed)
        (features,) = pca_transform(study, pca, images)
    report(f"PCA ({pca.place_}): {pca.n_components_} components for {VARIANCE_TARGET:.0%} of the variance")
    sample = Sample(images, labels, features)

    kmeans = _kmeans_step(study, profile, sample, ks, cluster_seed)
    gmm = _mixture_step(study, profile, sample, ks, pca, cluster_seed)
    headline = {f"{name}/{key}": value for name, part in (("kmeans", kmeans), ("gmm", gmm))
                for key, value in (("chosen_k", part["chosen_k"]), ("ari", part["purity"]["ari"]),
                                   ("nmi", part["purity"]["nmi"]))}
    return study.results(
        profile,
        seed,
        headline=headline,
        data={
            **split_rows(data),
            "sample_size": int(len(images)),
            "sample_letters": {letter(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))},
            "pca_fitted_on": "the sample",
        },
        pca={
            "place": pca.place_,
            "variance_target": VARIANCE_TARGET,
            "n_components": int(pca.n_components_),
            "explained_variance": float(np.sum(pca.explained_variance_ratio_)),
        },
        kmeans=kmeans,
        gmm=gmm,
    )


# Steps ---------------------------------------------------------------------------------------


def _sample_step(study: StudyRun, profile: Profile, data, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the rows pandas' ``sample(n=sample_size, random_state=seed)`` picks."""
    n_train = len(data.train_images)
    with study.timer.step("sample"):
        rows = reference_sample(n_train, profile.sample_size, seed)
        images, labels = data.train_images[rows], data.train_labels[rows]
    report(f"sample: {len(rows)} of {n_train} training rows (pandas sample, random_state={seed})")
    return images, labels


def _kmeans_step(study: StudyRun, profile: Profile, sample: Sample, ks: list[int], cluster_seed: int) -> dict:
    """The K-Means sweep, the rule's k, its clusters' images and purity: the "kmeans" results section."""
    with stage("in the K-Means sweep"), study.timer.step("kmeans_sweep") as step:
        km = kmeans_sweep(
            sample.features, ks, init=profile.kmeans_init, n_init=profile.kmeans_n_init,
            max_iter=profile.kmeans_max_iter, random_state=cluster_seed, backend=study.backend.name, progress=True,
        )
        step.place = km.place
        study.timer.record("kmeans_fits", sum(km.fit_seconds), km.place)
        study.timer.record("silhouettes", sum(km.silhouette_seconds), km.silhouette_place)
    rule_text, rule_input, rule = KMEANS_K_RULES[profile.k_rule]
    k = rule(km.ks, km.silhouette if rule_input == "silhouette" else km.inertia)
    cluster_labels = km.models[k].labels_

    with study.timer.step("kmeans_figures"):
        study.figure("kmeans_scores", plot_kmeans_scores(
            km.ks, km.silhouette, km.inertia, k, study.out_dir / "kmeans_silhouette_inertia.png"))
        study.figure("kmeans_clusters", plot_cluster_grid(
            sample.images, sample.labels, cluster_labels,
            f"K-Means, k={k}: first {IMAGES_PER_CLUSTER} images of each cluster (true letters)",
            study.out_dir / f"kmeans_clusters_k{k}.png"))
    return {
        "place": km.place,
        "silhouette_place": km.silhouette_place,
        "params": {"init": profile.kmeans_init, "n_init": profile.kmeans_n_init, "max_iter": profile.kmeans_max_iter,
                   "tol": 1e-4, "random_state": cluster_seed},
        "ks": km.ks,
        "inertia": km.inertia,
        "silhouette": km.silhouette,
        "n_iter": km.n_iter,
        "fit_seconds": _rounded(km.fit_seconds),
        "silhouette_seconds": _rounded(km.silhouette_seconds),
        "k_rule": profile.k_rule,
        "k_rule_text": rule_text,
        "chosen_k": k,
        "chosen": _chosen_numbers(km.ks, k, silhouette=km.silhouette, inertia=km.inertia),
        "purity": cluster_purity(sample.labels, cluster_labels, names=letter),
    }


def _mixture_step(study: StudyRun, profile: Profile, sample: Sample, ks: list[int], pca, cluster_seed: int) -> dict:
    """The mixture sweep, the lowest-BIC k, its clusters, purity and generated images: the "gmm" section."""
    try:
        with stage("in the Gaussian-mixture sweep"), study.timer.step("gmm_sweep") as step:
            gm = mixture_sweep(
                sample.features, ks, n_init=profile.gmm_n_init, max_iter=profile.gmm_max_iter,
                init_params=profile.gmm_init_params, random_state=cluster_seed, backend=study.backend.name, progress=True,
                n_jobs=profile.gmm_n_jobs,
            )
            step.place = gm.place
    except MixtureFitError as exc:
        raise SettingsError(f"{exc} (try a larger sample or smaller k)") from None
    k = k_by_lowest(gm.ks, gm.bic)
    model = gm.models[k]

    with study.timer.step("gmm_generate", gm.place):
        generated, generated_components = generate_images(model, pca, N_GENERATED)

    with study.timer.step("gmm_figures"):
        study.figure("gmm_aic_bic", plot_aic_bic(gm.ks, gm.aic, gm.bic, k, study.out_dir / "gmm_aic_bic.png"))
        study.figure("gmm_clusters", plot_cluster_grid(
            sample.images, sample.labels, model.labels_,
            f"Gaussian mixture, k={k}: first {IMAGES_PER_CLUSTER} images of each cluster (true letters)",
            study.out_dir / f"gmm_clusters_k{k}.png"))
        study.figure("gmm_generated", plot_generated(generated, generated_components, k, study.out_dir / "gmm_generated.png"))
    return {
        "place": gm.place,
        "init_place": gm.init_place,
        "params": {"covariance_type": "full", "init_params": profile.gmm_init_params, "n_init": profile.gmm_n_init,
                   "max_iter": profile.gmm_max_iter, "tol": 1e-3, "reg_covar": 1e-6, "random_state": cluster_seed,
                   "n_jobs": profile.gmm_n_jobs, "k_workers": gm.workers},
        "ks": gm.ks,
        "aic": gm.aic,
        "bic": gm.bic,
        "lower_bound": gm.lower_bound,
        "converged": gm.converged,
        "n_iter": gm.n_iter,
        "fit_seconds": _rounded(gm.fit_seconds),
        "k_rule_text": BIC_RULE,
        "chosen_k": k,
        "k_by_lowest_aic": k_by_lowest(gm.ks, gm.aic),
        "chosen": _chosen_numbers(gm.ks, k, aic=gm.aic, bic=gm.bic, converged=gm.converged),
        "purity": cluster_purity(sample.labels, model.labels_, names=letter),
        "generated": {
            "n": N_GENERATED,
            "components": generated_components.tolist(),
            "pixel_min": float(generated.min()),
            "pixel_max": float(generated.max()),
            "pixel_mean": float(generated.mean()),
        },
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
    steps = {name: entry for name, entry in results["steps"].items() if name != "total"}
    lines.append(
        "time: " + ", ".join(f"{name} {entry['seconds']:.1f} s" for name, entry in steps.items())
        + f"; total {results['steps']['total']['seconds']:.1f} s"
    )
    return lines


# Figures -------------------------------------------------------------------------------------


def plot_kmeans_scores(ks, silhouettes, inertias, chosen_k: int, path: str | os.PathLike) -> Path:
    """Silhouette and inertia against k, side by side, the chosen k marked."""
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


def plot_aic_bic(ks, aics, bics, chosen_k: int, path: str | os.PathLike) -> Path:
    """AIC and BIC against k, the chosen (lowest-BIC) k marked."""
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


def plot_cluster_grid(images, labels, cluster_labels, title: str, path: str | os.PathLike,
                      per_cluster: int = IMAGES_PER_CLUSTER) -> Path:
    """One row per cluster: its first ``per_cluster`` images (sample order), each with its true
    letter above it; rows of small clusters end in blank cells.

    Drawn as one mosaic image (a 40 x 20 grid of separate axes takes matplotlib most of a minute).
    """
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


def plot_generated(pixels, components, k: int, path: str | os.PathLike) -> Path:
    """The generated images, each titled with the mixture component it was drawn from."""
    return image_grid(
        pixels, path, titles=[f"comp {c}" for c in components], ncols=10,
        suptitle=f"{len(pixels)} images drawn from the Gaussian mixture (k={k}), mapped back through the PCA",
    )
