"""The DataModule's batches, the MLP, and short training runs."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from datamodules import DataError, GroupedBatches, InMemoryBatches, SignMNISTDataModule
from lightning_modules import ACTIVATIONS, HistoryLogger, MLPClassifier, parameter_report
from lightning_modules.training import TrainConfig, run_name, train_mlp


def _datamodule(data_dir, **kwargs):
    datamodule = SignMNISTDataModule(data_dir, **kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


# --- batches -----------------------------------------------------------------------------------


def test_batches_cover_each_row_once_and_reshuffle_per_epoch():
    images = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 784)
    labels = torch.arange(100)
    batches = InMemoryBatches(images, labels, batch_size=32, shuffle=True, seed=5)
    assert len(batches) == 4
    first = torch.cat([y for _, y in batches])
    second = torch.cat([y for _, y in batches])
    assert sorted(first.tolist()) == list(range(100)) == sorted(second.tolist())
    assert not torch.equal(first, second)
    # the image rows travel with their labels
    x, y = next(iter(InMemoryBatches(images, labels, 10, shuffle=True, seed=5)))
    assert torch.equal(x[:, 0], y.float())
    # same seed, same order
    again = InMemoryBatches(images, labels, batch_size=32, shuffle=True, seed=5)
    assert torch.equal(torch.cat([y for _, y in again]), first)


def test_distributed_shards_are_disjoint():
    labels = torch.arange(103)
    images = torch.zeros(103, 784)
    train = [InMemoryBatches(images, labels, 8, shuffle=True, seed=1, rank=r, world_size=2, equal_shards=True) for r in (0, 1)]
    seen = [torch.cat([y for _, y in shard]) for shard in train]
    assert len(seen[0]) == len(seen[1]) == 51 and len(train[0]) == len(train[1])
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    evaluation = [InMemoryBatches(images, labels, 8, shuffle=False, rank=r, world_size=2) for r in (0, 1)]
    together = torch.cat([torch.cat([y for _, y in shard]) for shard in evaluation])
    assert sorted(together.tolist()) == list(range(103))  # every evaluation row exactly once


def test_grouped_batches_serve_the_same_batches_in_lists(synthetic_data_dir):
    images, labels = torch.zeros(100, 784), torch.arange(100)
    grouped = GroupedBatches(InMemoryBatches(images, labels, 8, shuffle=True, seed=2), 5)
    groups = list(grouped)
    assert len(grouped) == len(groups) == 3 and [len(group) for group in groups] == [5, 5, 3]  # 13 batches
    plain = [y for _, y in InMemoryBatches(images, labels, 8, shuffle=True, seed=2)]
    assert all(torch.equal(a, b) for a, b in zip([y for group in groups for _, y in group], plain, strict=True))
    datamodule = SignMNISTDataModule(synthetic_data_dir, batch_size=16, batches_per_step=4)
    datamodule.setup("fit")
    assert len(datamodule.train_dataloader()) == int(np.ceil(np.ceil(len(datamodule.arrays.train_labels) / 16) / 4))
    with pytest.raises(DataError, match="batches per step"):
        SignMNISTDataModule(synthetic_data_dir, batches_per_step=0)


def test_datamodule_serves_float_images_and_letters(synthetic_data_dir):
    datamodule = _datamodule(synthetic_data_dir, batch_size=16)
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (16, 784) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and int(labels.max()) < datamodule.num_classes == 25
    assert images.max() > 1  # raw 0-255 pixel values: the model normalises them
    assert datamodule.letters[0] == "A" and datamodule.letters[24] == "Y"
    assert len(datamodule.train_dataloader()) == int(np.ceil(len(datamodule.arrays.train_labels) / 16))
    # Evaluation goes in larger batches (it changes no number, only the per-batch overhead).
    assert len(datamodule.val_dataloader()) == int(np.ceil(len(datamodule.arrays.val_labels) / 1024))


def test_evaluation_batch_size_changes_no_test_number(synthetic_data_dir):
    results = []
    for eval_batch_size in (7, 1024):
        L.seed_everything(0, verbose=False)
        datamodule = SignMNISTDataModule(synthetic_data_dir, batch_size=16, eval_batch_size=eval_batch_size)
        datamodule.setup("fit")
        model = MLPClassifier().adapt(datamodule.train_images)
        trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu")
        trainer.fit(model, datamodule)
        results.append(trainer.test(model, datamodule, verbose=False)[0])
    assert results[0]["test/acc"] == results[1]["test/acc"]
    assert results[0]["test/loss"] == pytest.approx(results[1]["test/loss"], rel=1e-5)


def test_label_beyond_the_outputs_is_a_clear_error(tmp_path):
    from datamodules.synthetic import csv_text, synthetic_arrays

    images, labels = synthetic_arrays(300, seed=1, labels=list(range(26)))
    (tmp_path / "sign_mnist_train.csv").write_text(csv_text(images, labels))
    (tmp_path / "sign_mnist_test.csv").write_text(csv_text(images[:50], labels[:50]))
    with pytest.raises(DataError, match=r"labels reach 25 \(Z\).*25 outputs"):
        _datamodule(tmp_path)


def test_bad_batch_size():
    with pytest.raises(DataError):
        SignMNISTDataModule(batch_size=0)


# --- model -------------------------------------------------------------------------------------


def test_parameter_counts_match_the_reference():
    assert parameter_report(MLPClassifier()) == {"total": 169894, "trainable": 168325, "non_trainable": 1569, "bias": 275}


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_forward_shapes_for_every_activation(act):
    model = MLPClassifier(act=act)
    assert model(torch.rand(7, 784) * 255).shape == (7, 25)


def test_linear_activation_makes_the_network_affine():
    model = MLPClassifier(act="linear").adapt(np.random.default_rng(0).integers(0, 256, (50, 784)))
    a, b = torch.rand(3, 784) * 255, torch.rand(3, 784) * 255
    with torch.no_grad():
        middle = model(0.5 * a + 0.5 * b)
        torch.testing.assert_close(middle, 0.5 * model(a) + 0.5 * model(b), atol=1e-4, rtol=1e-4)
        relu = MLPClassifier(act="relu").adapt(np.random.default_rng(0).integers(0, 256, (50, 784)))
        assert not torch.allclose(relu(0.5 * a + 0.5 * b), 0.5 * relu(a) + 0.5 * relu(b), atol=1e-3)


def test_normalization_matches_keras_adapt():
    data = np.random.default_rng(0).integers(0, 256, (40, 784)).astype(np.uint8)
    data[:, 0] = 7  # a constant pixel: variance 0 must not divide by zero
    model = MLPClassifier().adapt(data)
    out = model.normalization(torch.as_tensor(data, dtype=torch.float32))
    expected = (data - data.mean(0)) / np.maximum(data.std(0), 1e-7)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    assert int(model.normalization.count) == 40
    assert all(not b.requires_grad for b in model.normalization.buffers())


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown activation"):
        MLPClassifier(act="swish2")
    with pytest.raises(ValueError, match="positive"):
        MLPClassifier(lr=-1)


# --- training ----------------------------------------------------------------------------------


def _one_epoch_metrics(data_dir, seed):
    L.seed_everything(seed, verbose=False)
    datamodule = _datamodule(data_dir, seed=seed, limit_rows=1500)
    model = MLPClassifier(lr=1e-3).adapt(datamodule.train_images)
    history = HistoryLogger()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=history, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    first_batch = next(iter(datamodule.train_dataloader()))[1]
    trainer.fit(model, datamodule)
    return first_batch, history.history[0]


def test_same_seed_same_batches_and_metrics(real_data_dir):
    batch_a, metrics_a = _one_epoch_metrics(real_data_dir, seed=3)
    batch_b, metrics_b = _one_epoch_metrics(real_data_dir, seed=3)
    batch_c, metrics_c = _one_epoch_metrics(real_data_dir, seed=4)
    assert torch.equal(batch_a, batch_b) and metrics_a == metrics_b
    assert not torch.equal(batch_a, batch_c) and metrics_a != metrics_c
    assert set(metrics_a) == {"epoch", "train/loss", "train/acc", "val/loss", "val/acc"}


def test_training_learns_the_synthetic_classes(synthetic_data_dir, tmp_path):
    results = train_mlp(TrainConfig(lr=1e-3, act="relu", epochs=3, data_dir=str(synthetic_data_dir), logdir=str(tmp_path), echo=False))
    assert results["test_acc"] > 0.9  # 24 well-separated synthetic classes; chance is 1/24
    assert len(results["history"]) == 3
    assert results["history"][-1]["train/loss"] < results["history"][0]["train/loss"]


def test_run_names_and_fresh_folders(synthetic_data_dir, tmp_path):
    assert run_name("relu", 1e-5) == "relu_lr1e-05"
    # Settings that differ get folders that differ (a 1-digit format once gave 1.5e-3 and 2e-3 one name).
    names = {run_name("relu", lr) for lr in (1e-3, 1.5e-3, 2e-3, 1.25e-3, 0.00125000001)}
    assert len(names) == 5 and "relu_lr1.5e-03" in names
    assert run_name("relu", 1e-3, augment=1.0, seed=23) == "relu_lr1e-03_aug1_seed23"
    config = TrainConfig(lr=1e-5, act="linear", epochs=1, data_dir=str(synthetic_data_dir), logdir=str(tmp_path), echo=False)
    first, second = train_mlp(config), train_mlp(config)
    assert first["log_dir"].endswith("mlp/linear_lr1e-05")
    assert second["log_dir"].endswith("mlp/linear_lr1e-05_run2")  # an earlier run is never overwritten
    assert json.loads((tmp_path / "mlp" / "linear_lr1e-05" / "results.json").read_text())["run"] == "linear_lr1e-05"


def test_library_runs_give_lightnings_warnings_as_lightning_gives_them(synthetic_data_dir, tmp_path):
    """The library filters no warning (the scripts' entry point does, once): a library user running
    either path sees Lightning's note that 16 batches per epoch are fewer than its logging interval."""
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from lightning_modules.fused import member_specs, train_fused

    config = TrainConfig(epochs=1, data_dir=str(synthetic_data_dir), logdir=str(tmp_path), accelerator="cpu", echo=False,
                         pictures=False)
    with pytest.warns(PossibleUserWarning, match="smaller than the logging interval"):
        train_mlp(config)
    with pytest.warns(PossibleUserWarning, match="smaller than the logging interval"):
        train_fused(member_specs(["relu"], [1e-3]), config, logger=[HistoryLogger()], batches_per_step=1)


def test_flush_denormals_flushes_inside_nested_blocks_and_restores():
    from lightning_modules.training import flush_denormals

    tiny = torch.tensor([71362], dtype=torch.int32).view(torch.float32)  # 1e-40, a float32 denormal
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals (torch.set_flush_denormal returned False)")
    assert (tiny * 1.0).item() != 0.0
    with flush_denormals():
        with flush_denormals():
            assert (tiny * 1.0).item() == 0.0
        assert (tiny * 1.0).item() == 0.0  # the inner block left the outer one's setting alone
        with flush_denormals(enabled=False):
            pass
    assert (tiny * 1.0).item() != 0.0  # the default is back
