"""Data parallelism that really shards: two CPU processes under Lightning's DDP strategy.

tests/ddp_probe.py trains the MLP once on one process and once on two (``strategy="ddp"``,
``accelerator="cpu"``, small synthetic data) and records per rank which training rows every
step saw. The ranks' rows must be disjoint and together cover the training rows once per epoch,
an epoch must take half the optimizer steps of the one-process run, and the logged validation
numbers must be the reduction over both ranks' halves. On a GPU the DataModule's tensors must
sit on the strategy's root device before the first step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, requires_cuda

PROBE = REPO_ROOT / "tests" / "ddp_probe.py"


def _probe(data_dir, out, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(PROBE), str(data_dir), str(out), *map(str, args)], cwd=out.parent,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return {int(path.stem.removeprefix("rank")): json.loads(path.read_text()) for path in out.glob("rank*.json")}


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory):
    from datamodules.synthetic import write_synthetic_csvs

    data = tmp_path_factory.mktemp("ddp") / "data"
    # 600 rows: 500 training rows (250 per rank, 25 batches of 10) and 100 validation rows.
    write_synthetic_csvs(data, n_train=600, n_test=240, seed=0)
    return data


@pytest.fixture(scope="module")
def runs(ddp_data):
    one = _probe(ddp_data, ddp_data.parent / "one", "--devices", "1")
    two = _probe(ddp_data, ddp_data.parent / "two", "--devices", "2")
    return one, two


def test_the_ranks_train_on_disjoint_halves_that_cover_every_row_once_per_epoch(runs):
    one, two = runs
    assert sorted(two) == [0, 1] and two[0]["world_size"] == 2 and one[0]["world_size"] == 1
    n = two[0]["n_train"]
    assert n == 500 and not two[0]["duplicates"]
    for epoch in ("0", "1"):
        first, second = two[0]["train_rows"][epoch], two[1]["train_rows"][epoch]
        assert len(first) == len(second) == n // 2  # equal shards: the ranks step together
        assert not set(first) & set(second)
        assert sorted(first + second) == list(range(n))  # every training row once in the epoch
    # each epoch reshuffles: another split of the rows between the ranks
    assert set(two[0]["train_rows"]["0"]) != set(two[0]["train_rows"]["1"])


def test_an_epoch_takes_half_the_optimizer_steps_of_one_process(runs):
    one, two = runs
    assert one[0]["optimizer_steps"] == 2 * 50  # 2 epochs of 500 rows in batches of 10
    assert two[0]["optimizer_steps"] == two[1]["optimizer_steps"] == one[0]["optimizer_steps"] // 2


def test_logged_metrics_are_reduced_across_the_ranks(runs):
    _, two = runs
    # Validation is sharded too: each row is evaluated once, by one rank ...
    for epoch in ("0", "1"):
        first, second = two[0]["val_rows"][epoch], two[1]["val_rows"][epoch]
        assert first and second and sorted(first + second) == list(range(two[0]["n_val"]))
    # ... so a logged number over all rows can only come from reducing the two halves.
    for rank in (0, 1):
        # Each rank evaluated half of the validation rows; what it logged is the number over all
        # of them (the model is the same on both ranks after the last gradient average).
        assert two[rank]["logged_val_loss"] == pytest.approx(two[rank]["full_val_loss"], rel=1e-4)
        assert two[rank]["logged_val_acc"] == pytest.approx(two[rank]["full_val_acc"], abs=1e-6)
    assert two[0]["logged_val_loss"] == pytest.approx(two[1]["logged_val_loss"], rel=1e-6)


def test_every_rank_reports_the_one_run_folder_the_first_rank_claimed(ddp_data, tmp_path):
    """train_mlp on two processes, where an earlier run already holds the setting's name: the first
    rank claims relu_lr1e-03_run2, and the rank Lightning starts learns that name from it (its own
    guess would be relu_lr1e-03)."""
    logdir = tmp_path / "runs"
    earlier = logdir / "mlp" / "relu_lr1e-03"
    earlier.mkdir(parents=True)
    ranks = _probe(ddp_data, tmp_path / "named", "--devices", "2", "--train-mlp", logdir)
    assert sorted(ranks) == [0, 1] and all(rank["world_size"] == 2 for rank in ranks.values())
    run = logdir / "mlp" / "relu_lr1e-03_run2"
    assert [(rank["run"], rank["log_dir"]) for rank in ranks.values()] == [(run.name, str(run))] * 2
    assert sorted(path.name for path in (logdir / "mlp").iterdir()) == [earlier.name, run.name]  # one new folder
    assert (run / "results.json").is_file() and not any(earlier.iterdir())


@requires_cuda
def test_on_a_gpu_the_tensors_sit_on_the_root_device_before_the_first_step(tmp_path):
    from datamodules.synthetic import write_synthetic_csvs

    write_synthetic_csvs(tmp_path / "data", n_train=600, n_test=240, seed=0)
    (rank0,) = _probe(tmp_path / "data", tmp_path / "gpu", "--devices", "1", "--accelerator", "gpu", "--epochs", "1").values()
    assert rank0["root_device"].startswith("cuda") and rank0["tensor_device"] == rank0["root_device"]


def test_sigterm_stops_every_rank_with_143_and_no_results(synthetic_data_dir, tmp_path):
    """SIGTERM (as `kill` or `timeout` sends it to the process Lightning launched the ranks from)
    during DDP training on two CPU processes: exit code 143, one line, no results, no rank left."""
    import re
    import signal
    from pathlib import Path

    from conftest import interrupt_script

    runs = tmp_path / "ddp-runs"
    code, _, stderr = interrupt_script(
        REPO_ROOT / "scripts" / "train_mlp.py", "--epochs", "200", "--data-dir", synthetic_data_dir, "--logdir", runs,
        "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", cwd=tmp_path, after=r"^epoch 2/200 ",
        signal_number=signal.SIGTERM, env={"OMP_NUM_THREADS": "1"},
    )
    assert code == 143, stderr[-3000:]
    stops = [line for line in stderr.splitlines() if line.startswith(("terminated", "interrupted"))]
    assert len(stops) == 1 and re.fullmatch(r"terminated \(SIGTERM\) at epoch \d+/200 of relu_lr1e-03; nothing written for this run", stops[0])
    assert "Traceback" not in stderr and not list(runs.rglob("results.json")) and not (runs / "mlp" / "relu_lr1e-03").exists()
    deadline = time.monotonic() + 30
    while True:  # the other rank ends too (Lightning kills it when the first one stops)
        ranks = [proc for proc in Path("/proc").glob("[0-9]*") if str(runs).encode() in _cmdline(proc)]
        if not ranks or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not ranks


def _cmdline(proc) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
