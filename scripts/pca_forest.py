"""PCA and random forests on Sign-MNIST: the 95% PCA, grid searches on raw pixels and on PCA
features, the best forests tested, and fit times with and without PCA.

    python scripts/pca_forest.py --quick            # small grids, a minute on a CPU
    python scripts/pca_forest.py --backend cuml     # the full grids on an NVIDIA GPU
    python scripts/pca_forest.py --backend torch    # the PCA on torch's CUDA device, the forests on the CPU

Writes results.json and PNG figures in --out. Finished grid depths are cached (--cache-dir), so
an interrupted run started again resumes.
"""

from __future__ import annotations

from reduction.backend import enable_scipy_array_api

# The PCA on a torch device needs SciPy's Array API support, which SciPy reads once, when it is
# first imported: switched on before anything imports it.
enable_scipy_array_api()

import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from cli_kit import (ArgumentParser, FolderLock, UsageError, add_study_arguments, configure_logging, heartbeat,  # noqa: E402
                     int_list, parsed_by, positive_int, run_script, write_json)
from reduction.choices import grid_axis  # noqa: E402


def parse_grid_axis(text: str) -> tuple[int, ...]:
    """``START:STOP:STEP`` (STOP included when on the step) or a comma list ``10,30,50``."""
    return grid_axis(int_list(text, "grid"), f"grid {text!r}")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="pca_forest.py",
        description="PCA (components for 95% of the variance, reconstructions) and random-forest grid "
        "searches on raw pixels and on PCA features, scored on the 20% validation split; the best "
        "forests are refit and tested, and fit times with and without PCA are measured. Writes "
        "results.json and figures in --out.",
        epilog="Grids are START:STOP:STEP (STOP included) or comma lists, e.g. --raw-trees 50:750:50 "
        "--raw-depths 5,10,20. Full grids: raw 50:750:50 x 5:50:5, PCA 50:170:20 x 5:50:5; "
        "--quick: 10,30,50 x 5,10,15 on both, forests on 4000 sampled training rows.",
    )
    grid = parsed_by(parse_grid_axis)
    add_study_arguments(parser, "pca_forest", quick_help="small grids and a training-row sample for the forests")
    parser.add_argument("--grid-method", choices=["truncate", "per_depth"], default=None,
                        help="truncate (default on scikit-learn): one forest per grid, every max_depth cell scored by "
                        "cutting its trees at that depth; per_depth: one forest per depth, exact (the earlier way, "
                        "and cuML's)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where finished grids (or grid depths) are kept, to resume (default OUT/grid_cache)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the grid cache")
    parser.add_argument("--raw-trees", type=grid, default=None, metavar="GRID", help="n_estimators grid on raw pixels")
    parser.add_argument("--raw-depths", type=grid, default=None, metavar="GRID", help="max_depth grid on raw pixels")
    parser.add_argument("--pca-trees", type=grid, default=None, metavar="GRID", help="n_estimators grid on PCA features")
    parser.add_argument("--pca-depths", type=grid, default=None, metavar="GRID", help="max_depth grid on PCA features")
    parser.add_argument("--forest-rows", type=positive_int, default=None, metavar="N",
                        help="fit the forests on N sampled training rows (default: all; 4000 with --quick)")
    parser.add_argument("--limit-rows", type=positive_int, default=None, metavar="N",
                        help="use only the first N rows of each CSV (quick trials)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from datamodules import REDUCTION_VAL_FRACTION, load_splits
    from reduction.backend import select_backend
    from reduction.studies import pca_forest
    from reduction.studies.common import customized

    if args.no_cache and args.cache_dir is not None:
        raise UsageError("--cache-dir and --no-cache contradict each other")
    profile = customized(
        pca_forest.QUICK if args.quick else pca_forest.FULL,
        raw_n_estimators=args.raw_trees,
        raw_max_depth=args.raw_depths,
        pca_n_estimators=args.pca_trees,
        pca_max_depth=args.pca_depths,
        forest_train_rows=args.forest_rows,
        forest_method=args.grid_method,
    )
    cache_dir = None if args.no_cache else (args.cache_dir or args.out / "grid_cache")
    if args.quiet:
        configure_logging(logging.WARNING)  # notes only, no progress lines

    select_backend(args.backend)  # a backend that cannot run here fails before the data are loaded
    with FolderLock(args.out), heartbeat("pca-forest"):  # one run at a time writes --out
        data = load_splits(args.data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=args.seed, limit_rows=args.limit_rows)
        results = pca_forest.run(profile, data, args.out, args.backend, seed=args.seed, cache_dir=cache_dir)
        results["command"] = ["pca_forest.py", *(sys.argv[1:] if argv is None else argv)]
        path = write_json(args.out / "results.json", results)
    print("\n".join(pca_forest.summary_lines(results)))
    print(f"results: {path}")


if __name__ == "__main__":
    run_script(main, kept_on_interrupt="figures of finished steps are kept; no results.json written")
