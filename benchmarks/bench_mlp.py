"""Seconds per training epoch of the 200-50-25 MLP, several ways, in one process.

    python benchmarks/bench_mlp.py [--epochs 5] [--repeats 2] [--ways ...]

1. minimal: a hand-written PyTorch loop over in-memory tensors, no metrics (the floor);
2. naive Lightning: TensorDataset + DataLoader(shuffle=True) and per-step ``self.log``;
3. this project: SignMNISTDataModule + MLPClassifier, with its per-epoch metrics logged;
4. the same with Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` kept, which the training
   scripts drop at their entry point (``cli_kit.prefer_cuda_runtime_check``, as every other
   way here runs): ``torch.optim.Adam.step`` asks ``torch.cuda.is_available()`` every step;
5. and 6. a model that does no work, in a plain loop and in Lightning over the same batches:
   the fixed cost of each loop, which no model code can remove.

All ways train the same model (same initialisation, Adam, batch 32) on the 22,879 training
rows of the reference split; validation is excluded from the timings. Each way runs
``--epochs`` epochs per round, the rounds interleave the ways, and the table reports the
median epoch of each way and its ratio to the minimal loop.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import lightning as L
import torch
from epoch_rounds import interleaved, print_table
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from datamodules import SignMNISTDataModule
from lightning_modules import EpochTimer, MLPClassifier, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from cli_kit import NVML_CHECK_VARIABLE, prefer_cuda_runtime_check  # noqa: E402  (the scripts' entry-point setting)


def minimal_loop(datamodule, epochs: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = MLPClassifier().adapt(datamodule.train_images)
    optimizer = make_optimizer(model.parameters(), 1e-3)
    images = torch.from_numpy(datamodule.arrays.train_images).float()
    labels = torch.from_numpy(datamodule.arrays.train_labels).long()
    generator = torch.Generator().manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(labels), generator=generator)
        for begin in range(0, len(order), 32):
            index = order[begin : begin + 32]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


class NaiveLightningMLP(MLPClassifier):
    """What a first Lightning port looks like: a log call (and metric update) on every step."""

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_end(self):
        pass


def _trainer(epochs: int, timer: EpochTimer, progress_bar: bool) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress_bar,
        callbacks=[timer],
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


def naive_lightning(datamodule, epochs: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = NaiveLightningMLP().adapt(datamodule.train_images)
    dataset = TensorDataset(
        torch.from_numpy(datamodule.arrays.train_images).float(),
        torch.from_numpy(datamodule.arrays.train_labels).long(),
    )
    loader = DataLoader(dataset, batch_size=32, shuffle=True)
    timer = EpochTimer()
    _trainer(epochs, timer, progress_bar=True).fit(model, train_dataloaders=loader)
    return timer.train_seconds


def this_project(datamodule, epochs: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = MLPClassifier().adapt(datamodule.train_images)
    timer = EpochTimer()
    _trainer(epochs, timer, progress_bar=False).fit(model, datamodule=datamodule)
    return timer.train_seconds


def this_project_with_nvml_check(datamodule, epochs: int, seed: int) -> list[float]:
    """:func:`this_project` with the variable Lightning sets on import, as a library user has it."""
    os.environ[NVML_CHECK_VARIABLE] = "1"
    try:
        return this_project(datamodule, epochs, seed)
    finally:
        prefer_cuda_runtime_check()


class NoOpModule(L.LightningModule):
    """One scalar parameter and no computation: what is left is Lightning's own per-step cost."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return self.weight.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def noop_plain_loop(datamodule, epochs: int, seed: int) -> list[float]:
    model = NoOpModule()
    optimizer = model.configure_optimizers()
    batches = datamodule.train_dataloader()
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for images, labels in batches:
            loss = model.weight.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def noop_lightning(datamodule, epochs: int, seed: int) -> list[float]:
    timer = EpochTimer()
    _trainer(epochs, timer, progress_bar=False).fit(NoOpModule(), train_dataloaders=datamodule.train_dataloader())
    return timer.train_seconds


WAYS = {
    "minimal PyTorch loop": minimal_loop,
    "naive Lightning": naive_lightning,
    "this project": this_project,
    "this project, Lightning's NVML check kept": this_project_with_nvml_check,
    # The same batches with a model that does nothing: each way's fixed cost per epoch.
    "no-op model, plain loop": noop_plain_loop,
    "no-op model, Lightning": noop_lightning,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per way per round (default 5)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--limit-rows", type=int, default=None, help="first N rows of each CSV only (a smoke test; default all)")
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS), help="which ways to time (default all)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    prefer_cuda_runtime_check()  # as the training scripts do, after importing Lightning
    datamodule = SignMNISTDataModule(limit_rows=args.limit_rows)
    datamodule.setup("fit")
    print(f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
          f"{len(datamodule.arrays.train_labels)} training rows, batch 32", flush=True)
    ways = {name: partial(WAYS[name], datamodule, seed=args.seed) for name in WAYS if name in args.ways}  # way(epochs)
    seconds = interleaved(ways, args.epochs, args.repeats)
    print_table(seconds, reference="minimal PyTorch loop" if "minimal PyTorch loop" in seconds else next(iter(seconds)))


if __name__ == "__main__":
    main()
