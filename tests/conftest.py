"""Shared fixtures and skip markers.

GPU tests are real GPU tests: they skip, naming what is missing, where cuML or CUDA is absent.
cuML is detected as the library asks for it (:func:`reduction.backend.cuml_status`: ``import
cuml`` inside ``try``, then CuPy's device query), so a cuML that is installed but broken skips
the real-cuML tests instead of failing them. The cuML glue also runs on any CPU through the
stand-in in ``tests/cuml_standin`` (fixture :func:`cuml_standin`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from reduction.backend import CumlStatus, cuml_status

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_DATA_DIR = REPO_ROOT / "data"
CUML_STANDIN_DIR = Path(__file__).resolve().parent / "cuml_standin"


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


CUML_STATUS = cuml_status()  # before any test can put the stand-in on the path
HAS_CUML = CUML_STATUS.imports  # `import cuml` works (not merely: a `cuml` is on the path)
HAS_CUDA = _cuda_available()  # torch's CUDA: the MLPs and scikit-learn's Array API paths

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="requires CUDA")
requires_cuml = pytest.mark.skipif(
    not CUML_STATUS.usable, reason="requires cuml" if not HAS_CUML else f"requires CUDA ({CUML_STATUS.reason})"
)


def _cuml_modules() -> list[str]:
    return [name for name in sys.modules if name == "cuml" or name.startswith("cuml.")]


@pytest.fixture
def cuml_importable(monkeypatch):
    """The cuML stand-in (tests/cuml_standin/cuml) importable as ``cuml``, for this test only:
    afterwards ``cuml`` is what it was before (absent, or the real one) and ``sys.path`` is
    restored. "Can cuML run here?" is not touched (see :func:`cuml_standin`)."""
    for name in _cuml_modules():
        monkeypatch.delitem(sys.modules, name)  # restored at teardown
    monkeypatch.syspath_prepend(str(CUML_STANDIN_DIR))
    import cuml

    assert getattr(cuml, "STANDIN", False), f"imported {cuml.__file__}, not the stand-in"
    yield cuml
    for name in _cuml_modules():
        del sys.modules[name]


@pytest.fixture
def cuml_standin(cuml_importable, monkeypatch):
    """The stand-in as ``cuml`` and "can cuML run here?" answered yes through the one function
    that answers it (:func:`reduction.backend.cuml_status`): ``backend="cuml"`` and ``auto``
    then run the library's real cuML glue against the stand-in, in this process."""
    import reduction.backend as backend

    monkeypatch.setattr(backend, "cuml_status", lambda: CumlStatus(True, True, "the cuML stand-in in tests/cuml_standin"))
    return cuml_importable


def choose_cpu_mds_place(monkeypatch, place: str) -> None:
    """Make ``place`` ("torch-cpu" or "sklearn") the CPU's MDS in the one table
    (``reduction.backend.IMPLEMENTATIONS``), for this test only."""
    import reduction.backend as backend

    row = dict(backend.IMPLEMENTATIONS["mds"])
    if place == "sklearn":
        row.pop("torch-cpu", None)
    else:
        row["torch-cpu"] = row["torch-device"]
    monkeypatch.setitem(backend.IMPLEMENTATIONS, "mds", row)


@pytest.fixture(params=["torch-cpu", "sklearn"])
def cpu_mds_place(request, monkeypatch) -> str:
    """Each of the CPU's two MDS places in turn: the torch SMACOF and scikit-learn's."""
    choose_cpu_mds_place(monkeypatch, request.param)
    return request.param


@pytest.fixture
def sklearn_mds(monkeypatch) -> None:
    """scikit-learn's MDS as the CPU's MDS (for tests of its own prints and parallel processes)."""
    choose_cpu_mds_place(monkeypatch, "sklearn")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own data cache, so no test depends on another's leftovers."""
    monkeypatch.setenv("SIGN_MNIST_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def synthetic_data_dir(tmp_path):
    """A folder with small Kaggle-format CSVs (600 train rows, 240 test rows)."""
    from datamodules.synthetic import write_synthetic_csvs

    write_synthetic_csvs(tmp_path / "data", n_train=600, n_test=240, seed=0)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def _real_data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("real-data-cache")


@pytest.fixture
def real_data_dir(_real_data_cache, monkeypatch):
    """The shipped Kaggle CSVs, with one parse cache shared by the whole session."""
    if not (REAL_DATA_DIR / "sign_mnist_train.csv.gz").is_file():
        pytest.skip("the real Sign-MNIST CSVs are not in data/")
    monkeypatch.setenv("SIGN_MNIST_CACHE_DIR", str(_real_data_cache))
    return REAL_DATA_DIR


def load_script(name: str):
    """``scripts/<name>.py`` as a module, so that tests call its ``main`` in-process.

    A script may set environment variables for its own process when loaded (cluster.py sets
    SCIPY_ARRAY_API); they are undone, so the rest of the session sees the environment it had.
    """
    saved = dict(os.environ)
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return module


@pytest.fixture
def single_thread():
    """One BLAS/OpenMP thread: tiny arrays gain nothing from more, and on a busy 2-core machine
    idle threads spin-wait on each other (t-SNE and PCA tests ran up to 50x slower)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def interrupt_script(script: Path, *args, cwd: Path, after: str, timeout: float = 300, signal_number=None,
                     env: dict | None = None):
    """Run ``script`` in a child process, send it a real signal (SIGINT unless ``signal_number``
    says otherwise) once ``after`` shows on its stderr.

    Returns (exit code, stdout, stderr). The child's SIGINT is reset to the default before exec:
    a child of a background job in a non-interactive shell (CI) would otherwise inherit "ignore".
    ``env`` adds variables to the child's environment (``PYTHONPROFILEIMPORTTIME=1`` makes the
    interpreter write a line to stderr as each module finishes importing, so that ``after`` can
    name a moment inside the heavy imports).
    """
    import re
    import signal
    import subprocess
    import sys
    import time

    def default_sigint():
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    stdout_path = cwd / "interrupted-stdout.txt"
    with open(stdout_path, "w") as stdout:
        child = subprocess.Popen(
            [sys.executable, str(script), *map(str, args)],
            cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
            env={**os.environ, **(env or {})},
        )
        seen, deadline = [], time.monotonic() + timeout
        try:
            for line in child.stderr:
                seen.append(line)
                if re.search(after, line):
                    child.send_signal(signal.SIGINT if signal_number is None else signal_number)
                    break
                if time.monotonic() > deadline:
                    break
            else:
                raise AssertionError(f"{script.name} ended before {after!r}:\n{''.join(seen)[-3000:]}")
            rest = child.stderr.read()
            code = child.wait(timeout=timeout)
        finally:
            if child.poll() is None:
                child.kill()
    return code, stdout_path.read_text(), "".join(seen) + rest


def leftover_temporary_files(root: Path) -> list[Path]:
    """Temporary files of atomic writes (``*.tmp*``) anywhere under ``root``."""
    return [path for path in root.rglob("*") if ".tmp" in path.name]
