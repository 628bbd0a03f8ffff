"""Seconds per training epoch of the MLP sweep: one run per setting against all settings fused.

    python benchmarks/bench_sweep.py [--epochs 3] [--limit-rows N] [--seeds 5]

1. sequential: today's ``lightning_modules.sweep.run_sweep``, one ``train_mlp`` run per setting
   (learning rates 1e-3 1e-5 1e-9 x activations relu, linear); its epoch is the sum of the
   settings' median epochs;
2. fused: the same 6 settings as the members of one ``FusedMLPs`` (``train_fused``);
3. fused x seeds: the 6 settings x ``--seeds`` initialisation seeds (30 members by default).

Every way trains on the reference split (batch 32), validates every epoch and tests at the end,
as the sweep does; epoch times exclude validation (``EpochTimer``). The table gives the median
epoch of each way, per member, and its ratio to the sequential way per member (below 1: faster).
The fused members seeded like the sequential runs train the same models, so their test numbers
are compared too (closely equal at small learning rates; at 1e-3 float32 rounding differences
grow over the epochs, as between two solo runs on different thread counts).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings

import lightning as L
import torch

from lightning_modules.fused import member_specs, train_fused
from lightning_modules.sweep import run_sweep
from lightning_modules.training import TrainConfig

LRS = [1e-3, 1e-5, 1e-9]
ACTS = ["relu", "linear"]


def sequential(args, out_dir: str) -> dict:
    base = TrainConfig(epochs=args.epochs, seed=args.seed, data_dir=args.data_dir, logdir=f"{out_dir}/runs",
                       accelerator=args.accelerator, limit_rows=args.limit_rows, echo=False)
    started = time.perf_counter()
    summary = run_sweep(base, LRS, ACTS, f"{out_dir}/sweep")
    return {
        "members": len(summary["settings"]),
        "seconds_per_epoch": sum(row["seconds_per_epoch"] for row in summary["settings"]),
        "wall": time.perf_counter() - started,
        "results": {(row["act"], row["lr"]): row for row in summary["settings"]},
    }


def fused(args, seeds: list[int]) -> dict:
    started = time.perf_counter()
    run = train_fused(member_specs(ACTS, LRS, seeds), data_dir=args.data_dir, epochs=args.epochs, data_seed=args.seed,
                      limit_rows=args.limit_rows, accelerator=args.accelerator)
    return {
        "members": len(run["members"]),
        "seconds_per_epoch": run["seconds_per_epoch"],
        "wall": time.perf_counter() - started,
        "results": {(r["act"], r["lr"]): r for r in run["members"] if r["seed"] == args.seed},
        "device": run["device"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training run (default 3)")
    parser.add_argument("--limit-rows", type=int, default=None, help="first N rows of each CSV only (default all)")
    parser.add_argument("--seeds", type=int, default=5, help="initialisation seeds of the widest fused way (default 5)")
    parser.add_argument("--seed", type=int, default=22, help="data split and batch order, and the first seed (default 22)")
    parser.add_argument("--data-dir", default=None, help="Kaggle CSVs (default: the shipped data/)")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda", "gpu", "auto"], help="default cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--ways", nargs="+", choices=["sequential", "fused", "fused-seeds"],
                        default=["sequential", "fused", "fused-seeds"], help="which ways to time (default all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    print(f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
          f"accelerator {args.accelerator}, {args.epochs} epochs, limit_rows {args.limit_rows}", flush=True)
    seeds = [args.seed + i for i in range(args.seeds)]
    timed: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as out_dir:
        if "sequential" in args.ways:
            timed["sequential (run_sweep)"] = sequential(args, out_dir)
            print("sequential done", flush=True)
    if "fused" in args.ways:
        timed["fused"] = fused(args, seeds[:1])
        print("fused done", flush=True)
    if "fused-seeds" in args.ways:
        timed[f"fused, {args.seeds} seeds"] = fused(args, seeds)
        print("fused x seeds done", flush=True)
    device = next((way["device"] for way in timed.values() if "device" in way), args.accelerator)
    print(f"\ndevice: {device}\n")

    base = timed.get("sequential (run_sweep)")
    print("| way | members | s/epoch (median) | s/epoch per member | ratio to sequential, per member | wall s |")
    print("|---|---|---|---|---|---|")
    for name, way in timed.items():
        per_member = way["seconds_per_epoch"] / way["members"]
        ratio = f"{per_member / (base['seconds_per_epoch'] / base['members']):.2f}x" if base else "n/a"
        print(f"| {name} | {way['members']} | {way['seconds_per_epoch']:.3f} | {per_member:.3f} | {ratio} | {way['wall']:.1f} |")

    if base:
        # At lr 1e-3 float32 rounding differences grow over hundreds of steps (a solo run on 2
        # threads instead of 1 drifts as far), so only the small learning rates agree closely here;
        # tests/test_fused.py checks exactness step by step.
        for name, way in timed.items():
            if way is base:
                continue
            diffs = []
            for key, row in base["results"].items():
                if key in way["results"]:
                    ours = way["results"][key]
                    d_loss = abs(ours["test_loss"] - row["test_loss"]) / max(abs(row["test_loss"]), 1e-12)
                    diffs.append(f"{key[0]} {key[1]:g}: {d_loss:.1e} / {abs(ours['test_acc'] - row['test_acc']):.4f}")
            if diffs:
                print(f"\n{name}, members seeded {args.seed} against the sequential runs (relative test-loss "
                      f"difference / test-accuracy difference): " + "; ".join(diffs))

if __name__ == "__main__":
    main()
