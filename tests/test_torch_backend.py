"""The torch backend: t-SNE (TorchDR), MDS (the torch SMACOF), PCA and the Gaussian mixture
(scikit-learn's Array API) on torch's device; the rest on the CPU (or cuML).

* which backend ``auto`` picks, and where each algorithm then runs, asked of the one table with
  "can cuML run here?" and "which device can torch use?" answered through the two functions
  that answer them (:func:`reduction.backend.cuml_status`, :func:`reduction.backend.torch_status`);
* that second question asked for real: a CUDA device that torch reports but cannot use is none;
* ``--backend torch`` where torch cannot run: one line, exit code 2, nothing written;
* each unsupervised script and the whole study with ``--backend torch --quick`` on a CPU, in a
  fresh interpreter (scikit-learn's Array API needs SciPy imported with ``SCIPY_ARRAY_API=1``,
  as the scripts arrange): every step's place recorded, the report written.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import HAS_CUDA, REPO_ROOT, load_script, requires_cuda
from test_study import TINY

from cli_kit import run_main
from reduction import backend
from reduction.backend import Backend, BackendError, CumlStatus, TorchStatus, place_name, select_backend, where

ALGORITHMS = ("pca", "random_forest", "tsne", "lle", "mds", "kmeans", "silhouette", "gaussian_mixture")
NO_CUML = CumlStatus(False, False, "cuML is not installed or does not import (ModuleNotFoundError: No module named 'cuml')")
BROKEN_CUML = CumlStatus(False, True, "cuML imports, but CuPy sees no CUDA device")
CUML = CumlStatus(True, True, "cuML and 1 CUDA device(s) usable through CuPy")
TORCH_CUDA = TorchStatus(True, "cuda", "torch can use 1 CUDA device(s)")
TORCH_CPU = TorchStatus(True, "cpu", "torch sees no CUDA device")
# The CPU's MDS, as the table says (its "torch-cpu" entry is the one line that chooses).
CPU_MDS = "torch-cpu" if "torch-cpu" in backend.IMPLEMENTATIONS["mds"] else "sklearn"


@pytest.fixture
def machine(monkeypatch):
    """``machine(cuml, torch)``: the answers of the two functions that ask the machine."""

    def answer(cuml: CumlStatus, torch: TorchStatus) -> None:
        monkeypatch.setattr(backend, "cuml_status", lambda: cuml)
        monkeypatch.setattr(backend, "torch_status", lambda: torch)

    return answer


@pytest.fixture
def notes(caplog):
    caplog.set_level(logging.WARNING, logger="sign_mnist_lab")
    return lambda: [record.getMessage() for record in caplog.records]


def places(chosen: Backend) -> dict[str, str]:
    return {algorithm: place_name(where(algorithm, chosen), chosen) for algorithm in ALGORITHMS}


# ---- which backend, and where each algorithm runs -------------------------------------------


def test_auto_picks_torch_where_torch_has_a_cuda_device_and_cuml_cannot_run(machine, notes):
    machine(NO_CUML, TORCH_CUDA)
    chosen = select_backend("auto")
    assert chosen == Backend("torch", "cuda") and chosen.uses_gpu
    assert places(chosen) == {
        "pca": "sklearn-cuda", "gaussian_mixture": "sklearn-cuda", "tsne": "torch-cuda", "mds": "torch-cuda",
        "random_forest": "sklearn", "kmeans": "sklearn", "silhouette": "sklearn", "lle": "sklearn",
    }
    assert not notes()  # no cuML installed: nothing to say
    machine(BROKEN_CUML, TORCH_CUDA)
    assert select_backend("auto") == Backend("torch", "cuda")
    assert [note for note in notes() if "CuPy sees no CUDA device" in note] == [
        "note: cuML imports, but CuPy sees no CUDA device; using torch on cuda"]


def test_auto_picks_cuml_where_cuml_can_run_and_torch_takes_what_cuml_lacks(machine):
    machine(CUML, TORCH_CUDA)
    chosen = select_backend("auto")
    assert chosen == Backend("cuml", "cuda")
    assert places(chosen) == {
        "pca": "cuml", "random_forest": "cuml", "tsne": "cuml", "kmeans": "cuml", "silhouette": "cuml",
        "mds": "torch-cuda", "gaussian_mixture": "sklearn-cuda", "lle": "sklearn",
    }
    machine(CUML, TORCH_CPU)  # a CPU-only torch beside cuML: what cuML lacks runs on the CPU
    assert places(select_backend("auto"))["gaussian_mixture"] == "sklearn"
    assert places(select_backend("auto"))["mds"] == CPU_MDS


def test_auto_picks_scikit_learn_without_cuml_or_a_cuda_device(machine):
    machine(NO_CUML, TORCH_CPU)
    chosen = select_backend("auto")
    assert chosen == Backend("sklearn") and not chosen.uses_gpu
    assert places(chosen) == {algorithm: "sklearn" for algorithm in ALGORITHMS} | {"mds": CPU_MDS}


def test_the_torch_backend_on_a_cpu_runs_the_torch_places_there(machine):
    machine(NO_CUML, TORCH_CPU)
    chosen = select_backend("torch")
    assert chosen == Backend("torch", "cpu") and not chosen.uses_gpu
    assert places(chosen) == {
        "pca": "sklearn-cpu", "gaussian_mixture": "sklearn-cpu", "tsne": "torch-cpu", "mds": "torch-cpu",
        "random_forest": "sklearn", "kmeans": "sklearn", "silhouette": "sklearn", "lle": "sklearn",
    }
    machine(CUML, TORCH_CPU)  # with cuML usable, the forests and K-Means take it
    assert {algorithm: place for algorithm, place in places(select_backend("torch")).items() if place == "cuml"} == {
        "random_forest": "cuml", "kmeans": "cuml", "silhouette": "cuml"}


def test_the_cpu_mds_place_is_one_line_of_the_table(machine, monkeypatch):
    """With the table's "torch-cpu" entry for MDS, the CPU's MDS is the torch SMACOF; without it,
    scikit-learn's."""
    machine(NO_CUML, TORCH_CPU)
    row = {**backend.IMPLEMENTATIONS["mds"], "torch-cpu": backend.IMPLEMENTATIONS["mds"]["torch-device"]}
    monkeypatch.setitem(backend.IMPLEMENTATIONS, "mds", row)
    assert places(select_backend("sklearn"))["mds"] == "torch-cpu"
    row = {place: name for place, name in backend.IMPLEMENTATIONS["mds"].items() if place != "torch-cpu"}
    monkeypatch.setitem(backend.IMPLEMENTATIONS, "mds", row)
    assert places(select_backend("sklearn"))["mds"] == "sklearn"
    assert places(select_backend("torch"))["mds"] == "torch-cpu"  # the torch backend's own device place


