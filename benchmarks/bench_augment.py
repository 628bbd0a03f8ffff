"""Cost of batched augmentation per epoch-equivalent, against a training epoch without it.

    python benchmarks/bench_augment.py [--epochs 2] [--repeats 2] [--device cpu] [--threads N]

One epoch-equivalent is the 22,879 training rows of the reference split in batches of 32
(715 batches). Three ways, interleaved over ``--repeats`` rounds of ``--epochs`` epochs each:

1. augmentation only: ``BatchAugmenter`` on every batch, no model;
2. training epoch: the minimal PyTorch loop of ``bench_mlp.py`` (MLPClassifier, fused Adam);
3. training epoch with augmentation: the same loop, each batch augmented first.

The table gives the median seconds per epoch and the ratio to the plain training epoch. The
first epoch of each way is a warm-up and not counted. Numbers on a shared machine are only
indicative; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import time

import torch
from epoch_rounds import interleaved, print_table
from torch.nn import functional as F

from datamodules import load_splits
from datamodules.augment import AugmentConfig, BatchAugmenter
from lightning_modules.mlp_module import MLPClassifier, make_optimizer

BATCH = 32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epochs(step, n_rows: int, epochs: int, seed: int, device: torch.device) -> list[float]:
    order_generator = torch.Generator().manual_seed(seed)
    augment_generator = torch.Generator().manual_seed(seed + 1)
    seconds = []
    for _ in range(epochs):
        _sync(device)
        start = time.perf_counter()
        order = torch.randperm(n_rows, generator=order_generator).to(device)
        for begin in range(0, n_rows, BATCH):
            step(order[begin : begin + BATCH], augment_generator)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def make_ways(images, labels, train_images_uint8, augmenter, seed):
    def augmentation_only(epochs):
        def step(index, generator):
            augmenter(images.index_select(0, index), generator)

        return _epochs(step, len(labels), epochs, seed, images.device)

    def training(augment: bool):
        def run(epochs):
            torch.manual_seed(seed)
            model = MLPClassifier().adapt(train_images_uint8).to(images.device)
            optimizer = make_optimizer(model.parameters(), 1e-3)

            def step(index, generator):
                batch = images.index_select(0, index)
                if augment:
                    batch = augmenter(batch, generator)
                loss = F.cross_entropy(model(batch), labels.index_select(0, index))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            return _epochs(step, len(labels), epochs, seed, images.device)

        return run

    return {
        "augmentation only": augmentation_only,
        "training epoch": training(False),
        "training epoch + augmentation": training(True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per way per round (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--strength", type=float, default=1.0, help="augmentation strength (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: the shipped CSVs)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    arrays = load_splits(args.data_dir)
    images = torch.from_numpy(arrays.train_images).float().to(device)
    labels = torch.from_numpy(arrays.train_labels).long().to(device)
    augmenter = BatchAugmenter(AugmentConfig(strength=args.strength))
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"{len(labels)} training rows, batch {BATCH}, {augmenter.config}", flush=True)
    ways = make_ways(images, labels, arrays.train_images, augmenter, args.seed)
    print_table(interleaved(ways, args.epochs, args.repeats), reference="training epoch")

if __name__ == "__main__":
    main()
