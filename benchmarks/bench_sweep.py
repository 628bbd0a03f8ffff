"""The MLP sweep, fused against one run per setting: seconds per training epoch and wall time.

    python benchmarks/bench_sweep.py [--epochs 3] [--limit-rows N] [--seeds 5] [--no-pictures]

Each way is ``lightning_modules.sweep.run_sweep`` as ``scripts/sweep_mlp.py`` runs it, outputs
included (TensorBoard runs, results.json, pictures unless --no-pictures, summary):

1. sequential (``--sequential``): one ``train_mlp`` run per setting (learning rates 1e-3 1e-5
   1e-9 x activations relu, linear); its epoch is the sum of the settings' median epochs;
2. fused (the default): the same 6 settings as the members of one ``FusedMLPs``;
3. fused x seeds: the 6 settings x ``--seeds`` initialisation seeds (30 members by default).

Epoch times exclude validation (``EpochTimer``). The table gives the median epoch of each way,
per member, its ratio to the sequential way per member (below 1: faster), and the wall time of
the whole sweep. The fused members seeded like the sequential runs train the same models, so
their test numbers are compared too (closely equal at small learning rates; at 1e-3 float32
rounding differences grow over the epochs, as between two solo runs on different thread counts).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from lightning_modules.sweep import run_sweep
from lightning_modules.training import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from cli_kit import prefer_cuda_runtime_check  # noqa: E402  (the scripts' entry-point setting)

LRS = [1e-3, 1e-5, 1e-9]
ACTS = ["relu", "linear"]


def sweep(args, out_dir: str, seeds: list[int], sequential: bool) -> dict:
    """One ``run_sweep`` as ``scripts/sweep_mlp.py`` runs it (outputs written), timed."""
    base = TrainConfig(epochs=args.epochs, seed=args.seed, data_dir=args.data_dir, logdir=f"{out_dir}/runs",
                       accelerator=args.accelerator, limit_rows=args.limit_rows, echo=False,
                       pictures=not args.no_pictures)
    started = time.perf_counter()
    summary = run_sweep(base, LRS, ACTS, f"{out_dir}/sweep", seeds=seeds, sequential=sequential)
    runs = summary["runs"]
    # Sequential: the settings' epochs add up; fused: one epoch trains them all.
    epoch = sum(run["seconds_per_epoch"] for run in runs) if sequential else runs[0]["seconds_per_epoch"]
    return {
        "members": len(runs),
        "seconds_per_epoch": epoch,
        "wall": time.perf_counter() - started,
        "results": {(run["act"], run["lr"]): run for run in runs if run["seed"] == args.seed},
        "device": runs[0]["device"],
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
    parser.add_argument("--no-pictures", action="store_true", help="skip each run's end-of-training TensorBoard pictures")
    parser.add_argument("--ways", nargs="+", choices=["sequential", "fused", "fused-seeds"],
                        default=["sequential", "fused", "fused-seeds"], help="which ways to time (default all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    prefer_cuda_runtime_check()  # as scripts/sweep_mlp.py does, after importing Lightning
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    print(f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
          f"accelerator {args.accelerator}, {args.epochs} epochs, limit_rows {args.limit_rows}", flush=True)
    seeds = [args.seed + i for i in range(args.seeds)]
    timed: dict[str, dict] = {}
    ways = {
        "sequential": ("sequential (--sequential)", seeds[:1], True),
        "fused": ("fused", seeds[:1], False),
        "fused-seeds": (f"fused, {args.seeds} seeds", seeds, False),
    }
    for way in args.ways:
        name, way_seeds, is_sequential = ways[way]
        with tempfile.TemporaryDirectory() as out_dir:
            timed[name] = sweep(args, out_dir, way_seeds, is_sequential)
        print(f"{name} done", flush=True)
    device = next(iter(timed.values()))["device"] if timed else args.accelerator
    print(f"\ndevice: {device}\n")

    base = timed.get("sequential (--sequential)")
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
