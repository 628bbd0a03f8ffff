"""Signals at any moment and a fast start: real processes, real signals.

* Ctrl-C (SIGINT) and SIGTERM during the heavy imports, mid-epoch and mid-study end with exit
  code 130 or 143, one line on stderr, no traceback, nothing half-written; a run stopped by
  SIGTERM never exits 0 and leaves no results.json (Lightning's own SIGTERM handling included).
* ``--help``, a bad flag and a bad value answer before torch, Lightning, scikit-learn, NumPy or
  pandas are imported.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT, interrupt_script, leftover_temporary_files

SCRIPTS = REPO_ROOT / "scripts"
TRAIN = SCRIPTS / "train_mlp.py"
STUDY = SCRIPTS / "study.py"
HEAVY = ("torch", "lightning", "sklearn", "numpy", "pandas", "scipy", "matplotlib")


def _without_import_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("import time:")]


# Fast start ------------------------------------------------------------------------------------

# (script, arguments, exit code, text in the one error line or in --help's output)
FAST_ANSWERS = [
    ("train_mlp", ["--help"], 0, "--num-nodes"),
    ("train_mlp", ["--bogus"], 2, "unrecognized arguments: --bogus"),
    ("train_mlp", ["--act", "swish"], 2, "invalid choice: 'swish'"),
    ("train_mlp", ["--lr", "-1"], 2, "must be a positive number"),
    ("train_mlp", ["--lr", "-1e-3"], 2, "argument --lr: must be a positive number, got -1e-3"),
    ("sweep_mlp", ["--lrs", "1e-3", "-1e-5"], 2, "argument --lrs: must be a positive number, got -1e-5"),
    ("sweep_mlp", ["--seeds", "1", "-1e3"], 2, "argument --seeds: invalid int value: '-1e3'"),
    ("train_mlp", ["--devices", "zero"], 2, "--devices: must be 'auto'"),
    ("train_mlp", ["--augment", "-1"], 2, "strength must be a finite number >= 0"),
    ("train_mlp", ["--data-dir", "/no/such/folder"], 2, "no such file or directory"),
    ("sweep_mlp", ["--help"], 0, "--sequential"),
    ("sweep_mlp", ["--acts", "swish"], 2, "invalid choice: 'swish'"),
    ("study", ["--help"], 0, "--parts"),
    ("study", ["--parts", "mlp,forest"], 2, "unknown part forest"),
    ("cluster", ["--help"], 0, "--gmm-n-init"),
    ("cluster", ["--k", "1,5"], 2, "every k must be at least 2"),
    ("embed", ["--help"], 0, "--methods"),
    ("embed", ["--methods", "umap"], 2, "unknown method umap"),
    ("pca_forest", ["--help"], 0, "--raw-trees"),
    ("pca_forest", ["--raw-trees", "0,5"], 2, "must be positive integers"),
]


def test_help_and_bad_input_answer_before_any_heavy_import(tmp_path):
    """Each script's entry point, run as ``python scripts/X.py ARGS`` would run it, in one fresh
    interpreter: its exit code and output, and which heavy libraries it had imported by then."""
    probe = textwrap.dedent(f"""
        import contextlib, io, json, runpy, sys
        heavy = {HEAVY!r}
        sys.path.insert(0, {str(SCRIPTS)!r})  # as `python scripts/X.py` puts the script's folder first
        answers = []
        for script, args in json.loads(sys.argv[1]):
            sys.argv = [script, *args]
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    runpy.run_path(f"{SCRIPTS}/{{script}}.py", run_name="__main__")
                    code = 0
                except SystemExit as exit:
                    code = exit.code
            answers.append([code, out.getvalue() + err.getvalue(), sorted(m for m in heavy if m in sys.modules)])
        print(json.dumps(answers))
    """)
    cases = [[script, args] for script, args, _, _ in FAST_ANSWERS]
    done = subprocess.run([sys.executable, "-c", probe, json.dumps(cases)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for (script, args, code, text), (got, output, heavy) in zip(FAST_ANSWERS, json.loads(done.stdout), strict=True):
        assert got == code, (script, args, output)
        assert text in output, (script, args, output)
        if code:
            assert len(output.strip().splitlines()) == 1, (script, args, output)
        assert heavy == [], (script, args, heavy)  # nothing heavy imported, even in the scripts' kit


def test_the_command_line_activation_names_are_the_models():
    from cli_kit import ACTIVATION_CHOICES

    from lightning_modules.mlp_module import ACTIVATIONS

    assert sorted(ACTIVATION_CHOICES) == sorted(ACTIVATIONS)


# Signals during the heavy imports ----------------------------------------------------------------


@pytest.mark.parametrize("number, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_during_the_heavy_imports_is_one_line(number, code, word, synthetic_data_dir, tmp_path):
    # The interpreter writes "import time: ... | torch.xyz" as each torch module finishes
    # importing: the signal comes in the middle of importing torch and Lightning.
    runs = tmp_path / "runs"
    got, _, stderr = interrupt_script(
        TRAIN, "--epochs", "1", "--data-dir", synthetic_data_dir, "--logdir", runs, cwd=tmp_path,
        after=r"^import time:.*\|\s+torch\.\w", signal_number=number, env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    lines = _without_import_lines(stderr)
    assert got == code, stderr[-3000:]
    assert lines == [f"{word}; nothing written for this run"], lines[-20:]
    assert "Traceback" not in stderr and not runs.exists()


# SIGTERM mid-epoch ------------------------------------------------------------------------------


def test_sigterm_mid_epoch_exits_143_and_keeps_no_half_run(synthetic_data_dir, tmp_path):
    runs = tmp_path / "runs"
    code, stdout, stderr = interrupt_script(
        TRAIN, "--epochs", "200", "--data-dir", synthetic_data_dir, "--logdir", runs, cwd=tmp_path,
        after=r"^epoch 2/200 ", signal_number=signal.SIGTERM,
    )
    assert code == 143, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"terminated \(SIGTERM\) at epoch \d+/200 of relu_lr1e-03; nothing written for this run", last), last
    assert sum("SIGTERM" in line for line in stderr.splitlines()) == 1  # Lightning's own "Received SIGTERM" is not shown
    assert "Traceback" not in stderr and "test accuracy" not in stdout
    assert not list(runs.rglob("results.json")) and not (runs / "mlp" / "relu_lr1e-03").exists()
    assert not leftover_temporary_files(tmp_path)


def test_lightnings_own_sigterm_handling_never_ends_in_success(synthetic_data_dir, tmp_path):
    """A library user's program (no cli_kit, so Lightning's signal connector handles SIGTERM and
    raises its SIGTERMException, a SystemExit with no code) must not exit 0 or leave results."""
    program = tmp_path / "user_program.py"
    program.write_text(textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # the library's progress lines on stderr
        from lightning_modules.training import TrainConfig, train_mlp
        train_mlp(TrainConfig(epochs=200, data_dir={str(synthetic_data_dir)!r}, logdir={str(tmp_path / 'runs')!r},
                              pictures=False))
        print("finished")
    """))
    code, stdout, stderr = interrupt_script(program, cwd=tmp_path, after=r"^epoch 2/200 ", signal_number=signal.SIGTERM)
    assert code != 0 and "finished" not in stdout, stderr[-3000:]
    assert "Interrupted: at epoch" in stderr  # the library's own exception, naming where it stopped
    assert not list((tmp_path / "runs").rglob("results.json"))


