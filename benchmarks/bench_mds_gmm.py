"""MDS and the Gaussian-mixture sweep, the old way against the new, in one run on a subset.

    python benchmarks/bench_mds_gmm.py                                  # defaults below
    python benchmarks/bench_mds_gmm.py --steps gmm --gmm-rows 10000 --ks 5:40:5 --gmm-n-init 10

scikit-learn's MDS (with the parameters reduction.estimators.MDS gives it; the reference's
settings: 4 SMACOF runs of up to 300 iterations) on ``--mds-rows`` rows of the real training part (the study's reference sample):
``n_jobs=None`` (the runs one after another, scikit-learn 1.2's random draws) against
``n_jobs=-1`` (the runs in parallel processes, one seed per run). Other random starts, so the
stress differs; both are printed.

The mixture sweep (reduction.cluster_sweeps.mixture_sweep, full covariances, "kmeans" starts)
on the 95% PCA features of ``--gmm-rows`` sampled rows (the PCA fitted on that sample, as the
study does): ``n_jobs=None`` (one k after another, BLAS threads as configured) against
``n_jobs=-1`` (k's in parallel threads, one BLAS thread each), with the largest relative BIC
difference and the lowest ARI between the two ways' labels per k; and, as a diagnostic, one k
after another with one BLAS thread (how much of the difference is the BLAS threads alone: on a
machine whose cores are busy, BLAS threads spin-waiting for each other cost many times over). Then scikit-learn's
GaussianMixture on the same features in float32 (``--no-float32`` skips it): it either fits
(its time and BIC differences are printed) or fails, and the failure is printed.

Prints one table. Each way runs once per ``--repeats``, the ways alternating; medians reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np

from datamodules import REDUCTION_VAL_FRACTION, load_splits, reference_sample


def ks_axis(text: str) -> list[int]:
    if ":" in text:
        start, stop, step = (int(part) for part in text.split(":"))
        return list(range(start, stop + 1, step))
    return [int(part) for part in text.split(",") if part.strip()]


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bench_mds(images, args, rows):
    import sklearn
    from joblib import effective_n_jobs
    from sklearn.manifold import MDS

    from reduction.backend import parameter_names
    from reduction.estimators.embedding import sklearn_mds_kwargs

    def sklearn_mds(n_jobs):
        # scikit-learn's MDS itself, with the parameters the project's MDS wrapper gives it (the
        # wrapper's CPU place is the torch SMACOF now: benchmarks/bench_mds.py compares the two).
        workers = None if n_jobs is None else max(2, min(4, effective_n_jobs(n_jobs)))
        return MDS(**sklearn_mds_kwargs(parameter_names(MDS), sklearn.__version__, args.seed, n_init=4, max_iter=300,
                                        n_jobs=workers))

    X = images[reference_sample(len(images), args.mds_rows, args.seed)].astype(np.float64)
    runs = {"serial (n_jobs=None)": [], "parallel (n_jobs=-1)": []}
    models = {}
    for _ in range(args.repeats):
        for way, n_jobs in (("serial (n_jobs=None)", None), ("parallel (n_jobs=-1)", -1)):
            seconds, model = timed(lambda: sklearn_mds(n_jobs).fit(X))
            runs[way].append(seconds)
            models[way] = model
            print(f"mds {way}: {seconds:.1f} s", flush=True)
    base = statistics.median(runs["serial (n_jobs=None)"])
    for way, seconds in runs.items():
        model = models[way]
        rows.append(("mds", way, statistics.median(seconds), statistics.median(seconds) / base,
                     f"{len(X)} rows, n_init 4, workers {model.n_jobs or 1}; stress {model.stress_:.4g}, "
                     f"{model.n_iter_} iterations"))


def bench_gmm(images, args, rows):
    from sklearn.metrics import adjusted_rand_score

    from reduction.cluster_sweeps import k_by_lowest, mixture_sweep
    from reduction.estimators import PCA

    sample = images[reference_sample(len(images), args.gmm_rows, args.seed)]
    features = PCA(0.95, backend="sklearn", random_state=42).fit(sample).transform(sample).astype(np.float64)
    ks = ks_axis(args.ks)
    settings = dict(n_init=args.gmm_n_init, random_state=42, backend="sklearn")
    from threadpoolctl import threadpool_limits

    ways = {
        "one k after another (n_jobs=None)": (None, None),
        "k's in parallel threads (n_jobs=-1)": (-1, None),
        # Not a way the study runs: which part of the difference is BLAS threads alone.
        "one k after another, one BLAS thread (diagnostic)": (None, 1),
    }
    runs = {way: [] for way in ways}
    sweeps = {}
    for _ in range(args.repeats):
        for way, (n_jobs, blas) in ways.items():
            with threadpool_limits(limits=blas):
                seconds, sweep = timed(lambda: mixture_sweep(features, ks, n_jobs=n_jobs, **settings))
            runs[way].append(seconds)
            sweeps[way] = sweep
            print(f"gmm {way}: {seconds:.1f} s", flush=True)
    old = sweeps["one k after another (n_jobs=None)"]
    base = statistics.median(runs["one k after another (n_jobs=None)"])
    shape = f"{features.shape[0]} rows x {features.shape[1]} PCA features, k {ks}, n_init {args.gmm_n_init}"
    for way, sweep in sweeps.items():
        detail = f"{shape}; workers {sweep.workers}; lowest BIC at k={k_by_lowest(sweep.ks, sweep.bic)}"
        if sweep is not old:
            bic = max(abs(a - b) / abs(b) for a, b in zip(sweep.bic, old.bic))
            ari = min(adjusted_rand_score(old.models[k].labels_, sweep.models[k].labels_) for k in ks)
            detail += f"; vs the old way: largest relative BIC difference {bic:.1e}, lowest ARI of labels {ari:.4f}"
        rows.append(("gmm sweep", way, statistics.median(runs[way]), statistics.median(runs[way]) / base, detail))

    if args.float32:
        from sklearn.mixture import GaussianMixture

        X32 = features.astype(np.float32)
        start, bics, failure = time.perf_counter(), [], None
        for k in ks:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = GaussianMixture(k, n_init=args.gmm_n_init, random_state=42).fit(X32)
                bics.append(float(model.bic(X32)))
            except ValueError as exc:
                failure = f"failed at k={k}: {str(exc).split('. ')[0]}"
                break
        seconds = time.perf_counter() - start
        print(f"gmm float32: {seconds:.1f} s{'; ' + failure if failure else ''}", flush=True)
        if failure:
            detail = f"scikit-learn GaussianMixture on float32 features, one k after another: {failure}"
        else:
            bic = max(abs(a - b) / abs(b) for a, b in zip(bics, old.bic))
            detail = f"scikit-learn GaussianMixture on float32 features: largest relative BIC difference {bic:.1e}"
        rows.append(("gmm sweep", "float32 (tried)", seconds, seconds / base, detail))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", nargs="+", choices=("mds", "gmm"), default=["mds", "gmm"])
    parser.add_argument("--mds-rows", type=int, default=1500, help="MDS rows (default 1500; the study: 5000)")
    parser.add_argument("--gmm-rows", type=int, default=3000, help="sampled rows for the mixtures (default 3000; the study: 10000)")
    parser.add_argument("--ks", default="5,20,40", help="mixture ks, a comma list or START:STOP:STEP (default 5,20,40; the study: 5:40:5)")
    parser.add_argument("--gmm-n-init", type=int, default=2, help="mixture starts per k (default 2; the study: 10)")
    parser.add_argument("--no-float32", dest="float32", action="store_false", help="skip the float32 trial")
    parser.add_argument("--repeats", type=int, default=1, help="runs per way, alternating (median reported)")
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args(argv)

    images = load_splits(val_fraction=REDUCTION_VAL_FRACTION, seed=args.seed).train_images
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{os.cpu_count()} CPU cores; load average at the start {load}", flush=True)
    rows = []
    if "mds" in args.steps:
        bench_mds(images, args, rows)
    if "gmm" in args.steps:
        bench_gmm(images, args, rows)
    print(f"\nload average at the end {', '.join(f'{value:.1f}' for value in os.getloadavg())}")
    print("\n| step | way | seconds (median) | ratio to the old way | detail |")
    print("|---|---|---|---|---|")
    for step, way, seconds, ratio, detail in rows:
        print(f"| {step} | {way} | {seconds:.1f} | {ratio:.2f} | {detail} |")


if __name__ == "__main__":
    main()
