"""TensorBoard pictures: read back with TensorBoard's own event reader and projector config."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from datamodules.augment import BatchAugmenter
from lightning_modules import MLPClassifier
from lightning_modules.pictures import (
    TAG_CONFUSION,
    TAG_EMBEDDING,
    TAG_MISCLASSIFIED,
    TAG_TRAIN_IMAGES,
    HistogramLogger,
    predict_with_hidden,
    training_grid,
    write_pictures,
)


def _event_accumulator(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"images": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture
def tiny():
    """A small MLP, 120 test images of 6 letters (J=9 absent), 40 training images."""
    generator = torch.Generator().manual_seed(0)
    test_labels = torch.tensor([0, 1, 2, 8, 10, 24]).repeat(20)
    test_images = (torch.rand(120, 784, generator=generator) * 255).round().to(torch.uint8)
    train_images = (torch.rand(40, 784, generator=generator) * 255).numpy().astype(np.uint8)
    torch.manual_seed(0)
    model = MLPClassifier(hidden=(16, 8)).adapt(train_images)
    return SimpleNamespace(model=model, test_images=test_images, test_labels=test_labels, train_images=train_images)


def test_write_pictures_reads_back_in_tensorboard(tmp_path, tiny):
    writer = SummaryWriter(log_dir=str(tmp_path))
    try:
        tags = write_pictures(
            writer,
            tiny.model,
            tiny.test_images,
            tiny.test_labels,
            tiny.train_images,
            augment=lambda batch: BatchAugmenter()(batch, torch.Generator().manual_seed(0)),
            max_points=50,
        )
    finally:
        writer.close()
    assert tags == [TAG_CONFUSION, TAG_MISCLASSIFIED, TAG_TRAIN_IMAGES, TAG_EMBEDDING]

    images = _event_accumulator(tmp_path).Tags()["images"]
    assert {TAG_CONFUSION, TAG_MISCLASSIFIED, TAG_TRAIN_IMAGES} <= set(images)
    grid = _event_accumulator(tmp_path).Images(TAG_TRAIN_IMAGES)[0]
    assert (grid.width, grid.height) == (3 * (8 * 30 + 2), 3 * (5 * 30 + 2))  # 40 images, 8 a row, padding 2, zoom 3

    # The projector: its config names a tensor, metadata and sprite file that all exist.
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert f'tensor_name: "{TAG_EMBEDDING}:' in config
    for key in ("tensor_path", "metadata_path", "image_path"):
        match = re.search(rf'{key}: "([^"]+)"', config)
        assert match, f"{key} missing from the projector config:\n{config}"
        assert (tmp_path / match.group(1)).is_file()
    assert re.search(r"single_image_dim: 28", config)
    metadata_file = tmp_path / re.search(r'metadata_path: "([^"]+)"', config).group(1)
    lines = metadata_file.read_text().splitlines()
    assert lines[0].split("\t") == ["true", "predicted", "correct"]
    assert len(lines) == 1 + 50  # the header, then max_points rows
    assert {line.split("\t")[0] for line in lines[1:]} <= {"A", "B", "C", "I", "K", "Y"}
    tensor_file = tmp_path / re.search(r'tensor_path: "([^"]+)"', config).group(1)
    features = np.loadtxt(tensor_file, delimiter="\t")
    assert features.shape == (50, 8)  # the last hidden layer's width


def test_no_mistakes_means_no_misclassified_grid(tmp_path, tiny):
    _, hidden = predict_with_hidden(tiny.model, tiny.test_images.float())
    predicted = tiny.model.layers[-1](hidden).argmax(dim=1)
    writer = SummaryWriter(log_dir=str(tmp_path))
    try:
        tags = write_pictures(writer, tiny.model, tiny.test_images, predicted, tiny.train_images[:0])
    finally:
        writer.close()
    assert tags == [TAG_CONFUSION, TAG_EMBEDDING]


def test_hidden_features_are_the_second_hidden_layer(tiny):
    model = tiny.model
    images = tiny.test_images[:7].float()
    logits, hidden = predict_with_hidden(model, images, batch_size=3)
    with torch.no_grad():
        x = model.normalization(images)
        expected = model.layers[3](model.layers[2](model.layers[1](model.layers[0](x))))
        torch.testing.assert_close(hidden, expected)
        torch.testing.assert_close(logits, model(images))
    assert model.training  # the mode is put back


def test_training_grid_without_augmentation():
    images = torch.zeros(3, 784)
    images[1] = 255
    grid = training_grid(images, count=2, columns=2, zoom=1)
    assert grid.shape == (3, 32, 62)
    assert float(grid.min()) == 0 and float(grid.max()) == 1


def test_histogram_logger_writes_each_linear_layer(tmp_path, tiny):
    model = tiny.model
    x = tiny.test_images[:8].float()
    torch.nn.functional.cross_entropy(model(x), tiny.test_labels[:8]).backward()
    writer = SummaryWriter(log_dir=str(tmp_path))
    try:
        trainer = SimpleNamespace(is_global_zero=True, current_epoch=3, loggers=[], num_training_batches=5)
        logger = HistogramLogger(writer)
        logger.on_train_batch_end(trainer, model, None, None, batch_idx=3)  # not the last batch
        assert logger._written_epoch is None
        logger.on_train_batch_end(trainer, model, None, None, batch_idx=4)
        HistogramLogger().on_train_epoch_end(trainer, model)  # no TensorBoard logger: nothing
    finally:
        writer.close()
    histograms = _event_accumulator(tmp_path)
    layers = ("layers.0", "layers.2", "layers.4")
    assert set(histograms.Tags()["histograms"]) == {f"{kind}/{name}" for kind in ("weights", "gradients") for name in layers}
    assert [event.step for event in histograms.Histograms("gradients/layers.4")] == [3]


def test_histogram_logger_in_a_real_fit_has_gradients_despite_validation(tmp_path, tiny):
    # Lightning zeroes the gradients before validating, i.e. before on_train_epoch_end: the
    # gradients must be taken at the last training batch.
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from datamodules.sign_mnist_datamodule import InMemoryBatches

    images, labels = tiny.test_images.float(), tiny.test_labels
    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, logger=logger, callbacks=[HistogramLogger()],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    trainer.fit(
        tiny.model,
        train_dataloaders=InMemoryBatches(images, labels, batch_size=32, shuffle=True),
        val_dataloaders=InMemoryBatches(images[:40], labels[:40], batch_size=32, shuffle=False),
    )
    accumulator = _event_accumulator(Path(logger.log_dir))
    for kind in ("weights", "gradients"):
        for name in ("layers.0", "layers.2", "layers.4"):
            assert [event.step for event in accumulator.Histograms(f"{kind}/{name}")] == [0, 1]


def test_histogram_logger_finds_the_tensorboard_logger(tmp_path, tiny):
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=0, loggers=[logger], num_training_batches=float("inf"))
    HistogramLogger().on_train_epoch_end(trainer, tiny.model)  # no gradients yet: weights only
    logger.experiment.close()
    histograms = set(_event_accumulator(Path(logger.log_dir)).Tags()["histograms"])
    assert histograms == {"weights/layers.0", "weights/layers.2", "weights/layers.4"}
