"""The fused sweep's training, piece by piece, against an earlier revision of the code in the same run.

    python benchmarks/bench_fused_step.py [--seeds 5] [--steps 50] [--blocks 6] [--epochs 6]
                                          [--limit-rows N] [--baseline-rev REV] [--per-epoch N]

On the real training batches, with the 6 settings (relu, linear x 1e-3, 1e-5, 1e-9) x
``--seeds`` seeds as members (30 by default) sorted by learning rate as the sweep stores them,
on the CPU with denormals flushed, as ``train_fused`` trains:

1. training steps, ``optimizer.step(closure=model.train_closure(...))``, with the gradients
   written out (the CPU's default, ``explicit``) and from autograd (``explicit_gradients=False``);
2. Adam's step alone over the same parameters: ``MemberAdam.step``, and ``torch.optim.Adam.step``
   over the same param groups (what ``MemberAdam`` would cost calling ``Adam.step``);
3. ``--epochs``: whole training epochs through Lightning's ``Trainer``, as ``train_fused`` runs
   them (16 batches per Lightning step; validation skipped), each block one epoch.

``--baseline-rev REV`` (e.g. ``dc66ade``) adds the same rows for ``lightning_modules/fused.py``
and ``mlp_module.py`` as they were at that revision (``git show``), loaded into a temporary
package; the ratios are then against it. In every group the ways alternate in blocks (of
``--steps`` steps, or one epoch), so that a noisy neighbour slows all of them alike; the first
block of each way warms up and is not counted. Prints one table of medians per step (or per
epoch) and ratios.

``--per-epoch N`` instead trains the members for N whole epochs (explicit gradients and
``MemberAdam``, no Lightning) and prints, per epoch, the seconds spent computing gradients and
in Adam's step, and how closely the two move together (Pearson's r): Adam does the same work
on any numbers (denormals flushed), so if both slow down together, the machine slowed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch

from datamodules import SignMNISTDataModule
from lightning_modules.callbacks import EpochTimer
from lightning_modules.fused import BATCHES_PER_STEP, MemberAdam, build_fused, member_specs
from lightning_modules.training import flush_denormals

LRS = [1e-3, 1e-5, 1e-9]
ACTS = ["relu", "linear"]
REPO = Path(__file__).resolve().parent.parent


def load_baseline(rev: str, folder: Path) -> ModuleType:
    """``lightning_modules/fused.py`` at ``rev``, importable as ``baseline_fused.fused`` with
    ``mlp_module.py`` of the same revision beside it (other imports resolve to today's code)."""
    package = folder / "baseline_fused"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("fused.py", "mlp_module.py"):
        shown = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:lightning_modules/{name}"], capture_output=True, text=True)
        if shown.returncode != 0:
            raise SystemExit(f"bench_fused_step: cannot read lightning_modules/{name} at {rev}: {shown.stderr.strip()}")
        (package / name).write_text(shown.stdout.replace("from lightning_modules.mlp_module import", "from baseline_fused.mlp_module import"))
    sys.path.insert(0, str(folder))
    return importlib.import_module("baseline_fused.fused")


def codes(args, folder: Path) -> dict[str, SimpleNamespace]:
    """The code under test, ``new`` (this checkout) and, with ``--baseline-rev``, the baseline."""
    found = {"new": SimpleNamespace(build_fused=build_fused, MemberAdam=MemberAdam)}
    if args.baseline_rev:
        old = load_baseline(args.baseline_rev, folder)
        found[f"baseline {args.baseline_rev}"] = SimpleNamespace(build_fused=old.build_fused, MemberAdam=old.MemberAdam)
    return found


def alternate(ways: dict, blocks: int, run_block) -> dict[str, float]:
    """Median of ``run_block(way)`` per way over ``blocks`` blocks, the ways alternating (in
    reverse order every other block, so that none always follows the same one); one warm-up
    block first."""
    times = {name: [] for name in ways}
    for block in range(blocks + 1):
        for name in list(ways) if block % 2 else list(ways)[::-1]:
            value = run_block(name, ways[name], block)
            if block:
                times[name].append(value)
    return {name: statistics.median(values) for name, values in times.items()}


def time_training_steps(args, datamodule, members, found) -> list[tuple[str, float, str]]:
    """Median ms per training step of each way and code, against the baseline's (else explicit's)."""
    batches = list(datamodule.train_dataloader())
    ways, references = {}, {}
    for way, explicit in (("explicit", True), ("autograd", False)):
        for code, namespace in found.items():
            model = namespace.build_fused(members, datamodule.train_images, explicit_gradients=explicit)
            name = f"training step, {way} gradients, {code}"
            ways[name] = (model, namespace.MemberAdam.for_model(model))
            references[name] = f"training step, {way} gradients, {list(found)[-1]}" if len(found) > 1 else next(iter(ways))

    def block(name, way, number):
        model, optimizer = way
        chunk = [batches[(number * args.steps + i) % len(batches)] for i in range(args.steps)]
        started = time.perf_counter()
        for images, labels in chunk:
            optimizer.step(closure=model.train_closure(images, labels))
        return (time.perf_counter() - started) / args.steps * 1e3

    return rows(alternate(ways, args.blocks, block), references)


def time_adam_steps(args, members, found) -> list[tuple[str, float, str]]:
    """Median ms of one Adam step over the members' parameters, gradients fixed, against the
    baseline's ``MemberAdam.step`` (else today's)."""
    generator = torch.Generator().manual_seed(0)
    ways = {}
    for code, namespace in found.items():
        model = namespace.build_fused(members)
        for param, _ in model.stacked_parameters():
            param.grad = torch.randn(param.shape, generator=generator) * 1e-3
        ways[f"Adam: MemberAdam.step, {code}"] = namespace.MemberAdam.for_model(model).step
        if code == "new":
            plain = MemberAdam.for_model(model)
            plain.step()  # shares the gradients with the slices, which torch.optim.Adam.step reads
            ways["Adam: torch.optim.Adam.step over MemberAdam's groups, new"] = lambda plain=plain: torch.optim.Adam.step(plain)
    reference = f"Adam: MemberAdam.step, {list(found)[-1]}"

    def block(name, step, number):
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - started) / args.steps * 1e3

    return rows(alternate(ways, args.blocks, block), dict.fromkeys(ways, reference))


