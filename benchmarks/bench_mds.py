"""Metric MDS on the CPU: scikit-learn's SMACOF against the batched torch SMACOF, in one run.

    python benchmarks/bench_mds.py                           # the reference's settings
    python benchmarks/bench_mds.py --rows 500 --max-iter 30   # a smoke test

The embed study's MDS input: ``--rows`` rows (default 5,000) of the training part's raw
pixels, the study's reference sample, float64; the reference's settings (n_init 4, max_iter 300,
random starts, eps as reduction.estimators.embedding.reference_mds_eps gives). Four ways:

* scikit-learn, serial draws (``sklearn.manifold.MDS`` with the parameters the project's MDS
  wrapper gives it, n_jobs=None): the starts one after another from one random stream, the
  reference's way and the baseline of the ratios;
* scikit-learn, seeded draws (n_jobs=-1): one seed per start, the starts in parallel
  processes, the embed study's way before the torch SMACOF became the CPU's MDS;
* torch SMACOF (``reduction.torch_places.smacof.TorchSMACOF``), the same serial draws, and
* torch SMACOF, the same seeded draws: all 4 starts as one batch in this process, torch's
  CPU threads (as many as torch uses by default).

Each torch way starts from the very starts of its scikit-learn twin, so their stress and
iterations must agree (the table shows the relative stress difference and the map gap after
the best rotation). Each way runs once per ``--repeats``, the ways alternating; medians.
Prints one table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from datamodules import REDUCTION_VAL_FRACTION, REFERENCE_SEED, load_splits, reference_sample


def map_gap(A, B) -> float:
    """Relative Frobenius gap between two maps after the best rotation/reflection of A onto B."""
    from scipy.linalg import orthogonal_procrustes

    A, B = A - A.mean(0), B - B.mean(0)
    rotation, _ = orthogonal_procrustes(A, B)
    return float(np.linalg.norm(A @ rotation - B) / np.linalg.norm(B))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000, help="sampled training rows (default 5000, the study's)")
    parser.add_argument("--n-init", type=int, default=4, help="SMACOF starts (default 4, the reference's)")
    parser.add_argument("--max-iter", type=int, default=300, help="iterations per start at most (default 300)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per way, alternating (median reported)")
    parser.add_argument("--seed", type=int, default=REFERENCE_SEED)
    args = parser.parse_args(argv)
    for name in ("rows", "n_init", "max_iter", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    import sklearn
    import torch

    from joblib import effective_n_jobs
    from sklearn.manifold import MDS as SkMDS

    from reduction.backend import parameter_names
    from reduction.estimators.embedding import reference_mds_eps, sklearn_mds_kwargs
    from reduction.torch_places.smacof import TorchSMACOF

    images = load_splits(val_fraction=REDUCTION_VAL_FRACTION, seed=args.seed).train_images
    X = images[reference_sample(len(images), args.rows, args.seed)].astype(np.float64)
    eps = reference_mds_eps(sklearn.__version__)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"scikit-learn {sklearn.__version__}; load average at the start {load}", flush=True)
    print(f"{len(X)} rows x {X.shape[1]} pixels (float64), n_init {args.n_init}, max_iter {args.max_iter}, eps {eps:g}",
          flush=True)

    def sklearn_way(n_jobs):
        # scikit-learn's MDS itself, built with the parameters the MDS wrapper gives it (its
        # backend="sklearn" now runs the torch SMACOF on the CPU, see reduction/backend.py).
        workers = None if n_jobs is None else max(2, min(args.n_init, effective_n_jobs(n_jobs)))
        params = sklearn_mds_kwargs(parameter_names(SkMDS), sklearn.__version__, args.seed, n_init=args.n_init,
                                    max_iter=args.max_iter, n_jobs=workers)
        return lambda: SkMDS(**params).fit(X)

    def torch_way(n_jobs):
        return lambda: TorchSMACOF(n_init=args.n_init, max_iter=args.max_iter, eps=eps, init="random",
                                   normalized_stress=False, random_state=args.seed, n_jobs=n_jobs, device="cpu",
                                   dtype="float64").fit(X)

    # (name, fit, the scikit-learn way it draws the same starts as)
    ways = [
        ("scikit-learn, serial draws (n_jobs=None)", sklearn_way(None), None),
        ("scikit-learn, seeded draws (n_jobs=-1, processes)", sklearn_way(-1), None),
        ("torch SMACOF, serial draws, one batch", torch_way(None), "scikit-learn, serial draws (n_jobs=None)"),
        ("torch SMACOF, seeded draws, one batch", torch_way(-1), "scikit-learn, seeded draws (n_jobs=-1, processes)"),
    ]
    seconds = {name: [] for name, _, _ in ways}
    models = {}
    for repeat in range(args.repeats):
        for name, fit, _ in ways:
            start = time.perf_counter()
            models[name] = fit()
            seconds[name].append(time.perf_counter() - start)
            print(f"[{repeat + 1}/{args.repeats}] {name}: {seconds[name][-1]:.1f} s", flush=True)

    base = statistics.median(seconds[ways[0][0]])
    print(f"\nload average at the end {', '.join(f'{value:.1f}' for value in os.getloadavg())}")
    print("\n| way | seconds (median) | ratio to scikit-learn serial | stress | iterations (best start) | agreement with its scikit-learn twin |")
    print("|---|---|---|---|---|---|")
    for name, _, twin in ways:
        model, median = models[name], statistics.median(seconds[name])
        agreement = "-"
        if twin is not None:
            reference = models[twin]
            agreement = (f"stress {abs(model.stress_ - reference.stress_) / reference.stress_:.1e} apart, "
                         f"map gap {map_gap(model.embedding_, reference.embedding_):.1e}, "
                         f"iterations {'equal' if model.n_iter_ == reference.n_iter_ else 'differ'}")
        print(f"| {name} | {median:.1f} | {median / base:.2f} | {model.stress_:.6g} | {model.n_iter_} | {agreement} |")


if __name__ == "__main__":
    main()
