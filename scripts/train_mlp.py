"""Train the study's 200-50-25 MLP on Sign-MNIST for one learning rate and activation.

    python scripts/train_mlp.py --lr 1e-5 --act linear
    tensorboard --logdir runs
"""

from __future__ import annotations

from cli_kit import (ACTIVATION_CHOICES, ArgumentParser, add_training_arguments, positive_float, positive_int, prefer_cuda_runtime_check,
                     run_script, training_config)


def devices_arg(text: str):
    """'auto', a positive count, or a comma-separated list of device indices ('0,1')."""
    if text == "auto":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    parts = text.split(",")
    if len(parts) > 1 and all(part.strip().isdigit() for part in parts):
        return [int(part) for part in parts]
    import argparse

    raise argparse.ArgumentTypeError(f"must be 'auto', a positive number or a list like 0,1; got {text!r}")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="train_mlp.py",
        description="Train the 200-50-25 MLP (Adam, cross-entropy) on Sign-MNIST, test it, and write "
        "TensorBoard events and results.json under LOGDIR/mlp/<act>_lr<lr>/.",
    )
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--act", choices=ACTIVATION_CHOICES, default="relu", help="hidden-layer activation (default relu)")
    add_training_arguments(parser)
    parser.add_argument("--devices", type=devices_arg, default=1,
                        help="devices (processes) per node, a list of device indices like 0,1, or 'auto' (default 1)")
    parser.add_argument("--num-nodes", type=positive_int, default=1,
                        help="machines to train on together, data-parallel (default 1; see README: srun or torchrun "
                        "starts the processes)")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default auto)")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from lightning_modules.training import train_mlp

    prefer_cuda_runtime_check(args.strategy)  # after Lightning's import, which sets the NVML check
    results = train_mlp(training_config(args, lr=args.lr, act=args.act, devices=args.devices, num_nodes=args.num_nodes,
                                        strategy=args.strategy))
    if results["world_size"] > 1 and not _is_rank_zero():
        return
    from labkit.progress import stage

    with stage("after the run had finished", kept=f"the run is complete: {results['log_dir']}/results.json"):
        _print_summary(results)


def _print_summary(results: dict) -> None:
    print(
        f"{results['run']}: test accuracy {results['test_acc']:.4f}, test loss {results['test_loss']:.4f}, "
        f"best validation accuracy {results['best_val_acc']:.4f} (epoch {results['best_epoch']}), "
        f"{results['seconds_per_epoch']:.2f} s/epoch on {results['device']}\n"
        f"results: {results['log_dir']}/results.json"
    )


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


if __name__ == "__main__":
    run_script(main, kept_on_interrupt="nothing written for this run")
