"""Output folders in the real world: two runs at once, unusable locations, full disks.

Real processes and real files: a second study into the same folder while the first runs, a lock
left by a process that is gone, ``--logdir`` under a file, a read-only folder, a small tmpfs that
fills up mid-run (where this machine lets the test mount one), and a fake writer that answers
ENOSPC to every write.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, leftover_temporary_files, load_script

LOCK_NAME = ".lock"  # labkit.files.LOCK_NAME: where a run's pid, host and start time are kept
STUDY = REPO_ROOT / "scripts" / "study.py"
TRAIN = REPO_ROOT / "scripts" / "train_mlp.py"

TINY_CLUSTER = ["--backend", "sklearn", "--quick", "--parts", "cluster", "--set", "cluster.sample_size=300",
                "--set", "cluster.ks=3,6", "--set", "cluster.kmeans_n_init=1", "--set", "cluster.gmm_n_init=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from datamodules.synthetic import write_synthetic_csvs

    root = tmp_path_factory.mktemp("outputs-data")
    write_synthetic_csvs(root / "data", n_train=600, n_test=240, seed=0)
    return root / "data"


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_lock(folder: Path, pid: int, started: float, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({
        "pid": pid, "host": host or socket.gethostname(), "started": started,
        "started_text": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)), "command": "study.py --out X",
    }))


# One run per output folder --------------------------------------------------------------------


def test_a_second_study_into_the_same_folder_refuses_and_the_first_is_undisturbed(data, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, str(STUDY), "--data-dir", str(data), "--out", str(out), *TINY_CLUSTER],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = []
        for line in first.stderr:  # wait until the first run is inside its part ...
            seen.append(line)
            if line.startswith("sample: "):  # the cluster part's first line
                break
        else:
            raise AssertionError("".join(seen))
        first.send_signal(signal.SIGSTOP)  # ... and hold it there while the second one tries
        try:
            second = subprocess.run([sys.executable, str(STUDY), "--data-dir", str(data), "--out", str(out), *TINY_CLUSTER],
                                    cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
            partial = sorted(path.name for path in (out / ".partial").iterdir())
        finally:
            first.send_signal(signal.SIGCONT)
        stdout, rest = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2, second.stderr[-3000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert lines[0].startswith(f"error: {out} is in use by another run: pid {first.pid} on {socket.gethostname()}, started ")
    assert partial == ["cluster"]  # the second run left the first one's part being computed alone
    assert first.returncode == 0, ("".join(seen) + rest)[-3000:]
    assert (out / "cluster" / "results.json").is_file() and (out / "report.md").is_file()
    assert not (out / LOCK_NAME).exists() and not (out / ".partial").exists()


def test_a_lock_left_by_a_process_that_is_gone_is_taken_over_with_a_note(tmp_path, capsys):
    from cli_kit import configure_logging

    from labkit.files import LOCK_NAME as lock_name
    from labkit.files import FolderLock

    assert lock_name == LOCK_NAME

    configure_logging()
    out = tmp_path / "out"
    pid = _dead_pid()
    _write_lock(out, pid, time.time() - 60)
    with FolderLock(out) as lock:
        record = json.loads((out / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert lock.path == out / LOCK_NAME
    assert not (out / LOCK_NAME).exists()
    err = capsys.readouterr().err
    assert f"note: {out / LOCK_NAME} was left by pid {pid} on {socket.gethostname()}" in err
    assert "which is no longer running; taking it over" in err


def test_a_live_holder_or_one_on_another_host_is_respected(tmp_path):
    from labkit.files import FolderInUse, FolderLock

    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        _write_lock(out, sleeper.pid, time.time())
        with pytest.raises(FolderInUse, match=rf"in use by another run: pid {sleeper.pid} on "):
            FolderLock(out).acquire()
        # the same pid in a lock taken an hour before that process started: the pid was reused
        _write_lock(out, sleeper.pid, time.time() - 3600)
        with FolderLock(out):
            assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        sleeper.kill()
        sleeper.wait()
    # a pid this host no longer runs, but the lock names another host: that one cannot be checked
    _write_lock(out, _dead_pid(), time.time(), host="another-host.example")
    with pytest.raises(FolderInUse, match="on another-host.example"):
        FolderLock(out).acquire()
    assert json.loads((out / LOCK_NAME).read_text())["host"] == "another-host.example"  # untouched


def test_a_lock_made_by_this_process_is_held_until_released(tmp_path):
    from labkit.files import FolderInUse, FolderLock

    out = tmp_path / "out"
    with FolderLock(out):
        with pytest.raises(FolderInUse):
            FolderLock(out).acquire()
        assert (out / LOCK_NAME).is_file()
    assert not out.exists()  # the lock made the folder and nothing was written: it goes too
    with FolderLock(out):
        pass
    FolderLock(out).acquire()  # free again


def test_two_runs_never_get_the_same_run_folder(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from lightning_modules.training import claim_run_folder

    root = tmp_path / "mlp"
    assert claim_run_folder(root, "relu_lr1e-03") == "relu_lr1e-03"
    assert claim_run_folder(root, "relu_lr1e-03") == "relu_lr1e-03_run2"  # the first one's folder exists now
    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda _: claim_run_folder(root, "linear_lr1e-05"), range(8)))
    assert len(set(names)) == 8 and all((root / name).is_dir() for name in names)


# Unusable output locations ---------------------------------------------------------------------


def test_logdir_under_a_file_is_one_line_and_exit_2(synthetic_data_dir, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    done = subprocess.run([sys.executable, str(TRAIN), "--epochs", "1", "--data-dir", str(synthetic_data_dir),
                           "--logdir", str(tmp_path / "afile" / "runs")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert errors == [done.stderr.strip().splitlines()[-1]] and "Traceback" not in done.stderr
    assert errors[0] == f"error: cannot write to {tmp_path / 'afile' / 'runs' / 'mlp'}: Not a directory"


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no write can go into: mode 0555 for an ordinary user; for root (whom permissions
    do not stop) a read-only tmpfs, where the test can mount one."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    yield from _tmpfs(folder, "ro,size=64k", "running as root and cannot mount a read-only tmpfs here")


def _tmpfs(folder: Path, options: str, why_not: str):
    """Mount a tmpfs with ``options`` on ``folder`` for a fixture's life; skip, saying why, where
    this machine does not let the test mount one."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"{why_not}: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_output_folder_is_one_line_and_exit_2(data, read_only_dir, tmp_path, capsys):
    from cli_kit import run_main

    out = read_only_dir / "out"
    assert run_main(load_script("study").main, ["--data-dir", str(data), "--out", str(out), *TINY_CLUSTER]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write to {out}: "), lines
    assert lines[0].endswith(("Read-only file system", "Permission denied"))
    from labkit.files import FolderLock, UnusableOutput

    with pytest.raises(UnusableOutput):
        FolderLock(read_only_dir).acquire()  # an existing folder too: the check writes


# Full disks ------------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs: room for a run's TensorBoard events, not for its 2 MB checkpoint."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    yield from _tmpfs(folder, "size=1m", "cannot mount a small tmpfs here (needs root)")


def test_a_disk_that_fills_mid_run_is_one_line_exit_1_and_nothing_half_written(synthetic_data_dir, small_tmpfs, tmp_path):
    scratch = tmp_path / "tmp"  # the system temporary folder of the run: Lightning's own writer staged checkpoints there
    scratch.mkdir()
    done = subprocess.run([sys.executable, str(TRAIN), "--epochs", "3", "--data-dir", str(synthetic_data_dir),
                           "--logdir", str(small_tmpfs / "runs"), "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {small_tmpfs / 'runs' / 'mlp' / 'relu_lr1e-03'}"), last
    assert last.endswith(": No space left on device; nothing written for this run"), last
    assert "Traceback" not in done.stderr
    assert not (small_tmpfs / "runs" / "mlp" / "relu_lr1e-03").exists()  # no stump of a run, no checkpoint
    assert not leftover_temporary_files(small_tmpfs) and not list(scratch.iterdir())


class FullDisk:
    """A fake writer: every file opened for writing under ``root`` (by ``open``, ``io.open``,
    ``os.open``: mkstemp, matplotlib, json, TensorBoard) fails with ENOSPC, except the names
    ``spare`` lets through (the lock and the write check, for a disk that fills later)."""

    def __init__(self, monkeypatch, root: Path, spare=lambda name: False) -> None:
        self.root, self.spare, self.refused = str(root), spare, []
        real_open, real_os_open = builtins.open, os.open

        def refuse(path) -> None:
            path = os.fspath(path) if not isinstance(path, int) else ""
            if isinstance(path, bytes):
                path = path.decode()
            if path.startswith(self.root) and not self.spare(os.path.basename(path)):
                self.refused.append(path)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

        def fake_open(file, mode="r", *args, **kwargs):
            if any(flag in mode for flag in "wax+"):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)


def test_a_full_disk_from_the_start_is_exit_2_naming_the_folder(data, tmp_path, monkeypatch, capsys):
    from cli_kit import run_main

    out = tmp_path / "out"
    script = load_script("study")
    disk = FullDisk(monkeypatch, tmp_path / "out")
    assert run_main(script.main, ["--data-dir", str(data), "--out", str(out), *TINY_CLUSTER]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: cannot write to {out}: No space left on device"], lines
    assert disk.refused and not out.exists()


def test_a_disk_full_everywhere_mid_study_is_exit_1_and_leaves_no_half_part(data, tmp_path, monkeypatch, capsys):
    from threadpoolctl import threadpool_limits

    from cli_kit import run_main

    out = tmp_path / "out"
    script = load_script("study")
    # the lock, the write check and the data digests get through: the disk fills inside the part
    disk = FullDisk(monkeypatch, out, spare=lambda name: name.startswith((".lock", ".write-check", ".data_sha256")))
    with threadpool_limits(limits=1):
        code = run_main(script.main, ["--data-dir", str(data), "--out", str(out), *TINY_CLUSTER],
                        kept_on_interrupt="finished parts are kept; a rerun resumes where it stopped")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err[-20:]
    assert err[-1].startswith(f"error: {out}") and ": No space left on device (in part cluster); finished parts" in err[-1]
    assert disk.refused and "Traceback" not in "\n".join(err)
    monkeypatch.undo()
    left = sorted(str(path.relative_to(out)) for path in out.rglob("*"))
    assert not (out / "cluster").exists() and not (out / ".partial").exists() and not (out / LOCK_NAME).exists(), left
    assert not leftover_temporary_files(out) and not list(out.rglob("results.json")), left
