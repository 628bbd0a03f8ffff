"""Train the MLP for every learning rate x activation (x seed) and summarise (table, JSON, figure).

    python scripts/sweep_mlp.py                     # lr 1e-3 1e-5 1e-9 x relu linear, 100 epochs, fused
    python scripts/sweep_mlp.py --seeds 22 23 24 25 26   # every setting 5 times: mean and spread
    python scripts/sweep_mlp.py --sequential        # one run after another, as train_mlp.py would
"""

from __future__ import annotations

from cli_kit import (ACTIVATION_CHOICES, ArgumentParser, FolderLock, add_training_arguments, positive_float, prefer_cuda_runtime_check,
                     run_script, training_config)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="sweep_mlp.py",
        description="Train the 200-50-25 MLP for each learning rate, activation and seed, then write "
        "OUT/summary.md (table), OUT/summary.json and OUT/curves.png (loss and accuracy per epoch). "
        "Each run's TensorBoard events and results.json go to LOGDIR/mlp/<act>_lr<lr>[_seed<s>]/. "
        "By default all settings train together as one fused model (each exactly as if alone, on the "
        "same batches); --sequential trains them one after another.",
    )
    parser.add_argument("--lrs", type=positive_float, nargs="+", default=[1e-3, 1e-5, 1e-9], help="learning rates (default 1e-3 1e-5 1e-9)")
    parser.add_argument("--acts", choices=ACTIVATION_CHOICES, nargs="+", default=["relu", "linear"], help="hidden activations (default relu linear)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="initialisation seeds; every setting is trained once per seed and summarised as mean "
                        "and standard deviation (default: --seed alone, as the reference)")
    parser.add_argument("--sequential", action="store_true",
                        help="train the settings one after another instead of fused (for comparison, or when "
                        "all settings do not fit in memory together)")
    add_training_arguments(parser)
    parser.add_argument("--out", default="runs/mlp_sweep", help="folder for the summary (default runs/mlp_sweep)")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from lightning_modules.sweep import run_sweep, summary_markdown

    prefer_cuda_runtime_check()  # after Lightning's import, which sets the NVML check

    seeds = list(dict.fromkeys(args.seeds)) if args.seeds else None
    with FolderLock(args.out):  # one sweep at a time writes this summary folder
        summary = run_sweep(training_config(args), list(dict.fromkeys(args.lrs)), list(dict.fromkeys(args.acts)), args.out,
                            seeds=seeds, sequential=args.sequential)
    print()
    print(summary_markdown(summary))
    print(f"summary: {args.out}/summary.md, {args.out}/summary.json, figure: {args.out}/curves.png")


if __name__ == "__main__":
    run_script(main, kept_on_interrupt="no run finished; nothing written")