# ---- "which device can torch use?", asked for real ------------------------------------------


@pytest.fixture
def fresh_torch_status():
    backend.torch_status.cache_clear()
    yield backend.torch_status
    backend.torch_status.cache_clear()


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present (the test makes torch report one that is not)")
def test_a_cuda_device_torch_reports_but_cannot_use_is_none(fresh_torch_status, monkeypatch):
    import torch

    assert fresh_torch_status() == TorchStatus(True, "cpu", "torch sees no CUDA device")
    backend.torch_status.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # reported, but the round trip fails
    status = fresh_torch_status()
    assert status.usable and status.device == "cpu" and status.reason.startswith("torch cannot use the CUDA device ("), status


def test_no_torchdr_means_no_torch_backend(fresh_torch_status, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchdr" else find_spec(name, *a))
    status = fresh_torch_status()
    assert not status.usable and "TorchDR" in status.reason
    with pytest.raises(BackendError, match="backend 'torch' was asked for, but TorchDR"):
        select_backend("torch")


def test_torch_backend_where_torch_cannot_run_is_one_line_and_exit_2(machine, synthetic_data_dir, tmp_path, capsys):
    machine(NO_CUML, TorchStatus(False, None, "torch does not import (ImportError: libtorch_cpu.so: cannot open shared object file)"))
    for name in ("pca_forest", "embed", "cluster", "study"):
        out = tmp_path / name
        argv = ["--data-dir", str(synthetic_data_dir), "--out", str(out), "--backend", "torch", "--quick"]
        assert run_main(load_script(name).main, argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("error: backend 'torch' was asked for, but torch does not import (ImportError"), err
        assert not out.exists()


def test_a_torch_t_sne_on_the_cpu_beyond_its_size_says_so(monkeypatch, notes):
    from reduction.estimators import TSNE
    from reduction.estimators import embedding

    monkeypatch.setattr(embedding, "TORCH_CPU_TSNE_ROWS", 50)
    X = np.random.default_rng(0).normal(size=(60, 5))
    TSNE(perplexity=5.0, max_iter=250, random_state=0, backend="torch").fit(X)
    said = [note for note in notes() if "TorchDR on the CPU" in note]
    assert len(said) == 1 and "all 60^2 pairs" in said[0] and "--backend sklearn" in said[0]


def fresh_interpreter(code: str, cwd) -> str:
    """Run ``code`` in a fresh interpreter whose first lines switch SciPy's Array API support on
    (scikit-learn's Array API needs it before SciPy loads); its last line of output."""
    env = {name: value for name, value in os.environ.items() if name != "SCIPY_ARRAY_API"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    code = "from reduction.backend import enable_scipy_array_api\nenable_scipy_array_api()\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_pca_and_the_mixture_on_the_torch_backend_are_scikit_learns_on_torch_tensors(tmp_path):
    """On the torch backend's device (the CPU here) PCA and the Gaussian mixture are fitted on torch
    tensors with scikit-learn's Array API dispatch, and give what scikit-learn gives on NumPy."""
    assert fresh_interpreter("""
        import numpy as np, torch
        from reduction.estimators import PCA, GaussianMixture
        X = np.random.default_rng(0).normal(size=(200, 12)) * np.linspace(1, 5, 12)
        device, numpy = PCA(0.9, backend="torch").fit(X), PCA(0.9, backend="sklearn").fit(X)
        assert device.place_ == "sklearn-cpu" and isinstance(device.estimator_.components_, torch.Tensor)
        assert numpy.place_ == "sklearn" and isinstance(numpy.estimator_.components_, np.ndarray)
        assert device.n_components_ == numpy.n_components_
        np.testing.assert_allclose(device.cumulative_variance_, numpy.cumulative_variance_, rtol=1e-4)
        Z = device.transform(X)
        assert type(Z) is np.ndarray and Z.dtype == np.float32
        np.testing.assert_allclose(np.abs(Z), np.abs(numpy.transform(X)), atol=1e-3)
        np.testing.assert_allclose(device.inverse_transform(Z), numpy.inverse_transform(numpy.transform(X)), atol=1e-3)
        mixture = GaussianMixture(3, random_state=0, backend="torch").fit(X)
        assert mixture.place_ == "sklearn-cpu" and isinstance(mixture.estimator_.means_, torch.Tensor)
        reference = GaussianMixture(3, random_state=0, backend="sklearn").fit(X)
        assert np.isclose(mixture.lower_bound_, reference.lower_bound_, rtol=1e-9)
        print("ok")
    """, tmp_path) == "ok"


# ---- the scripts and the whole study on the torch backend, on the CPU -----------------------

# Each entry point run as `python scripts/X.py ARGS` runs it, one after another in one fresh
# interpreter that switches SciPy's Array API support on first (the scripts' own first lines).
RUNNER = """
import json, runpy, sys
from reduction.backend import enable_scipy_array_api
enable_scipy_array_api()
from threadpoolctl import threadpool_limits
sys.path.insert(0, {scripts!r})
codes = []
with threadpool_limits(limits=1):
    for script, args in json.loads(sys.argv[1]):
        sys.argv = [script, *args]
        try:
            runpy.run_path(f"{scripts}/{{script}}.py", run_name="__main__")
            codes.append(0)
        except SystemExit as stop:
            codes.append(stop.code)
print(json.dumps(codes))
"""

# The steps of each study that run on torch's device (the CPU here) and their places; every other
# step with a place runs on scikit-learn's CPU place, "sklearn".
ON_THE_DEVICE = {
    "pca_forest": {"pca_fit": "sklearn-cpu", "pca_transform": "sklearn-cpu", "pca_reconstruct": "sklearn-cpu"},
    "embed": {"pca_fit": "sklearn-cpu", "tsne_fit": "torch-cpu", "mds_fit": "torch-cpu"},
    "cluster": {"pca_fit": "sklearn-cpu", "pca_transform": "sklearn-cpu", "gmm_sweep": "sklearn-cpu",
                "gmm_generate": "sklearn-cpu"},
}


def assert_on_torch(results: dict, study: str) -> None:
    placed = {name: entry["place"] for name, entry in results["steps"].items() if entry.get("place")}
    assert {name: place for name, place in placed.items() if place != "sklearn"} == ON_THE_DEVICE[study], placed
    assert results["backend"] == {"requested": "torch", "selected": "torch", "device": "cpu"}


@pytest.fixture(scope="module")
def torch_runs(tmp_path_factory):
    """scripts/pca_forest.py, embed.py, cluster.py and study.py with --backend torch --quick on
    small synthetic CSVs, in one fresh interpreter: {name: output folder}, and its stderr."""
    from datamodules.synthetic import write_synthetic_csvs

    root = tmp_path_factory.mktemp("torch-backend")
    data = root / "data"
    write_synthetic_csvs(data, n_train=600, n_test=240, seed=0)
    common = ["--data-dir", str(data), "--backend", "torch", "--quick"]
    tiny = [setting if not setting.startswith("embed.methods=") else "embed.methods=pca,tsne,lle,mds" for setting in TINY]
    runs = [
        ("pca_forest", [*common, "--out", str(root / "pca_forest"), "--no-cache", "--quiet", "--raw-trees", "3,6",
                        "--raw-depths", "2,4", "--pca-trees", "3", "--pca-depths", "2,4"]),
        ("embed", [*common, "--out", str(root / "embed")]),
        ("cluster", [*common, "--out", str(root / "cluster"), "--sample-size", "300", "--k", "3,6", "--kmeans-n-init", "2",
                     "--gmm-n-init", "1", "--quiet"]),
        ("study", [*common, "--out", str(root / "study"), *[item for setting in tiny for item in ("--set", setting)]]),
    ]
    env = {name: value for name, value in os.environ.items() if name != "SCIPY_ARRAY_API"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    code = textwrap.dedent(RUNNER.format(scripts=str(REPO_ROOT / "scripts")))
    done = subprocess.run([sys.executable, "-c", code, json.dumps(runs)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0, 0, 0, 0], done.stderr[-5000:]
    return {name: root / name for name, _ in runs}, done.stderr


@pytest.mark.parametrize("study", ["pca_forest", "embed", "cluster"])
def test_each_unsupervised_script_runs_on_the_torch_backend(torch_runs, study):
    folders, _ = torch_runs
    results = json.loads((folders[study] / "results.json").read_text())
    assert_on_torch(results, study)
    assert results["versions"]["torch"] and all((folders[study] / path).is_file() for path in results["figures"].values())
    if study == "embed":
        for method in ("pca", "tsne", "lle", "mds"):
            assert results["methods"][method]["trustworthiness"] > 0.8, method
        assert results["methods"]["tsne"]["parameters"]["device"] == "cpu"
        assert results["methods"]["mds"]["parameters"]["dtype"] == "float64"
        assert results["methods"]["mds"]["init_draws"] == "seeded"
        assert results["versions"]["torchdr"] == "0.5"
    if study == "cluster":
        assert results["gmm"]["place"] == "sklearn-cpu" and results["kmeans"]["place"] == "sklearn"


def test_the_whole_study_runs_on_the_torch_backend(torch_runs):
    folders, stderr = torch_runs
    out = folders["study"]
    for study in ON_THE_DEVICE:
        assert_on_torch(json.loads((out / study / "results.json").read_text()), study)
    embed = json.loads((out / "embed" / "results.json").read_text())
    assert {"tsne_fit", "mds_fit", "lle_fit", "pca_fit"} <= set(embed["steps"])
    report = (out / "report.md").read_text()
    assert report.count("| torch (asked: torch) |") == 3  # the three unsupervised parts
    for step, place in (("tsne_fit", "torch-cpu"), ("mds_fit", "torch-cpu"), ("gmm_sweep", "sklearn-cpu")):
        assert f"| {step} |" in report and f"| {place} |" in report, step
    assert (out / "report.html").stat().st_size > 1000
    assert "t-SNE (TorchDR) iteration" in stderr or "t-SNE (TorchDR): done" in stderr


# ---- the same on a CUDA device --------------------------------------------------------------


@pytest.mark.gpu
@requires_cuda
def test_the_torch_places_run_on_cuda(tmp_path):
    """auto (without cuML) or torch: t-SNE, MDS, PCA and the mixture on the CUDA device."""
    code = """
        import numpy as np
        from reduction.backend import select_backend
        from reduction.estimators import MDS, PCA, TSNE, GaussianMixture
        from reduction.backend import cuml_status
        assert select_backend("torch").device == "cuda"
        assert cuml_status().usable or select_backend("auto") == select_backend("torch")
        X = np.random.default_rng(0).normal(size=(300, 20))
        fits = [TSNE(perplexity=10.0, max_iter=300, random_state=0, backend="torch").fit(X),
                MDS(n_init=2, max_iter=50, random_state=0, backend="torch").fit(X),
                PCA(0.9, backend="torch").fit(X), GaussianMixture(3, random_state=0, backend="torch").fit(X)]
        print([fit.place_ for fit in fits])
    """
    assert fresh_interpreter(code, tmp_path) == "['torch-cuda', 'torch-cuda', 'sklearn-cuda', 'sklearn-cuda']"
