"""FusedMLPs: each member trains exactly as a solo MLPClassifier would, step by step."""

from __future__ import annotations

import csv as csvlib
import dataclasses
import math

import pytest
import torch
from conftest import requires_cuda
from lightning.pytorch.loggers import CSVLogger
from torch.nn import functional as F

from datamodules.synthetic import synthetic_arrays
from lightning_modules import MLPClassifier, make_optimizer
from lightning_modules.fused import FusedMLPs, MemberAdam, MemberSpec, build_fused, member_specs, train_fused
from lightning_modules.training import TrainConfig, train_mlp

pytestmark = pytest.mark.usefixtures("single_thread")

# Mixed activations, learning rates 30x apart, two members sharing a seed.
MEMBERS = [
    MemberSpec("relu", 1e-3, seed=1),
    MemberSpec("linear", 1e-3, seed=2),
    MemberSpec("relu", 1e-4, seed=3),
    MemberSpec("linear", 3e-3, seed=1),
]
# float32 rounding. After 20 steps on one thread (the fixture), autograd's fused weights differ from
# the solo ones by at most ~3% of this tolerance (and by as little on 2 and 3 threads, solo and
# fused alike); explicit_train's did not differ at all here (each member's products are GEMMs of
# its own, like a one-thread solo run's). A 0.1% change of one member's learning rate exceeds it
# 90-fold (see the perturbation test). A solo run on 2 threads splits its products and rounds
# otherwise: Adam, which divides each gradient by its own size, makes that up to 7x this tolerance
# where a gradient nearly cancels, so the comparison is made on one thread.
WEIGHT_TOL = {"rtol": 1e-5, "atol": 1e-6}
LOSS_TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def data():
    images, labels = synthetic_arrays(300, seed=4)
    return images, torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long)


