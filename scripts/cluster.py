"""K-Means and Gaussian-mixture clustering of Sign-MNIST (PCA features of a training sample).

    python scripts/cluster.py --quick            # small sample and sweeps, under a minute on a CPU
    python scripts/cluster.py --backend cuml     # the reference's sweeps on an NVIDIA GPU
    python scripts/cluster.py --backend torch    # the PCA and the mixtures on torch's CUDA device

Writes results.json and PNG figures in --out.
"""

from __future__ import annotations

from reduction.backend import enable_scipy_array_api

# The PCA and the Gaussian mixture on a torch device need SciPy's Array API support, which SciPy
# reads once, when it is first imported: switched on before anything imports it (cli_kit's imports do).
enable_scipy_array_api()

import logging  # noqa: E402
import sys  # noqa: E402

from cli_kit import (ArgumentParser, FolderLock, add_study_arguments, configure_logging, heartbeat, int_list,  # noqa: E402
                     parsed_by, positive_int, run_script, write_json)
from reduction.choices import check_ks  # noqa: E402


def parse_k_list(text: str) -> tuple[int, ...]:
    """``START:STOP:STEP`` or a comma list ``5,10,20``; sorted, distinct, every k >= 2 (ValueError otherwise)."""
    return tuple(check_ks(int_list(text, "k list")))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="cluster.py",
        description="K-Means (silhouette and inertia per k) and Gaussian mixtures (AIC and BIC per k) on the "
        "95%-variance PCA features of a sample of the training part (80/20 split of the train CSV); the "
        "chosen k's clusters shown as images and scored against the true letters (ARI, NMI, purity); 20 "
        "images generated from the chosen mixture. Writes results.json and figures in --out.",
        epilog="K lists are START:STOP:STEP (STOP included) or comma lists, e.g. --k 5:40:5 or --k 5,10,20. "
        "Full run (the reference): --sample-size 10000, --k 5:40:5, K-Means n_init 50 (init random), "
        "mixtures n_init 10. --quick: 2000 rows, k 5,15,25, n_init 3 and 1, fewer iterations. "
        "K-Means k rule: 'silhouette' = highest mean silhouette; 'elbow' = the k farthest below the chord "
        "of the inertia curve. Mixtures: lowest BIC.",
    )
    add_study_arguments(parser, "cluster", quick_help="small sample, few k, few restarts (a quick check)")
    parser.add_argument("--cluster-seed", type=int, default=42,
                        help="random_state of K-Means, the mixtures and their samples (default 42, the reference's); "
                        "--seed (default 22) picks the split and the sample")
    parser.add_argument("--k", type=parsed_by(parse_k_list), default=None, metavar="KS",
                        help="k values for both sweeps (default 5:40:5; 5,15,25 with --quick)")
    parser.add_argument("--sample-size", type=positive_int, default=None, metavar="N",
                        help="training rows sampled for the clustering (default 10000; 2000 with --quick)")
    parser.add_argument("--kmeans-n-init", type=positive_int, default=None, metavar="N",
                        help="K-Means restarts (default 50; 3 with --quick)")
    parser.add_argument("--gmm-n-init", type=positive_int, default=None, metavar="N",
                        help="Gaussian-mixture restarts (default 10; 1 with --quick)")
    parser.add_argument("--gmm-init", choices=("kmeans", "random", "random_from_data"), default=None,
                        help="how each mixture start is drawn (default kmeans, scikit-learn's default and the reference's)")
    parser.add_argument("--k-rule", choices=("silhouette", "elbow"), default=None,
                        help="how K-Means' k is chosen (default silhouette)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from datamodules import REDUCTION_VAL_FRACTION, load_splits
    from reduction.backend import select_backend
    from reduction.studies import cluster
    from reduction.studies.common import customized

    profile = customized(
        cluster.QUICK if args.quick else cluster.FULL,
        ks=args.k,
        sample_size=args.sample_size,
        kmeans_n_init=args.kmeans_n_init,
        gmm_n_init=args.gmm_n_init,
        k_rule=args.k_rule,
        gmm_init_params=args.gmm_init,
    )
    if args.quiet:
        configure_logging(logging.WARNING)  # notes only, no progress lines

    select_backend(args.backend)  # a backend that cannot run here fails before the data are loaded
    with FolderLock(args.out), heartbeat("cluster"):  # one run at a time writes --out
        data = load_splits(args.data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=args.seed)
        results = cluster.run(profile, data, args.out, args.backend, seed=args.seed, cluster_seed=args.cluster_seed)
        results["command"] = ["cluster.py", *(sys.argv[1:] if argv is None else argv)]
        path = write_json(args.out / "results.json", results)
    print("\n".join(cluster.summary_lines(results)))
    print(f"results: {path}")


if __name__ == "__main__":
    run_script(main, kept_on_interrupt="figures of finished steps are kept; no results.json written")
