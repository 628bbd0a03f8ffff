"""Seconds per step of the unsupervised study, on every backend present, in one run.

    python benchmarks/bench_reduction.py                  # all steps, full sizes
    python benchmarks/bench_reduction.py --steps pca95 lle --backends sklearn

Steps, on the real data's 80/20 split (21,964 training rows):
  pca95        PCA keeping 95% of the variance
  rf_raw       random forest, 550 trees, depth 45, on raw pixels
  rf_pca       random forest, 50 trees, depth 15, on the 95% PCA features
  tsne         t-SNE of all training rows (1,000 iterations)
  lle          LLE (10 neighbours) of all training rows
  mds          metric MDS of a 5,000-row sample (n_init 4)
  kmeans       K-Means sweep k=5..40 step 5 (n_init 50, init random), 10,000-row PCA sample
  silhouette   silhouette scores of that sweep's labelings
  gmm25        one Gaussian mixture, k=25, n_init 10, same sample

cuML runs where ``--backends`` includes it and cuML with a CUDA device is present; torch by
default where torch can use a CUDA device, and on the CPU when ``--backends`` names it. Each row
says where the step actually ran (a backend lacks some algorithms, see reduction/backend.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from reduction.backend import cuml_status, enable_scipy_array_api, torch_status

enable_scipy_array_api()  # before SciPy loads: the mixture's GPU path needs it

import numpy as np  # noqa: E402

from datamodules import REDUCTION_VAL_FRACTION, load_splits, reference_sample  # noqa: E402

STEPS = ("pca95", "rf_raw", "rf_pca", "tsne", "lle", "mds", "kmeans", "silhouette", "gmm25")
KS = tuple(range(5, 41, 5))


class Study:
    """The inputs each step needs, computed once per backend outside the timed region."""

    def __init__(self, backend: str, seed: int = 22) -> None:
        from reduction.estimators import PCA

        self.backend, self.seed = backend, seed
        arrays = load_splits(val_fraction=REDUCTION_VAL_FRACTION, seed=seed)
        self.X = arrays.train_images.astype(np.float32)
        self.y = arrays.train_labels
        self.pca = PCA(0.95, backend=backend).fit(self.X)
        self.X_pca = self.pca.transform(self.X)
        sample = self.X[reference_sample(len(self.X), 10_000, seed)]
        self.cluster_X = PCA(0.95, backend=backend).fit_transform(sample)
        self.kmeans_labels: dict[int, np.ndarray] = {}

    def pca95(self):
        from reduction.estimators import PCA

        model = PCA(0.95, backend=self.backend).fit(self.X)
        return model.place_, f"{model.n_components_} components"

    def rf_raw(self):
        from reduction.estimators import RandomForest

        model = RandomForest(550, 45, backend=self.backend, random_state=self.seed).fit(self.X, self.y)
        return model.place_, "550 trees, depth 45"

    def rf_pca(self):
        from reduction.estimators import RandomForest

        model = RandomForest(50, 15, backend=self.backend, random_state=self.seed).fit(self.X_pca, self.y)
        return model.place_, f"50 trees, depth 15, {self.X_pca.shape[1]} features"

    def tsne(self):
        from reduction.estimators import TSNE

        model = TSNE(random_state=self.seed, backend=self.backend)
        model.fit(self.X)
        return model.place_, f"{len(self.X)} rows"

    def lle(self):
        from reduction.estimators import LLE

        model = LLE(n_neighbors=10, random_state=self.seed, backend=self.backend)
        model.fit(self.X)
        return model.place_, f"{len(self.X)} rows"

    def mds(self):
        from reduction.estimators import MDS

        rows = self.X[reference_sample(len(self.X), 5000, self.seed)]
        model = MDS(random_state=self.seed, backend=self.backend)
        model.fit(rows)
        return model.place_, "5000 rows"

    def kmeans(self):
        from reduction.estimators import KMeans

        place = ""
        for k in KS:
            model = KMeans(k, init="random", n_init=50, random_state=42, backend=self.backend).fit(self.cluster_X)
            self.kmeans_labels[k] = model.labels_
            place = model.place_
        return place, f"k={KS[0]}..{KS[-1]}, {self.cluster_X.shape}"

    def silhouette(self):
        from reduction.estimators import KMeans
        from reduction.estimators.clustering import silhouette

        place = ""
        for k in KS:
            labels = self.kmeans_labels.get(k)
            if labels is None:  # the kmeans step was not run: labels from a quick fit, untimed cost
                labels = KMeans(k, n_init=1, random_state=42, backend=self.backend).fit(self.cluster_X).labels_
            _, place = silhouette(self.cluster_X, labels, backend=self.backend)
        return place, f"{len(KS)} labelings of {len(self.cluster_X)} rows"

    def gmm25(self):
        from reduction.estimators import GaussianMixture

        model = GaussianMixture(25, n_init=10, random_state=42, backend=self.backend).fit(self.cluster_X)
        return model.place_, "k=25, n_init 10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--backends", nargs="+", choices=("sklearn", "cuml", "torch"), default=None,
                        help="default: sklearn, cuml where it can run, torch where torch can use a CUDA device")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per step (median reported; default 1)")
    args = parser.parse_args()

    cuml, torch = cuml_status(), torch_status()
    asked = args.backends or ["sklearn", "cuml", "torch"]
    why_not = {"sklearn": None, "cuml": None if cuml.usable else cuml.reason,
               "torch": None if torch.usable and (torch.accelerated or args.backends) else torch.reason}
    backends = [b for b in asked if why_not[b] is None]
    for backend in asked:
        if why_not[backend] is not None:
            print(f"{backend} skipped: {why_not[backend]}")
    print(f"{os.cpu_count()} CPU cores; steps: {' '.join(args.steps)}; backends: {' '.join(backends)}", flush=True)

    rows = []
    for backend in backends:
        study = Study(backend)
        for step in args.steps:
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                place, detail = getattr(study, step)()
                seconds.append(time.perf_counter() - start)
            rows.append((step, backend, place, statistics.median(seconds), detail))
            print(f"{step} on {backend} ({place}): {rows[-1][3]:.2f} s", flush=True)

    baseline = {step: s for step, backend, _, s, _ in rows if backend == "sklearn"}
    print("\n| step | backend | ran on | seconds (median) | speed-up vs sklearn | detail |")
    print("|---|---|---|---|---|---|")
    for step, backend, place, s, detail in rows:
        ratio = f"{baseline[step] / s:.1f}x" if step in baseline else "n/a"
        print(f"| {step} | {backend} | {place} | {s:.2f} | {ratio} | {detail} |")
    total = {backend: sum(s for _, b, _, s, _ in rows if b == backend) for backend in backends}
    print("\n" + ", ".join(f"total {backend}: {seconds:.0f} s" for backend, seconds in total.items()))


if __name__ == "__main__":
    main()