def _batches(x, y, steps=20, size=32):
    """``steps`` batches in a fixed shuffled order, the last of each pass a short one."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    starts = list(range(0, len(y), size))
    for step in range(steps):
        index = order[starts[step % len(starts)] : starts[step % len(starts)] + size]
        yield x[index], y[index]


def _solo_model(spec: MemberSpec, images, dtype=torch.float32) -> MLPClassifier:
    torch.manual_seed(spec.seed)  # as train_mlp's L.seed_everything(seed) before building the model
    return MLPClassifier(lr=spec.lr, act=spec.act).adapt(images).to(dtype)


def _train_both(members, images, x, y, solo_lrs=None, dtype=torch.float32, device="cpu", way="autograd"):
    """Train fused and solo models on the same batches; per-step losses [steps, S] and weights.

    ``way``: the fused model's gradients from autograd, or from ``explicit_train`` (the CPU's
    training step for ReLU and linear members)."""
    fused = build_fused(members, images).to(device=device, dtype=dtype)
    optimizer = MemberAdam.for_model(fused)
    solos = [_solo_model(spec, images, dtype).to(device) for spec in members]
    solo_optimizers = [make_optimizer(m.parameters(), lr) for m, lr in zip(solos, solo_lrs or [s.lr for s in members])]
    fused_losses, solo_losses = [], []
    for xb, yb in _batches(x, y):
        xb, yb = xb.to(device=device, dtype=dtype), yb.to(device)
        if way == "explicit":
            losses = fused.explicit_train(xb, yb)
        else:
            losses = fused.member_losses(fused(xb), yb)
            optimizer.zero_grad()
            losses.sum().backward()
        optimizer.step()
        fused_losses.append(losses.detach())
        row = []
        for model, solo_optimizer in zip(solos, solo_optimizers):
            loss = F.cross_entropy(model(xb), yb)
            solo_optimizer.zero_grad()
            loss.backward()
            solo_optimizer.step()
            row.append(loss.detach())
        solo_losses.append(torch.stack(row))
    return fused, solos, torch.stack(fused_losses), torch.stack(solo_losses)


def _member_matches(fused, solo, index, tol) -> bool:
    ours, theirs = fused.member_state_dict(index), solo.state_dict()
    return all(torch.allclose(ours[key], theirs[key], **tol) for key in theirs)


# --- construction ------------------------------------------------------------------------------


def test_initial_weights_are_the_solo_models_and_leave_the_random_state_alone(data):
    images = data[0]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    fused = build_fused(MEMBERS, images)
    assert torch.equal(torch.rand(3), expected_next)  # building drew nothing from the caller's generator
    for index, spec in enumerate(MEMBERS):
        solo = _solo_model(spec, images).state_dict()
        ours = fused.member_state_dict(index)
        assert ours.keys() == solo.keys()
        for key in solo:
            assert torch.equal(ours[key], solo[key]), key  # copies: bit-identical
    # two members with one seed start alike; other seeds differ
    assert torch.equal(fused.member_state_dict(0)["layers.0.weight"], fused.member_state_dict(3)["layers.0.weight"])
    assert not torch.equal(fused.member_state_dict(0)["layers.0.weight"], fused.member_state_dict(1)["layers.0.weight"])


def test_forward_is_each_members_forward(data):
    images, x, _ = data
    fused = build_fused(MEMBERS, images)
    with torch.no_grad():
        fused.weight1.add_(0.01 * torch.randn_like(fused.weight1))  # members differ after training
        logits = fused(x[:40])
        assert logits.shape == (len(MEMBERS), 40, 25)
        for index in range(len(MEMBERS)):
            torch.testing.assert_close(logits[index], fused.member_classifier(index)(x[:40]), rtol=1e-5, atol=1e-5)


def test_member_round_trip_through_an_mlp_classifier(data):
    images = data[0]
    fused = build_fused(MEMBERS, images)
    solo = fused.member_classifier(2)
    assert solo.hparams.act == "relu" and solo.hparams.lr == 1e-4
    with torch.no_grad():
        for parameter in solo.parameters():
            parameter.mul_(2)
    fused.load_member(1, solo.state_dict())
    for key, value in fused.member_state_dict(1).items():
        assert torch.equal(value, solo.state_dict()[key])
    assert torch.equal(fused.member_state_dict(2)["layers.0.weight"] * 2, fused.member_state_dict(1)["layers.0.weight"])


def test_bad_members():
    with pytest.raises(ValueError, match="at least one"):
        FusedMLPs([])
    with pytest.raises(ValueError, match="unknown activation"):
        FusedMLPs([MemberSpec("swish2", 1e-3)])
    with pytest.raises(ValueError, match="positive"):
        FusedMLPs([MemberSpec("relu", 0.0)])
    with pytest.raises(ValueError, match="must differ"):
        FusedMLPs([MemberSpec("relu", 1e-3, 1), {"act": "relu", "lr": 1e-3, "seed": 1}])
    assert [m.name for m in member_specs(["relu"], [1e-5, 1.5e-5], [7])] == ["relu_lr1e-05_seed7", "relu_lr1.5e-05_seed7"]


# --- exactness ---------------------------------------------------------------------------------


WAYS = pytest.mark.parametrize("way", ["autograd", "explicit"])


@WAYS
def test_training_matches_solo_models_step_by_step(data, way):
    images, x, y = data
    fused, solos, fused_losses, solo_losses = _train_both(MEMBERS, images, x, y, way=way)
    torch.testing.assert_close(fused_losses, solo_losses, **LOSS_TOL)
    assert (fused_losses[-1] < fused_losses[0]).all()  # all of them learned something
    for index, solo in enumerate(solos):
        assert _member_matches(fused, solo, index, WEIGHT_TOL), MEMBERS[index]


@WAYS
def test_the_tolerance_catches_a_learning_rate_off_by_a_thousandth(data, way):
    images, x, y = data
    # The solo run of member 2 (the slowest learner) uses a learning rate 0.1% off.
    solo_lrs = [spec.lr for spec in MEMBERS]
    solo_lrs[2] *= 1.001
    fused, solos, _, _ = _train_both(MEMBERS, images, x, y, solo_lrs=solo_lrs, way=way)
    assert not _member_matches(fused, solos[2], 2, WEIGHT_TOL)
    assert all(_member_matches(fused, solos[i], i, WEIGHT_TOL) for i in (0, 1, 3))


@WAYS
def test_training_matches_in_float64_to_1e_12(data, way):
    # Without float32's rounding the agreement is ~1e-17 (autograd) or ~1e-15 (explicit): the arithmetic is the same.
    images, x, y = data
    fused, solos, fused_losses, solo_losses = _train_both(MEMBERS[:2], images, x, y, dtype=torch.float64, way=way)
    torch.testing.assert_close(fused_losses, solo_losses, rtol=1e-12, atol=1e-12)
    for index, solo in enumerate(solos):
        assert _member_matches(fused, solo, index, {"rtol": 1e-12, "atol": 1e-12})


def test_optimizer_state_round_trips(data):
    images, x, y = data
    batches = list(_batches(x, y, steps=6))

    def run(model, optimizer, part):
        for xb, yb in part:
            optimizer.zero_grad()
            model.member_losses(model(xb), yb).sum().backward()
            optimizer.step()

    straight = build_fused(MEMBERS, images)
    straight_optimizer = MemberAdam.for_model(straight)
    run(straight, straight_optimizer, batches)

    first = build_fused(MEMBERS, images)
    first_optimizer = MemberAdam.for_model(first)
    run(first, first_optimizer, batches[:3])
    resumed = build_fused(MEMBERS, images)
    resumed.load_state_dict(first.state_dict())
    resumed_optimizer = MemberAdam.for_model(resumed)
    resumed_optimizer.load_state_dict(first_optimizer.state_dict())
    assert [g["lr"] for g in resumed_optimizer.param_groups] == [1e-3, 1e-4, 3e-3]  # one group per learning rate
    run(resumed, resumed_optimizer, batches[3:])
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_optimizer_refuses_stale_views_and_clipping(data):
    images, x, y = data
    fused = build_fused(MEMBERS[:2], images)
    optimizer = MemberAdam.for_model(fused)
    optimizer.step()  # no gradients yet: nothing happens
    assert not optimizer.state
    fused.to(torch.float64)  # new storage: the optimizer's views would update the old one
    fused.member_losses(fused(x[:8].double()), y[:8]).sum().backward()
    with pytest.raises(RuntimeError, match="moved"):
        optimizer.step()
    with pytest.raises(ValueError, match="clipping"):
        fused.configure_gradient_clipping(optimizer, gradient_clip_val=1.0)


def _train_through_closures(members, images, x, y, dtype=torch.float32, device="cpu", cuda_graphs=True, explicit_gradients=True):
    """Train a fused model as ``training_step`` does: ``optimizer.step(closure=train_closure(...))``."""
    fused = build_fused(members, images, cuda_graphs=cuda_graphs, explicit_gradients=explicit_gradients).to(device=device, dtype=dtype)
    optimizer = MemberAdam.for_model(fused)
    for xb, yb in _batches(x, y):
        optimizer.step(closure=fused.train_closure(xb.to(device=device, dtype=dtype), yb.to(device)))
    return fused


def _same_weights(first, second) -> bool:
    return all(torch.equal(a, b) for (a, _), (b, _) in zip(first.stacked_parameters(), second.stacked_parameters(), strict=True))


@pytest.mark.parametrize("explicit", [False, True], ids=["autograd", "explicit"])
def test_training_through_closures_is_the_plain_loop_and_counts_metrics(data, explicit):
    # On the CPU a closure takes explicit_train's step for ReLU and linear members, unless turned off.
    images, x, y = data
    plain, _, plain_losses, _ = _train_both(MEMBERS, images, x, y, way="explicit" if explicit else "autograd")
    fused = _train_through_closures(MEMBERS, images, x, y, explicit_gradients=explicit)
    assert _same_weights(fused, plain)  # the same operations
    loss, acc = fused.epoch_metrics("train")
    sizes = torch.tensor([len(yb) for _, yb in _batches(x, y)], dtype=torch.float64)
    torch.testing.assert_close(loss, (plain_losses.double() * sizes[:, None]).sum(0) / sizes.sum())
    assert ((0 <= acc) & (acc <= 1)).all() and fused.epoch_metrics("train") is None


def test_other_activations_train_through_autograd(data):
    images, x, y = data
    members = [MemberSpec("tanh", 1e-3, 1), MemberSpec("relu", 1e-3, 2)]
    plain = _train_both(members, images, x, y, way="autograd")[0]
    fused = _train_through_closures(members, images, x, y)
    assert not fused.piecewise_linear and _same_weights(fused, plain)
    with pytest.raises(ValueError, match="ReLU or linear"):
        fused.explicit_train(x[:4], y[:4])


@pytest.mark.parametrize("hidden", [(), (200, 50), (16, 8, 4)], ids=["no-hidden", "200-50", "16-8-4"])
def test_explicit_gradients_are_autograds(data, hidden):
    # float64, so that the only difference, the rounding, is far below the tolerance.
    images, x, y = data
    members = [MemberSpec("relu", 1e-3, 1), MemberSpec("linear", 1e-4, 2), MemberSpec("relu", 1e-2, 3)]
    explicit, auto = (build_fused(members, images, hidden=hidden).double() for _ in range(2))
    for rows in (slice(0, 32), slice(32, 33)):  # a full batch, and a batch of one
        xb, yb = x[rows].double(), y[rows]
        losses = explicit.explicit_train(xb, yb)
        auto.zero_stacked_grads()
        expected = auto._forward_losses(xb, yb, "train")
        expected.sum().backward()
        torch.testing.assert_close(losses, expected.detach(), rtol=1e-12, atol=1e-12)
        for (ours, _), (theirs, _) in zip(explicit.stacked_parameters(), auto.stacked_parameters(), strict=True):
            assert ours.grad.abs().max() > 0
            torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=1e-14)
    for ours, theirs in zip(explicit.epoch_metrics("train"), auto.epoch_metrics("train"), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_optimizer_groups_are_learning_rates_over_slices_of_the_stacked_parameters(data):
    images, x, y = data
    members = [MemberSpec("relu", 1e-3, 1), MemberSpec("linear", 1e-4, 2), MemberSpec("linear", 1e-3, 3), MemberSpec("relu", 1e-3, 4)]
    fused = build_fused(members, images)
    optimizer = MemberAdam.for_model(fused)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 1e-4]
    stacked = fused.stacked_parameters()
    # Rate 1e-3 in two runs (members 0 and 2-3): a slice of every stacked parameter for each run.
    runs = {1e-3: [(0, 1), (2, 4)], 1e-4: [(1, 2)]}
    optimizer.step(closure=fused.train_closure(x[:8], y[:8]))
    for group in optimizer.param_groups:
        cuts = [(param, shape, first, stop) for first, stop in runs[group["lr"]] for param, shape in stacked]
        assert len(group["params"]) == len(cuts)
        for view, (param, shape, first, stop) in zip(group["params"], cuts, strict=True):
            part = param.detach().view(len(members), *shape)[first:stop]
            assert view.data_ptr() == part.data_ptr() and view.shape == part.shape  # the parameter itself, no copy
            assert torch.equal(view.grad, param.grad.view(len(members), *shape)[first:stop])
            assert optimizer.state[view]["step"].item() == 1
    optimizer.zero_grad()
    assert all(param.grad is None for param, _ in stacked)
    assert all(view.grad is None for group in optimizer.param_groups for view in group["params"])


def test_optimizer_refuses_a_state_for_another_layout(data):
    images, x, y = data

    def trained_state(members):
        fused = build_fused(members, images)
        optimizer = MemberAdam.for_model(fused)
        optimizer.step(closure=fused.train_closure(x[:8], y[:8]))
        return optimizer.state_dict()

    # Two learning rates in both, but one member sits elsewhere: the moments' shapes differ.
    saved = trained_state([MemberSpec("relu", 1e-3, 1), MemberSpec("relu", 1e-3, 2), MemberSpec("relu", 1e-4, 3)])
    other = MemberAdam.for_model(build_fused([MemberSpec("relu", 1e-3, 1), MemberSpec("relu", 1e-4, 2), MemberSpec("relu", 1e-4, 3)]))
    with pytest.raises(ValueError, match="laid out otherwise"):
        other.load_state_dict(saved)
    assert not other.state  # refused before loading anything
    fewer = MemberAdam.for_model(build_fused([MemberSpec("relu", 1e-3, 1)]))
    with pytest.raises(ValueError):  # torch.optim's own check: another number of groups
        fewer.load_state_dict(saved)


def test_members_of_one_learning_rate_apart_train_as_alone(data):
    # Learning rate 1e-3 in two runs (members 0 and 2-3): one Adam call with a slice of each.
    images, x, y = data
    members = [MemberSpec("relu", 1e-3, 1), MemberSpec("linear", 1e-4, 2), MemberSpec("linear", 1e-3, 3), MemberSpec("relu", 1e-3, 4)]
    fused, solos, fused_losses, solo_losses = _train_both(members, images, x, y, dtype=torch.float64, way="explicit")
    torch.testing.assert_close(fused_losses, solo_losses, rtol=1e-12, atol=1e-12)
    for index, solo in enumerate(solos):
        assert _member_matches(fused, solo, index, {"rtol": 1e-12, "atol": 1e-12}), members[index]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["eager", "graph"])
def test_training_matches_solo_models_on_cuda(data, cuda_graphs):
    # float64, where the two ways agree to ~1e-14 (measured on an H200): the arithmetic is the
    # same. In float32 the different summation orders of the fused and solo products leave the
    # weights up to ~1e-3 apart (relative) after 20 Adam steps on that card, too close to a real
    # error (a 0.1% learning-rate change) for a check; the step-by-step float32 check is the CPU's.
    images, x, y = data
    fused = _train_through_closures(MEMBERS, images, x, y, dtype=torch.float64, device="cuda", cuda_graphs=cuda_graphs)
    assert (fused.cuda_graph is not None) == cuda_graphs  # recorded, and kept across the short last batch
    _, solos, _, _ = _train_both(MEMBERS, images, x, y, dtype=torch.float64, device="cuda")
    for index, solo in enumerate(solos):
        assert _member_matches(fused, solo, index, {"rtol": 1e-12, "atol": 1e-12}), MEMBERS[index]
    loss, acc = fused.epoch_metrics("train")
    assert loss.device.type == "cuda" and ((0 <= acc) & (acc <= 1)).all()


# --- through Lightning -------------------------------------------------------------------------


def test_fit_through_lightning_reports_each_member_as_train_mlp_does(synthetic_data_dir, tmp_path):
    # Seed 22 for the member and the data: the fused relu member is train_mlp's run, exactly.
    members = [MemberSpec("relu", 1e-4, 22), MemberSpec("linear", 1e-3, 5), MemberSpec("relu", 1e-9, 22)]
    csv = CSVLogger(tmp_path, name="fused")
    fused = train_fused(members, TrainConfig(data_dir=str(synthetic_data_dir), epochs=2, accelerator="cpu", seed=22), logger=csv)
    solo = train_mlp(TrainConfig(lr=1e-4, act="relu", epochs=2, seed=22, data_dir=str(synthetic_data_dir),
                                 logdir=str(tmp_path / "runs"), accelerator="cpu", echo=False))

    results = fused["members"]
    assert [r["name"] for r in results] == [m.name for m in members]
    assert fused["seconds_per_epoch"] > 0 and len(fused["train_seconds"]) == 2
    for result in results:
        assert [row["epoch"] for row in result["history"]] == [1, 2]
        assert all(row.keys() == {"epoch", "train/loss", "train/acc", "val/loss", "val/acc"} for row in result["history"])
        assert result["test_loss"] is not None and 0 <= result["test_acc"] <= 1
        assert result["best_val_acc"] == max(row["val/acc"] for row in result["history"])
    # The tiny learning rate barely moves; the others learn the synthetic letters.
    assert results[1]["history"][-1]["train/loss"] < results[2]["history"][-1]["train/loss"]

    ours = results[0]
    n_val, n_test = solo["rows"]["val"], solo["rows"]["test"]
    for row, solo_row in zip(ours["history"], solo["history"], strict=True):
        assert row["epoch"] == solo_row["epoch"]
        for key in ("train/loss", "val/loss"):
            assert row[key] == pytest.approx(solo_row[key], rel=1e-5, abs=1e-6), key
        # one prediction may flip on a near-tie between two logits
        assert row["val/acc"] == pytest.approx(solo_row["val/acc"], abs=1.01 / n_val)
        assert row["train/acc"] == pytest.approx(solo_row["train/acc"], abs=1.01 / solo["rows"]["train"])
    assert ours["test_loss"] == pytest.approx(solo["test_loss"], rel=1e-5, abs=1e-6)
    assert ours["test_acc"] == pytest.approx(solo["test_acc"], abs=1.01 / n_test)
    assert ours["best_epoch"] in (1, 2)
    # Several batches per Lightning step (the default), one optimizer step each: Lightning's step
    # count, the x-axis of every logged scalar, is train_mlp's.
    assert len(fused["datamodule"].train_dataloader()) < math.ceil(solo["rows"]["train"] / 32)
    assert fused["model"].trainer.global_step == 2 * math.ceil(solo["rows"]["train"] / 32)

    # Logged per member, once per epoch (two epochs: two values of each training metric).
    csv.finalize("success")
    with open(csv.experiment.metrics_file_path) as file:
        logged = list(csvlib.DictReader(file))
    for member in members:
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert sum(1 for row in logged if row.get(f"{member.name}/{key}")) == 2, (member.name, key)
    # At train_mlp's steps (counting batches, not Lightning's steps of several), with the epoch:
    # Lightning logs a fit's epoch-end metrics one step before the batches so far, the test after them.
    batches = math.ceil(solo["rows"]["train"] / 32)
    for key in ("train/acc", "val/acc"):
        ends = [(int(row["step"]), int(float(row["epoch"]))) for row in logged if row.get(f"{members[0].name}/{key}")]
        assert ends == [(batches * epoch - 1, epoch - 1) for epoch in (1, 2)], key
    assert [int(row["step"]) for row in logged if row.get(f"{members[0].name}/test/acc")] == [2 * batches]
    assert fused["model"].member_classifier(0).state_dict().keys() == MLPClassifier().state_dict().keys()


def test_the_training_path_is_chosen_once_at_fit_start(synthetic_data_dir, monkeypatch):
    chosen = []
    select = FusedMLPs.select_training_path

    def counted(self):
        chosen.append(select(self))
        return chosen[-1]

    monkeypatch.setattr(FusedMLPs, "select_training_path", counted)
    relu_linear = [MemberSpec("relu", 1e-3, 1), MemberSpec("linear", 1e-3, 2)]
    with_tanh = [MemberSpec("tanh", 1e-3, 1), MemberSpec("relu", 1e-3, 2)]
    for members, explicit in ((relu_linear, True), (relu_linear, False), (with_tanh, True)):
        run = train_fused(members, TrainConfig(data_dir=str(synthetic_data_dir), epochs=2, accelerator="cpu"), test=False,
                          explicit_gradients=explicit)
        assert run["optimizer_steps"] > 2 * len(run["datamodule"].train_dataloader())  # several batches per Lightning step
    assert chosen == ["explicit", "autograd", "autograd"]  # once per fit, not per step


def test_mixed_precision_is_refused(synthetic_data_dir):
    import lightning as L

    from datamodules import SignMNISTDataModule

    datamodule = SignMNISTDataModule(synthetic_data_dir)
    datamodule.setup("fit")
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="mixed precision"):
        trainer.fit(build_fused(MEMBERS[:2], datamodule.train_images), datamodule)


def test_epoch_metrics_weight_batches_by_size():
    fused = FusedMLPs([MemberSpec("relu", 1e-3), MemberSpec("linear", 1e-3)])
    fused._record("val", torch.tensor([1.0, 2.0]), torch.tensor([[0, 1, 0], [0, 0, 0]]), torch.tensor([0, 1, 2]))
    fused._record("val", torch.tensor([5.0, 6.0]), torch.tensor([[3], [0]]), torch.tensor([3]))
    loss, acc = fused.epoch_metrics("val")
    torch.testing.assert_close(loss, torch.tensor([(3 * 1.0 + 5.0) / 4, (3 * 2.0 + 6.0) / 4], dtype=torch.float64))
    torch.testing.assert_close(acc, torch.tensor([3 / 4, 1 / 4], dtype=torch.float64))
    assert fused.epoch_metrics("val") is None  # consumed
    assert fused.epoch_metrics("test") is None  # nothing recorded


def test_member_spec_is_a_plain_record():
    spec = MemberSpec("linear", 1e-5, 3)
    assert dataclasses.asdict(spec) == {"act": "linear", "lr": 1e-5, "seed": 3}
    assert spec.name == "linear_lr1e-05_seed3"
