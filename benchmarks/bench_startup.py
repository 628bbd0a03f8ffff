"""How fast the scripts start: ``--help`` against a bare NumPy import, and each script's time to
its first progress line.

    python benchmarks/bench_startup.py [--repeats 7] [--line-repeats 3] [--scripts train_mlp,study]

One table. Baseline: ``python -c "import numpy"``, measured in the same run, interleaved with
the others (the machine is shared and noisy: compare ratios from one run). Rows:

* ``X.py --help``: seconds until the process ends, median of ``--repeats`` runs, and its ratio
  to the baseline; the target for ``train_mlp.py --help`` is 4x or less;
* ``X.py`` (first line): seconds from the start of a small real job on the shipped data until
  its first progress line on stderr (Python warnings skipped), median of ``--line-repeats``
  runs; the job is then stopped with Ctrl-C (SIGINT), and its exit code must be 130.

Each process is a fresh interpreter (``sys.executable``) with this checkout first on the path;
nothing is written outside a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("train_mlp", "sweep_mlp", "study", "cluster", "embed", "pca_forest")
BASELINE = ("python -c 'import numpy'", [sys.executable, "-c", "import numpy"])


def small_job(script: str, out: Path) -> list[str]:
    """The arguments of a small real run of ``script`` on the shipped data, writing under ``out``."""
    return {
        "train_mlp": ["--epochs", "1", "--limit-rows", "4000", "--logdir", str(out / "runs"), "--no-pictures"],
        "sweep_mlp": ["--epochs", "1", "--limit-rows", "4000", "--logdir", str(out / "runs"), "--out", str(out / "sweep"),
                      "--no-pictures"],
        "study": ["--quick", "--parts", "cluster", "--backend", "sklearn", "--out", str(out / "study")],
        "cluster": ["--quick", "--backend", "sklearn", "--out", str(out / "cluster")],
        "embed": ["--quick", "--methods", "pca", "--backend", "sklearn", "--out", str(out / "embed")],
        "pca_forest": ["--quick", "--backend", "sklearn", "--out", str(out / "pca_forest")],
    }[script]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def seconds_to_exit(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, env=environment())
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return seconds


def seconds_to_first_line(command: list[str], workdir: Path) -> float:
    """Seconds until the first progress line on stderr; the run is then stopped with SIGINT."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=environment())
    try:
        for line in child.stderr:
            if line.strip() and not line[0].isspace() and "Warning" not in line:
                seconds = time.perf_counter() - start
                break
        else:
            raise SystemExit(f"{' '.join(command)} ended without a progress line (exit {child.wait()})")
        child.send_signal(signal.SIGINT)
        child.stderr.read()
        code = child.wait(timeout=300)
        if code != 130:
            raise SystemExit(f"{' '.join(command)}: Ctrl-C after the first line gave exit code {code}, not 130")
        return seconds
    finally:
        if child.poll() is None:
            child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per --help row and of the baseline (default 7)")
    parser.add_argument("--line-repeats", type=int, default=3, help="runs per first-line row (default 3; 0: no such rows)")
    parser.add_argument("--scripts", default=",".join(SCRIPTS), help=f"comma list from {','.join(SCRIPTS)} (default all)")
    args = parser.parse_args()
    scripts = [name.strip() for name in args.scripts.split(",") if name.strip()]
    unknown = sorted(set(scripts) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown script(s) {', '.join(unknown)}")

    helps = {BASELINE[0]: BASELINE[1]} | {f"{name}.py --help": [sys.executable, str(REPO / "scripts" / f"{name}.py"), "--help"]
                                         for name in scripts}
    seconds: dict[str, list[float]] = {label: [] for label in helps}
    seconds_to_exit(BASELINE[1])  # warm the file cache once
    for _ in range(args.repeats):  # interleaved, so that a busy spell of the machine hits every row
        for label, command in helps.items():
            seconds[label].append(seconds_to_exit(command))

    lines: dict[str, list[float]] = {f"{name}.py (first line)": [] for name in scripts} if args.line_repeats else {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        for repeat in range(args.line_repeats):
            for name in scripts:
                out = Path(scratch) / f"{name}-{repeat}"
                command = [sys.executable, str(REPO / "scripts" / f"{name}.py"), *small_job(name, out)]
                lines[f"{name}.py (first line)"].append(seconds_to_first_line(command, Path(scratch)))

    baseline = statistics.median(seconds[BASELINE[0]])
    print(f"Start-up on {os.cpu_count()} cores, Python {sys.version.split()[0]}: medians of {args.repeats} runs "
          f"(--help) and {args.line_repeats} runs (first progress line)\n")
    print("| command | median s | runs | x numpy import |")
    print("| --- | ---: | ---: | ---: |")
    for label, values in {**seconds, **lines}.items():
        median = statistics.median(values)
        print(f"| `{label}` | {median:.3f} | {len(values)} | {median / baseline:.1f} |")


if __name__ == "__main__":
    main()
