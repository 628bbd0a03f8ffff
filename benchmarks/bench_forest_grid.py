"""The raw-pixel forest grid both ways, in one run: one forest per depth against one forest cut
at every depth (reduction.forest_grid, methods "per_depth" and "truncate").

    python benchmarks/bench_forest_grid.py                         # the study's full grid (long)
    python benchmarks/bench_forest_grid.py --trees 10:50:10 --depths 5:25:5 --rows 4000

Data: the real training part of the 80/20 split (21,964 rows; ``--rows`` samples fewer, as the
study's ``forest_train_rows`` does) and its validation rows (5,491; ``--val-rows`` takes the
first N). Both ways run on the same rows with the same random_state, no cache, one after the
other (``--order``), with ``--n-jobs`` threads. Prints one table: seconds, the ratio to the
per-depth way, forests and trees grown, the best cell and its validation accuracy; then how far
the two grids' validation accuracies are apart, per cell (the per-depth cells are ordinary
forests; the truncated ones match them in distribution, exactly at the top depth).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

from datamodules import REDUCTION_VAL_FRACTION, load_splits, reference_sample
from reduction.forest_grid import GRID_METHODS, ForestGridSearch, grid_axis


def axis(text: str) -> tuple[int, ...]:
    """``START:STOP:STEP`` (STOP included) or ``10,30,50``."""
    try:
        if ":" in text:
            start, stop, step = (int(part) for part in text.split(":"))
            values = range(start, stop + 1, step)
        else:
            values = [int(part) for part in text.split(",") if part.strip()]
        return grid_axis(values, f"grid {text!r}")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=axis, default=axis("50:750:50"), help="n_estimators grid (default 50:750:50)")
    parser.add_argument("--depths", type=axis, default=axis("5:50:5"), help="max_depth grid (default 5:50:5)")
    parser.add_argument("--rows", type=int, default=None, help="training rows (a reference sample; default all)")
    parser.add_argument("--val-rows", type=int, default=None, help="the first N validation rows (default all)")
    parser.add_argument("--order", nargs="+", choices=GRID_METHODS, default=["per_depth", "truncate"],
                        help="the ways to run, in this order (default: per_depth truncate)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="threads for growing and scoring (default -1: all cores)")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    data = load_splits(val_fraction=REDUCTION_VAL_FRACTION, seed=args.seed)
    X, y = data.train_images, data.train_labels
    if args.rows is not None and args.rows < len(X):
        rows = reference_sample(len(X), args.rows, args.seed)
        X, y = X[rows], y[rows]
    X_val, y_val = data.val_images[: args.val_rows], data.val_labels[: args.val_rows]
    print(f"{os.cpu_count()} CPU cores, n_jobs={args.n_jobs}; {len(X)} training x {X.shape[1]} features, "
          f"{len(X_val)} validation rows; n_estimators {list(args.trees)} x max_depth {list(args.depths)}", flush=True)

    grids, seconds = {}, {}
    for method in args.order:
        start = time.perf_counter()
        grids[method] = ForestGridSearch(args.trees, args.depths, backend="sklearn", random_state=args.seed,
                                         n_jobs=args.n_jobs, name=method, progress=not args.quiet,
                                         method=method).fit(X, y, X_val, y_val)
        seconds[method] = time.perf_counter() - start
        print(f"{method}: {seconds[method]:.1f} s", flush=True)

    base = seconds.get("per_depth", seconds[args.order[0]])
    print("\n| way | seconds | ratio to per_depth | forests grown | trees grown | best cell (trees, depth) "
          "| its validation accuracy |")
    print("|---|---|---|---|---|---|---|")
    for method, grid in grids.items():
        best = grid.best_
        print(f"| {method} | {seconds[method]:.1f} | {seconds[method] / base:.3f} | {grid.forests_grown_} "
              f"| {grid.trees_grown_} | ({best['n_estimators']}, {best['max_depth']}) | {best['val_accuracy']:.4f} |")
    if len(grids) == 2:
        a, b = (np.array([cell["val_accuracy"] for cell in grid.cells_]) for grid in grids.values())
        top = np.array([cell["max_depth"] == args.depths[-1] for cell in grids[args.order[0]].cells_])
        difference = b - a
        print(f"\nvalidation accuracy, {args.order[1]} minus {args.order[0]}, over {len(a)} cells: mean "
              f"{difference.mean():+.4f}, largest |difference| {np.abs(difference).max():.4f} "
              f"(one validation row = {1 / len(y_val):.4f}); at the top depth {args.depths[-1]}: largest "
              f"|difference| {np.abs(difference[top]).max():.4f}")


if __name__ == "__main__":
    main()
