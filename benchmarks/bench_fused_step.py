"""One training step of the fused sweep, piece by piece: gradients by autograd or written out, and Adam's kernel calls.

    python benchmarks/bench_fused_step.py [--seeds 5] [--steps 50] [--blocks 6] [--limit-rows N]

On the real training batches, with the 6 settings (relu, linear x 1e-3, 1e-5, 1e-9) x
``--seeds`` seeds as members (30 by default), on the CPU with denormals flushed, as
``train_fused`` trains:

1. a whole training step, ``optimizer.step(closure=model.train_closure(...))``, with the
   gradients from autograd (``explicit_gradients=False``) and from ``FusedMLPs.explicit_train``
   (the default on the CPU). The two ways alternate in blocks of ``--steps`` steps, so that a
   noisy neighbour slows both alike;
2. Adam's step over the same 5 M parameters, the kernel (``torch._fused_adam_``) called four
   ways: once per member, with that member's 6 tensors (what ``MemberAdam`` did before);
   ``MemberAdam.step`` itself, one call per learning rate with a slice per run of members at
   that rate, the members in the sweep's order (activation, learning rate, seed: 6 runs) or
   sorted by learning rate (3 runs, how the sweep stores them); and once over the 6 stacked
   tensors (one learning rate for all: the floor, for reference). The step of (1) has the
   members sorted too.

Prints one table of median milliseconds per step and the ratio to the first row of its group.

``--per-epoch N`` instead trains the members for N whole epochs (``explicit_train`` and
``MemberAdam``, no Lightning, no validation) and prints, per epoch, the seconds spent computing
gradients and in Adam's step, and at the end how closely the two move together (Pearson's r):
Adam's kernel does the same work on any numbers (denormals flushed), so if both slow down
together, the machine slowed, not the training.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from functools import partial

import torch

from datamodules import SignMNISTDataModule
from lightning_modules.fused import MemberAdam, build_fused, member_specs
from lightning_modules.training import flush_denormals

LRS = [1e-3, 1e-5, 1e-9]
ACTS = ["relu", "linear"]


def time_training_steps(args, datamodule, members) -> dict[str, float]:
    """Median ms per training step of each way, from alternating blocks of ``args.steps`` steps."""
    batches = list(datamodule.train_dataloader())
    ways = {}
    members = sorted(members, key=lambda member: member.lr)  # as the sweep stores them (one Adam call per rate)
    for name, explicit in (("autograd", False), ("explicit", True)):
        model = build_fused(members, datamodule.train_images, explicit_gradients=explicit)
        ways[name] = (model, MemberAdam.for_model(model))
    per_step = {name: [] for name in ways}
    position = 0
    for block in range(args.blocks + 1):  # the first block of each way warms up
        chunk = [batches[(position + i) % len(batches)] for i in range(args.steps)]
        position += args.steps
        for name, (model, optimizer) in ways.items():
            started = time.perf_counter()
            for images, labels in chunk:
                optimizer.step(closure=model.train_closure(images, labels))
            if block:
                per_step[name].append((time.perf_counter() - started) / args.steps * 1e3)
    return {name: statistics.median(times) for name, times in per_step.items()}


def time_adam_calls(args, members) -> dict[str, float]:
    """Median ms of one Adam step over the members' parameters, its kernel calls cut four ways:
    once per member (what ``MemberAdam`` did before), ``MemberAdam.step`` itself with the members
    in the sweep's order and sorted by learning rate, and once over the stacked tensors."""
    generator = torch.Generator().manual_seed(0)
    model = build_fused(members)
    S, stacked = model.num_members, model.stacked_parameters()
    tensors = [[param.detach() for param, _ in stacked]]
    tensors += [[torch.randn(param.shape, generator=generator) * 1e-3 for param, _ in stacked]]  # gradients
    tensors += [[torch.zeros_like(param.detach()) for param, _ in stacked] for _ in range(2)]  # moments

    def kernel_calls(slices: list[tuple[int, int]]):
        """The kernel once per (first, stop) slice of the members, the argument lists cut once."""
        calls = []
        for first, stop in slices:
            arguments = [[t.view(S, *shape)[first:stop] for t, (_, shape) in zip(group, stacked)] for group in tensors]
            calls.append(partial(torch._fused_adam_, *arguments, [], [torch.ones(()) for _ in stacked], amsgrad=False, lr=1e-3,
                                 beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-7, maximize=False, grad_scale=None,
                                 found_inf=None))
        return lambda: [call() for call in calls]

    steps = {f"kernel, one call per member ({S} calls, {S * len(stacked)} tensors)": kernel_calls([(i, i + 1) for i in range(S)])}
    for order, ordered in (("in the sweep's order", members),
                           ("sorted by it (as the sweep stores them)", sorted(members, key=lambda member: member.lr))):
        fused = build_fused(ordered)
        for param, _ in fused.stacked_parameters():
            param.grad = torch.randn(param.shape, generator=generator) * 1e-3
        runs = 1 + sum(a.lr != b.lr for a, b in itertools.pairwise(ordered))
        calls = len({member.lr for member in ordered})
        steps[f"MemberAdam.step, members {order} ({calls} calls, {runs * len(stacked)} tensors)"] = MemberAdam.for_model(fused).step
    steps[f"kernel, one call over the stacked tensors: the floor (1 call, {len(stacked)} tensors)"] = kernel_calls([(0, S)])

    times = {name: [] for name in steps}
    for block in range(args.blocks + 1):
        for name, step in steps.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            if block:
                times[name].append((time.perf_counter() - started) / args.steps * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def time_epochs(args, datamodule, members) -> list[tuple[float, float]]:
    """(gradient seconds, Adam seconds) of each of ``args.per_epoch`` training epochs."""
    model = build_fused(sorted(members, key=lambda member: member.lr), datamodule.train_images)
    optimizer = MemberAdam.for_model(model)
    epochs = []
    for _ in range(args.per_epoch):
        gradients = adam = 0.0
        for images, labels in datamodule.train_dataloader():
            started = time.perf_counter()
            model.explicit_train(images, labels)
            middle = time.perf_counter()
            optimizer.step()
            gradients, adam = gradients + middle - started, adam + time.perf_counter() - middle
        model.epoch_metrics("train")  # start the sums again
        epochs.append((gradients, adam))
        print(f"| {len(epochs)} | {gradients:.2f} | {adam:.2f} |", flush=True)
    return epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per setting (default 5: 30 members)")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block (default 50)")
    parser.add_argument("--blocks", type=int, default=6, help="timed blocks per way, after one warm-up block (default 6)")
    parser.add_argument("--limit-rows", type=int, default=None, help="first N rows of each CSV only (default all)")
    parser.add_argument("--per-epoch", type=int, default=0, metavar="N",
                        help="instead: N whole training epochs, gradient and Adam seconds per epoch")
    args = parser.parse_args()
    if args.seeds < 1 or args.steps < 1 or args.blocks < 1 or args.per_epoch < 0:
        parser.error("--seeds, --steps and --blocks must be at least 1, --per-epoch at least 0")
    members = member_specs(ACTS, LRS, range(22, 22 + args.seeds))  # the sweep's order: activation, learning rate, seed
    with flush_denormals(True):
        datamodule = SignMNISTDataModule(limit_rows=args.limit_rows)
        datamodule.prepare_data()
        datamodule.setup("fit")
        if args.per_epoch:
            print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(members)} members\n")
            print("| epoch | gradients s | Adam s |")
            print("|---|---|---|")
            epochs = time_epochs(args, datamodule, members)
            if len(epochs) > 2:
                r = statistics.correlation(*zip(*epochs))
                print(f"\ngradients {min(g for g, _ in epochs):.2f}-{max(g for g, _ in epochs):.2f} s, "
                      f"Adam {min(a for _, a in epochs):.2f}-{max(a for _, a in epochs):.2f} s, Pearson's r {r:.2f}")
            return
        steps = time_training_steps(args, datamodule, members)
        adam = time_adam_calls(args, members)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(members)} members, "
          f"median of {args.blocks} blocks of {args.steps} steps\n")
    print("| piece | ms per step | ratio |")
    print("|---|---|---|")
    for group in (steps, adam):
        baseline = next(iter(group.values()))
        for name, ms in group.items():
            label = f"training step, gradients by {'explicit_train' if name == 'explicit' else name}" if group is steps else f"Adam: {name}"
            print(f"| {label} | {ms:.2f} | {ms / baseline:.2f}x |")


if __name__ == "__main__":
    main()