def time_lightning_epochs(args, members, found) -> list[tuple[str, float, str]]:
    """Median seconds per training epoch through Lightning's Trainer, as ``train_fused`` fits,
    against the baseline's."""
    import lightning as L

    datamodule = SignMNISTDataModule(limit_rows=args.limit_rows, batches_per_step=BATCHES_PER_STEP)
    datamodule.prepare_data()
    datamodule.setup("fit")
    ways = {f"Lightning epoch, {code}": namespace.build_fused(members, datamodule.train_images) for code, namespace in found.items()}

    def block(name, model, number):
        timer = EpochTimer()
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, callbacks=[timer], enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
        trainer.fit(model, datamodule)
        return timer.train_seconds[0]

    return rows(alternate(ways, args.epochs, block), dict.fromkeys(ways, f"Lightning epoch, {list(found)[-1]}"))


def rows(medians: dict[str, float], references: dict[str, str]) -> list[tuple[str, float, str]]:
    return [(name, value, references[name]) for name, value in medians.items()]


def time_epochs(args, datamodule, members) -> list[tuple[float, float]]:
    """(gradient seconds, Adam seconds) of each of ``args.per_epoch`` training epochs."""
    model = build_fused(members, datamodule.train_images)
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


def print_table(groups: list[tuple[str, list[tuple[str, float, str]]]]) -> None:
    print("| piece | median | ratio | ratio to |")
    print("|---|---|---|---|")
    for unit, group in groups:
        values = {name: value for name, value, _ in group}
        for name, value, reference in group:
            print(f"| {name} | {value:.3f} {unit} | {value / values[reference]:.3f}x | {reference} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per setting (default 5: 30 members)")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block (default 50)")
    parser.add_argument("--blocks", type=int, default=6, help="timed blocks per way, after one warm-up block (default 6)")
    parser.add_argument("--epochs", type=int, default=6, help="timed Lightning epochs per code, after one warm-up (default 6; 0: none)")
    parser.add_argument("--limit-rows", type=int, default=None, help="first N rows of each CSV only (default all)")
    parser.add_argument("--baseline-rev", metavar="REV", help="also time lightning_modules/fused.py as it was at this git revision")
    parser.add_argument("--per-epoch", type=int, default=0, metavar="N",
                        help="instead: N whole training epochs, gradient and Adam seconds per epoch")
    args = parser.parse_args()
    if args.seeds < 1 or args.steps < 1 or args.blocks < 1 or args.epochs < 0 or args.per_epoch < 0:
        parser.error("--seeds, --steps and --blocks must be at least 1, --epochs and --per-epoch at least 0")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-Trainer device banner
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    # The sweep's members, sorted by learning rate as the sweep stores them (one Adam call per rate);
    # as dicts, which every revision's FusedMLPs takes.
    members = [asdict(member) for member in sorted(member_specs(ACTS, LRS, range(22, 22 + args.seeds)), key=lambda member: member.lr)]
    with flush_denormals(True), tempfile.TemporaryDirectory() as folder:
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
        found = codes(args, Path(folder))
        groups = [("ms", time_training_steps(args, datamodule, members, found)), ("ms", time_adam_steps(args, members, found))]
        if args.epochs:
            groups.append(("s", time_lightning_epochs(args, members, found)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(members)} members, median of {args.blocks} blocks "
          f"of {args.steps} steps{f' and of {args.epochs} epochs' if args.epochs else ''}\n")
    print_table(groups)


if __name__ == "__main__":
    main()
