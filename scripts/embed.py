#!/usr/bin/env python
"""2-D maps of the Sign-MNIST training images: PCA(2), t-SNE, LLE and MDS.

Writes, in --out, a scatter (<method>_scatter.png) and a thumbnail map
(<method>_thumbnails.png) per map and results.json (per map: rows, fit seconds, where it ran,
trustworthiness, 2-D k-NN accuracy, the parameters used), and prints a summary table.

Examples:
  python scripts/embed.py --quick                    # about a minute on a 2-core CPU
  python scripts/embed.py --methods pca,tsne --backend cuml
  python scripts/embed.py --backend torch            # t-SNE, MDS and PCA on torch's CUDA device
"""

from __future__ import annotations

from reduction.backend import enable_scipy_array_api

# The PCA map on a torch device needs SciPy's Array API support, which SciPy reads once, when it
# is first imported: switched on before anything imports it.
enable_scipy_array_api()

import sys  # noqa: E402

from cli_kit import ArgumentParser, FolderLock, add_study_arguments, heartbeat, run_script, write_json  # noqa: E402
from reduction.choices import MAP_METHODS as METHODS  # noqa: E402


def method_list(text: str) -> list[str]:
    """'tsne,pca' -> ['tsne', 'pca']; an unknown name is an argument error."""
    import argparse

    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {', '.join(unknown) or repr(text)}; choose from {', '.join(METHODS)}"
        )
    return names


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="embed.py",
        description="2-D maps (PCA, t-SNE, LLE, MDS) of the training part of the 80/20 split, "
        "with scatter and thumbnail figures, trustworthiness and 2-D k-NN accuracy.",
        epilog="Full profile: PCA, t-SNE (1,000 iterations) and LLE on all 21,964 training rows, "
        "MDS on a 5,000-row sample; --quick: 2,000 rows, MDS on 500, 500 t-SNE iterations. "
        "Exit code 2 on bad input.",
    )
    add_study_arguments(parser, "embed", quick_help="small profile for a first look (see below)")
    parser.add_argument(
        "--methods",
        type=method_list,
        nargs="+",
        default=[list(METHODS)],
        metavar="M[,M...]",
        help=f"maps to make, comma- or space-separated, from {','.join(METHODS)} (default all)",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from datamodules import REDUCTION_VAL_FRACTION, load_splits
    from reduction.backend import select_backend
    from reduction.studies import embed

    profile = embed.QUICK if args.quick else embed.FULL
    methods = [name for group in args.methods for name in group]

    select_backend(args.backend)  # a backend that cannot run here fails before the data are loaded
    with FolderLock(args.out), heartbeat("embed"):  # one run at a time writes --out
        data = load_splits(args.data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=args.seed)
        results = embed.run(profile, data, args.out, args.backend, seed=args.seed, methods=methods)
        results["command"] = ["embed.py", *(sys.argv[1:] if argv is None else argv)]
        path = write_json(args.out / "results.json", results)
    print("\n".join(embed.summary_lines(results)))
    print(f"figures and {path.name} in {args.out}")
    return 0


if __name__ == "__main__":
    run_script(main, kept_on_interrupt="figures of finished maps are kept; no results.json written")