# SIGTERM mid-study -------------------------------------------------------------------------------


def test_sigterm_mid_study_keeps_finished_parts_and_exits_143(tmp_path, monkeypatch):
    from datamodules.synthetic import write_synthetic_csvs

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    write_synthetic_csvs(tmp_path / "data", n_train=600, n_test=240, seed=0)
    out = tmp_path / "out"
    args = ["--data-dir", tmp_path / "data", "--out", out, "--backend", "sklearn", "--quick", "--parts", "embed,cluster",
            "--set", "embed.map_rows=120", "--set", "embed.methods=pca", "--set", "embed.trust_sample=100",
            "--set", "cluster.sample_size=300", "--set", "cluster.ks=3,6", "--set", "cluster.kmeans_n_init=1",
            "--set", "cluster.gmm_n_init=1"]
    code, _, stderr = interrupt_script(STUDY, *args, cwd=tmp_path, after=r"^sample: ", signal_number=signal.SIGTERM)
    assert code == 143, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("terminated (SIGTERM) in part cluster (2/2)"), last
    assert last.endswith("finished parts are kept (embed); a rerun resumes at cluster"), last
    assert "Traceback" not in stderr
    assert (out / "embed" / "results.json").is_file()
    assert not (out / "cluster").exists() and not (out / ".partial").exists() and not (out / ".lock").exists()
    assert not leftover_temporary_files(out) and not (out / "report.md").exists()


# The exit-code contract, in-process --------------------------------------------------------------


def test_run_main_maps_every_ending_to_its_code(capsys, tmp_path):
    import errno
    import os

    from cli_kit import run_main

    def raising(exc):
        def main(argv):
            raise exc
        return main

    def signalled(number):
        def main(argv):
            os.kill(os.getpid(), number)  # a real signal to this process: the handler raises at once
            raise AssertionError("the signal did not stop main")
        return main

    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.png"))
    assert run_main(raising(full), [], kept_on_interrupt="nothing kept") == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'x.png'}: No space left on device; nothing kept\n"
    assert run_main(signalled(signal.SIGTERM), [], kept_on_interrupt="nothing kept") == 143
    assert capsys.readouterr().err == "terminated (SIGTERM); nothing kept\n"
    assert run_main(signalled(signal.SIGINT), []) == 130
    assert capsys.readouterr().err == "interrupted\n"
    # the handlers are handed back: this process's signals do what they did before
    assert {number: signal.getsignal(number) for number in before} == before
