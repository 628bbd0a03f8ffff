"""t-SNE quality: scikit-learn's Barnes-Hut t-SNE against TorchDR's (reduction.torch_places.tsne), several seeds each.

    python benchmarks/bench_tsne_quality.py                                  # 1,500 rows, seeds 22-31
    python benchmarks/bench_tsne_quality.py --rows 300 --seeds 22 23 --max-iter 250   # a smoke test

The embed study's input: ``--rows`` rows of the training part's raw pixels (the reference sample),
t-SNE with the reference's settings (perplexity 30, early exaggeration 12, learning rate "auto",
1,000 iterations, random start) from each seed, both ways. Each map is scored as the study scores
it: trustworthiness (5 neighbours, on up to 2,000 rows), 5-NN accuracy of the letters in 2-D
(5 folds), and its KL divergence under one P (TorchDR's P from the same rows, symmetrised; the
exact KL, so that both ways are measured alike). One table: mean and standard deviation over the
seeds per way, and TorchDR's mean minus scikit-learn's. A single pair of maps differs by about the
seeds' own spread, so the comparison is of the means.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from datamodules import REDUCTION_VAL_FRACTION, REFERENCE_SEED, load_splits, reference_sample


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1500, help="sampled training rows (default 1500)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(22, 32)), help="seeds (default 22..31)")
    parser.add_argument("--max-iter", type=int, default=1000, help="iterations (default 1000, the reference's)")
    parser.add_argument("--perplexity", type=float, default=30.0)
    parser.add_argument("--device", default=None, help="TorchDR's torch device (default: cuda where torch has one, else cpu)")
    args = parser.parse_args(argv)
    if args.rows < 2 or args.max_iter < 250 or not args.perplexity < args.rows:
        parser.error("--rows must be at least 2 and above --perplexity, --max-iter at least 250")

    import sklearn
    import torch
    import torchdr
    from sklearn.manifold import TSNE

    from reduction.scores import knn_accuracy, trustworthiness_on_sample
    from reduction.torch_places.tsne import TorchDRTSNE, kl_divergence

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = load_splits(val_fraction=REDUCTION_VAL_FRACTION, seed=REFERENCE_SEED)
    rows = reference_sample(len(data.train_images), args.rows, REFERENCE_SEED)
    X, y = data.train_images[rows].astype(np.float64), data.train_labels[rows]
    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), TorchDR "
          f"{torchdr.__version__} on {device}, scikit-learn {sklearn.__version__}; {len(X)} rows, perplexity "
          f"{args.perplexity:g}, {args.max_iter} iterations, seeds {' '.join(map(str, args.seeds))}", flush=True)
    P, neighbours = torchdr.EntropicAffinity(perplexity=args.perplexity, metric="sqeuclidean", sparsity=True)(
        torch.as_tensor(X), return_indices=True)

    settings = dict(perplexity=args.perplexity, early_exaggeration=12.0, learning_rate="auto", max_iter=args.max_iter,
                    init="random")
    ways = {
        "scikit-learn (Barnes-Hut, angle 0.5)": lambda seed: TSNE(method="barnes_hut", angle=0.5, random_state=seed,
                                                                  **settings).fit_transform(X),
        f"TorchDR (exact, {device})": lambda seed: TorchDRTSNE(device=device, random_state=seed, **settings).fit_transform(X),
    }
    scores = {name: {"trustworthiness": [], "5-NN accuracy": [], "KL divergence": [], "seconds": []} for name in ways}
    for seed in args.seeds:
        for name, fit in ways.items():
            start = time.perf_counter()
            embedding = fit(seed)
            seconds = time.perf_counter() - start
            got = scores[name]
            got["seconds"].append(seconds)
            got["trustworthiness"].append(trustworthiness_on_sample(X, embedding, 5, 2000, REFERENCE_SEED))
            got["5-NN accuracy"].append(knn_accuracy(embedding, y, 5, 5, REFERENCE_SEED))
            got["KL divergence"].append(kl_divergence(P, neighbours, torch.as_tensor(embedding)))
            print(f"seed {seed}, {name}: trustworthiness {got['trustworthiness'][-1]:.4f}, 5-NN accuracy "
                  f"{got['5-NN accuracy'][-1]:.4f}, KL divergence {got['KL divergence'][-1]:.4f}, {seconds:.1f} s",
                  flush=True)

    def spread(values) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    measures = ("trustworthiness", "5-NN accuracy", "KL divergence")
    print(f"\n| way | maps | {' | '.join(f'{m} (mean ± sd)' for m in measures)} | seconds (median) |")
    print("|---|---|" + "---|" * len(measures) + "---|")
    for name, got in scores.items():
        print(f"| {name} | {len(got['seconds'])} | {' | '.join(spread(got[m]) for m in measures)} | "
              f"{statistics.median(got['seconds']):.1f} |")
    (base, ours) = scores.values()
    print(f"| TorchDR minus scikit-learn (means) | | "
          + " | ".join(f"{statistics.mean(ours[m]) - statistics.mean(base[m]):+.4f}" for m in measures) + " | |")


if __name__ == "__main__":
    main()
