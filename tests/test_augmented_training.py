"""--augment end to end: only training batches change, and every run leaves its pictures in TensorBoard."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from conftest import REPO_ROOT

from datamodules import SignMNISTDataModule
from datamodules.augment import AugmentConfig

TRAIN = REPO_ROOT / "scripts" / "train_mlp.py"


def _served(batches) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*batches)
    return torch.cat(images), torch.cat(labels)


def test_validation_and_test_images_are_never_augmented(synthetic_data_dir):
    plain = SignMNISTDataModule(synthetic_data_dir, batch_size=16, seed=3)
    augmented = SignMNISTDataModule(synthetic_data_dir, batch_size=16, seed=3, augment=AugmentConfig(strength=1.0))
    for module in (plain, augmented):
        module.setup("fit")
    for loader in ("val_dataloader", "test_dataloader"):
        expected_images, expected_labels = _served(getattr(plain, loader)())
        images, labels = _served(getattr(augmented, loader)())
        torch.testing.assert_close(images, expected_images, rtol=0, atol=0)  # the same pixels, not close ones
        torch.testing.assert_close(labels, expected_labels, rtol=0, atol=0)
    part = augmented.arrays.val_images
    assert torch.equal(_served(augmented.val_dataloader())[0], torch.from_numpy(part).float())

    # The training batches do change: the same order and labels, other pixels.
    first_plain, first_aug = _served(plain.train_dataloader()), _served(augmented.train_dataloader())
    assert torch.equal(first_plain[1], first_aug[1])
    changed = (first_plain[0] - first_aug[0]).abs().amax(dim=1) > 1
    assert changed.float().mean() > 0.9


def test_a_strength_of_zero_is_no_augmentation(synthetic_data_dir):
    module = SignMNISTDataModule(synthetic_data_dir, batch_size=16, augment=AugmentConfig(strength=0.0))
    module.setup("fit")
    assert module.augment is None


def test_train_script_with_augment_writes_pictures_and_the_projector(synthetic_data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    done = subprocess.run(
        [sys.executable, str(TRAIN), "--augment", "0.5", "--epochs", "2", "--data-dir", str(synthetic_data_dir),
         "--logdir", str(tmp_path / "runs"), "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "runs" / "mlp" / "relu_lr1e-03_aug0.5"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["augment"] == 0.5 and results["augmentation"]["augment_strength"] == 0.5
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert {"test/confusion_matrix", "test/misclassified", "train/batch_images"} <= set(events.Tags()["images"])
    assert set(results["pictures"]) >= {"test/confusion_matrix", "train/batch_images", "hidden2"}
    config = (run_dir / "projector_config.pbtxt").read_text()
    for field in ("metadata_path", "sprite"):
        assert field in config
    folders = [path for path in run_dir.rglob("metadata.tsv")]
    assert folders and (folders[0].parent / "sprite.png").is_file()
    rows = folders[0].read_text().splitlines()
    assert len(rows) == 1 + 240  # a header and one row per test image
    hparams = events.PluginTagToContent("hparams")
    assert hparams
