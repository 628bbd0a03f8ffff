"""Train the study's MLP with Lightning on ``--devices`` CPU processes and record, per rank, what it saw.

Run by tests/test_ddp.py as a script of its own (``strategy="ddp"`` starts the other ranks by
running this file again, as it does for scripts/train_mlp.py):

    python tests/ddp_probe.py DATA_DIR OUT_DIR --devices 2 [--accelerator cpu|gpu] [--epochs 2] [--batch-size 10]

Writes ``OUT_DIR/rank<r>.json`` per rank: the training rows of every epoch in the order they
came (identified by their pixels), the validation rows, the optimizer steps taken, the logged
validation loss and accuracy, the same two computed here on all validation rows, and the
device the DataModule's tensors were on when training started.

    python tests/ddp_probe.py DATA_DIR OUT_DIR --devices 2 --train-mlp LOGDIR

instead runs ``train_mlp`` (one epoch, no pictures) into LOGDIR and writes per rank the run
name and folder its results name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--train-mlp", metavar="LOGDIR", help="instead: train_mlp into LOGDIR; record each rank's run")
    args = parser.parse_args()
    if args.train_mlp:
        return train_mlp_ranks(args)

    import lightning as L
    import torch
    from torch.nn import functional as F

    from datamodules import SignMNISTDataModule
    from lightning_modules import MLPClassifier

    def key(row: torch.Tensor) -> bytes:
        return row.to("cpu", torch.uint8).numpy().tobytes()

    class Recorder(L.Callback):
        def __init__(self, datamodule) -> None:
            arrays = datamodule.arrays
            self.train_index = {row.tobytes(): i for i, row in enumerate(arrays.train_images)}
            self.val_index = {row.tobytes(): i for i, row in enumerate(arrays.val_images)}
            self.duplicates = len(self.train_index) != len(arrays.train_images) or len(self.val_index) != len(arrays.val_images)
            self.train_rows: dict[int, list[int]] = {}
            self.val_rows: dict[int, list[int]] = {}
            self.tensor_device = self.root_device = None

        def on_train_start(self, trainer, pl_module) -> None:
            # Where the DataModule put its training tensors, before the first step.
            self.tensor_device = str(trainer.train_dataloader.images.device)
            self.root_device = str(trainer.strategy.root_device)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            rows = self.train_rows.setdefault(trainer.current_epoch, [])
            rows.extend(self.train_index[key(image)] for image in batch[0])

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
            rows = self.val_rows.setdefault(trainer.current_epoch, [])
            rows.extend(self.val_index[key(image)] for image in batch[0])

    L.seed_everything(22, verbose=False)
    datamodule = SignMNISTDataModule(args.data_dir, batch_size=args.batch_size, seed=22)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = MLPClassifier(lr=1e-3, act="relu", num_classes=datamodule.num_classes).adapt(datamodule.train_images)
    recorder = Recorder(datamodule)
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.epochs, logger=False, callbacks=[recorder], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule)

    # The final model on every validation row, here, without any help from the strategy.
    model.eval()
    with torch.no_grad():
        images = torch.from_numpy(datamodule.arrays.val_images).float()
        labels = torch.from_numpy(datamodule.arrays.val_labels).long()
        logits = model.cpu()(images)
        full_loss = float(F.cross_entropy(logits, labels))
        full_acc = float((logits.argmax(dim=1) == labels).float().mean())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps({
        "world_size": trainer.world_size,
        "train_rows": {str(epoch): rows for epoch, rows in recorder.train_rows.items()},
        "val_rows": {str(epoch): rows for epoch, rows in recorder.val_rows.items()},
        "n_train": len(datamodule.arrays.train_labels),
        "n_val": len(datamodule.arrays.val_labels),
        "duplicates": recorder.duplicates,
        "optimizer_steps": trainer.global_step,
        "logged_val_loss": float(trainer.callback_metrics["val/loss"]),
        "logged_val_acc": float(trainer.callback_metrics["val/acc"]),
        "full_val_loss": full_loss,
        "full_val_acc": full_acc,
        "tensor_device": recorder.tensor_device,
        "root_device": recorder.root_device,
    }))


def train_mlp_ranks(args) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    from lightning_modules.training import TrainConfig, train_mlp

    results = train_mlp(TrainConfig(epochs=1, batch_size=args.batch_size, data_dir=args.data_dir, logdir=args.train_mlp,
                                    accelerator=args.accelerator, devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                                    echo=False, pictures=False))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"rank{rank_zero_only.rank}.json").write_text(json.dumps({
        "world_size": results["world_size"], "run": results["run"], "log_dir": results["log_dir"],
    }))


if __name__ == "__main__":
    main()
