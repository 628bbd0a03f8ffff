"""End-to-end runs of scripts/train_mlp.py and scripts/sweep_mlp.py, their outputs and errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, load_script

TRAIN = REPO_ROOT / "scripts" / "train_mlp.py"
SWEEP = REPO_ROOT / "scripts" / "sweep_mlp.py"


def _run(script, *args, cwd):
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events


@pytest.mark.slow
def test_train_script_on_a_real_data_slice(real_data_dir, tmp_path):
    done = _run(TRAIN, "--lr", "1e-3", "--act", "relu", "--epochs", "2", "--limit-rows", "4000", "--data-dir", real_data_dir, "--logdir", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "runs" / "mlp" / "relu_lr1e-03"
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("lr", "act", "epochs", "seed", "test_loss", "test_acc", "best_val_acc", "history", "params", "seconds_per_epoch", "device"):
        assert key in results, key
    assert results["params"] == {"total": 169894, "trainable": 168325, "non_trainable": 1569, "bias": 275}
    assert [row["epoch"] for row in results["history"]] == [1, 2]
    assert set(results["history"][0]) == {"epoch", "train/loss", "train/acc", "val/loss", "val/acc"}
    assert results["rows"] == {"train": 3333, "val": 667, "test": 4000}
    assert 0.2 < results["test_acc"] <= 1  # chance is 1/24; 2 epochs on 3,333 rows learn a lot more
    assert results["seconds_per_epoch"] > 0
    assert "test accuracy" in done.stdout
    events = _scalars(run_dir)
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "hparams/test_acc"} <= set(tags)
    assert events.Scalars("hparams/test_acc")[-1].value == pytest.approx(results["test_acc"], abs=1e-6)
    assert events.PluginTagToContent("hparams")  # the HParams tab has this run's session


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(real_data_dir, tmp_path):
    common = ["--epochs", "2", "--limit-rows", "4000", "--data-dir", real_data_dir, "--accelerator", "cpu", "--quiet"]
    single = _run(TRAIN, *common, "--logdir", tmp_path / "single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = _run(TRAIN, *common, "--devices", "2", "--strategy", "ddp", "--logdir", tmp_path / "ddp", cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = json.loads((tmp_path / "single" / "mlp" / "relu_lr1e-03" / "results.json").read_text())
    two = json.loads((tmp_path / "ddp" / "mlp" / "relu_lr1e-03" / "results.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    # Each rank trains on half the rows per epoch (so half the steps): the quality must stay
    # in the same range, not collapse to chance as it would with broken gradient averaging.
    assert two["test_acc"] > 0.5 * one["test_acc"] and two["test_acc"] > 0.2
    # the test set was evaluated exactly once in total: accuracy is a multiple of 1/4000
    assert abs(two["test_acc"] * 4000 - round(two["test_acc"] * 4000)) < 1e-3


def test_sweep_script_writes_table_json_and_figure(synthetic_data_dir, tmp_path):
    done = _run(SWEEP, "--lrs", "1e-3", "1e-9", "--acts", "relu", "linear", "--epochs", "1", "--data-dir", synthetic_data_dir,
                "--logdir", tmp_path / "runs", "--out", tmp_path / "sweep", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert len(summary["settings"]) == 4
    assert set(summary["best_lr_per_activation"]) == {"relu", "linear"}
    # lr 1e-9 barely moves the weights: lr 1e-3 must win for both activations
    assert all(best["lr"] == 1e-3 for best in summary["best_lr_per_activation"].values())
    table = (tmp_path / "sweep" / "summary.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 5 and "Best learning rate" in table
    assert (tmp_path / "sweep" / "curves.png").stat().st_size > 10_000
    names = ["linear_lr1e-03", "linear_lr1e-09", "relu_lr1e-03", "relu_lr1e-09"]
    assert sorted(p.name for p in (tmp_path / "runs" / "mlp").iterdir()) == names
    assert sorted(summary["histories"]) == names  # keyed by the run folders' names
    assert summary["config"]["way"] == "fused"


def _results_by_run(logdir):
    return {path.parent.name: json.loads(path.read_text()) for path in (logdir / "mlp").glob("*/results.json")}


def test_fused_sweep_equals_the_sequential_one_and_writes_what_train_mlp_writes(synthetic_data_dir, tmp_path):
    common = ["--lrs", "1e-3", "1e-4", "--acts", "relu", "linear", "--epochs", "2", "--data-dir", synthetic_data_dir,
              "--quiet", "--no-pictures"]
    for way, extra in (("fused", []), ("sequential", ["--sequential"])):
        done = _run(SWEEP, *common, *extra, "--logdir", tmp_path / way, "--out", tmp_path / f"{way}-summary", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        # Lightning's advice that does not apply here is filtered at the entry point (cli_kit).
        assert "logging interval" not in done.stderr and "LeafSpec" not in done.stderr, done.stderr[-2000:]
    fused, sequential = _results_by_run(tmp_path / "fused"), _results_by_run(tmp_path / "sequential")
    assert sorted(fused) == sorted(sequential) == ["linear_lr1e-03", "linear_lr1e-04", "relu_lr1e-03", "relu_lr1e-04"]
    # In the fused model, the members of one learning rate sit side by side (one Adam kernel call each).
    places = sorted(fused.values(), key=lambda run: run["fused"]["member"])
    assert [run["lr"] for run in places] == [1e-4, 1e-4, 1e-3, 1e-3]
    for name, alone in sequential.items():
        member = fused[name]
        assert set(member) - {"fused"} == set(alone)  # the same schema, plus where it sat in the fused model
        assert (member["act"], member["lr"], member["seed"], member["params"]) == (alone["act"], alone["lr"], alone["seed"], alone["params"])
        # Same initial weights, same batches: the same training up to float32 rounding.
        assert member["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-3, abs=1e-5)
        for fused_row, alone_row in zip(member["history"], alone["history"], strict=True):
            assert fused_row == pytest.approx(alone_row, rel=1e-3, abs=1e-5)
        events = _scalars(tmp_path / "fused" / "mlp" / name)
        expected = _scalars(tmp_path / "sequential" / "mlp" / name)
        assert set(events.Tags()["scalars"]) == set(expected.Tags()["scalars"])
        assert [s.step for s in events.Scalars("val/acc")] == [s.step for s in expected.Scalars("val/acc")]
        assert events.PluginTagToContent("hparams")


def test_sweep_over_seeds_reports_mean_and_spread(synthetic_data_dir, tmp_path):
    done = _run(SWEEP, "--lrs", "1e-3", "--acts", "relu", "--seeds", "1", "2", "3", "--epochs", "1", "--data-dir",
                synthetic_data_dir, "--logdir", tmp_path / "runs", "--out", tmp_path / "sweep", "--quiet", "--no-pictures",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    (setting,) = summary["settings"]
    assert setting["seeds"] == [1, 2, 3] and setting["runs"] == ["relu_lr1e-03_seed1", "relu_lr1e-03_seed2", "relu_lr1e-03_seed3"]
    accuracies = [run["test_acc"] for run in summary["runs"]]
    assert setting["test_acc"] == pytest.approx(sum(accuracies) / 3)
    assert setting["test_acc_std"] is not None and setting["test_acc_std"] >= 0
    assert len({run["test_loss"] for run in summary["runs"]}) == 3  # other seeds, other initial weights
    assert "mean ± sd over 3 seeds" in (tmp_path / "sweep" / "summary.md").read_text()


def test_ctrl_c_during_a_fused_sweep_leaves_no_partial_runs(synthetic_data_dir, tmp_path):
    from conftest import interrupt_script, leftover_temporary_files

    code, _, stderr = interrupt_script(
        SWEEP, "--epochs", "200", "--lrs", "1e-3", "1e-4", "--data-dir", synthetic_data_dir,
        "--logdir", tmp_path / "runs", "--out", tmp_path / "sweep", cwd=tmp_path, after=r"^epoch 2/200 ",
    )
    assert code == 130, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"interrupted at epoch \d+/200 of the fused sweep \(4 settings\); nothing written for these runs", last), last
    assert "Traceback" not in stderr
    runs = tmp_path / "runs" / "mlp"
    assert not runs.exists() or not any(runs.iterdir())  # no member's folder survives
    assert not (tmp_path / "sweep").exists() and not leftover_temporary_files(tmp_path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "-1e-3"], "--lr: must be a positive number"),
        (["--lr", "-inf"], "--lr: must be a positive number, got -inf"),
        (["--augment", "-1e-3"], "--augment: strength must be a finite number >= 0"),
        (["--lr", "fast"], "--lr: 'fast' is not a number"),
        (["--act", "swish2"], "--act: invalid choice"),
        (["--epochs", "0"], "--epochs: must be a positive integer"),
        (["--data-dir", "/no/such/folder"], "--data-dir: /no/such/folder: no such file"),
        (["--devices", "zero"], "--devices: must be 'auto'"),
        (["--strategy", "warp-drive", "--epochs", "1"], "error: cannot set up training"),
    ],
)
def test_bad_flags_are_one_line_errors(args, message, tmp_path, synthetic_data_dir, capsys):
    # In-process (the real entry point's exit code and stderr are checked below, once).
    from cli_kit import run_main

    if "--data-dir" not in args:
        args = args + ["--data-dir", str(synthetic_data_dir)]
    code = run_main(load_script("train_mlp").main, [*args, "--logdir", str(tmp_path)])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]


def test_the_scripts_train_with_cudas_runtime_check_not_lightnings_nvml_one(synthetic_data_dir, tmp_path, monkeypatch):
    # Lightning sets the variable when imported (already done in this process: set it again);
    # the script drops it after its imports, before training, unless the strategy forks.
    import lightning  # noqa: F401
    from cli_kit import NVML_CHECK_VARIABLE, prefer_cuda_runtime_check, run_main

    monkeypatch.setenv(NVML_CHECK_VARIABLE, "1")
    args = ["--epochs", "1", "--data-dir", str(synthetic_data_dir), "--logdir", str(tmp_path), "--quiet", "--no-pictures"]
    assert run_main(load_script("train_mlp").main, args) == 0
    assert NVML_CHECK_VARIABLE not in os.environ
    monkeypatch.setenv(NVML_CHECK_VARIABLE, "1")
    prefer_cuda_runtime_check("ddp_fork")  # a forked process must not inherit an initialised CUDA
    assert os.environ[NVML_CHECK_VARIABLE] == "1"


def test_bad_csv_through_the_script_is_one_line(tmp_path):
    (tmp_path / "sign_mnist_train.csv").write_text("label,pixel1\n3,4\n")
    (tmp_path / "sign_mnist_test.csv").write_text("label,pixel1\n3,4\n")
    done = _run(TRAIN, "--data-dir", tmp_path, "--epochs", "1", "--logdir", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "header must be" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-made left behind


def test_help_lists_every_flag():
    done = subprocess.run([sys.executable, str(TRAIN), "--help"], capture_output=True, text=True)
    for flag in ("--lr", "--act", "--epochs", "--batch-size", "--seed", "--data-dir", "--logdir", "--accelerator", "--devices", "--strategy"):
        assert flag in done.stdout


def test_ctrl_c_during_training_stops_cleanly(synthetic_data_dir, tmp_path):
    from conftest import interrupt_script, leftover_temporary_files

    runs = tmp_path / "runs"
    code, _, stderr = interrupt_script(
        TRAIN, "--epochs", "200", "--data-dir", synthetic_data_dir, "--logdir", runs,
        cwd=tmp_path, after=r"^epoch 2/200 ",
    )
    assert code == 130, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"interrupted at epoch \d+/200 of relu_lr1e-03; nothing written for this run", last), last
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not (runs / "mlp" / "relu_lr1e-03").exists()  # no stump of a run, no results.json
    assert not leftover_temporary_files(tmp_path)


def test_lightning_chatter_is_replaced_by_one_device_line(synthetic_data_dir, tmp_path):
    done = _run(TRAIN, "--epochs", "1", "--data-dir", synthetic_data_dir, "--logdir", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    for noise in ("GPU available", "TPU available", "Tip:", "litmodels"):
        assert noise not in output
    assert re.search(r"^relu_lr1e-03: training on cpu: ", done.stderr, re.MULTILINE), done.stderr
