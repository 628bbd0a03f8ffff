"""The cuML path on a machine without a GPU.

The library's real cuML glue runs against the cuML stand-in (tests/cuml_standin: cuML 26.10's
signatures, checks and conventions, scikit-learn underneath), with "can cuML run here?"
answered yes through the one function that answers it (fixture ``cuml_standin``). Here:

* the stand-in rejects what cuML rejects;
* the five defects of issue 15, each pinned by a test that fails on the code before the fix
  (``random_state`` to cuML's PCA; ``max_depth`` None or a NumPy integer to cuML's forest;
  squared distances from cuML's ``KMeans.transform``; the device question asked of torch;
  cuML's version looked up as cuml-cu12 only and detected in the tests with ``find_spec``);
* the whole study and each unsupervised script with ``--backend cuml``, end to end: every step
  that cuML has runs on "cuml", the results and report are written, and the numbers agree
  with the scikit-learn run.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, load_script, requires_cuml
from sklearn.datasets import make_blobs
from sklearn.metrics import euclidean_distances
from sklearn.model_selection import GridSearchCV

from cli_kit import run_main
from datamodules.synthetic import synthetic_arrays, write_synthetic_csvs
from reduction import backend
from reduction.backend import BackendError, CumlStatus, TorchStatus, select_backend
from reduction.estimators import PCA, KMeans, RandomForest
from reduction.estimators.forest import CUML_NO_DEPTH_LIMIT

pytestmark = pytest.mark.usefixtures("single_thread")

STANDIN_CLASSES = [
    ("cuml.decomposition", "PCA"),
    ("cuml.ensemble", "RandomForestClassifier"),
    ("cuml.cluster", "KMeans"),
    ("cuml.manifold", "TSNE"),
]


@pytest.fixture(scope="module")
def letters():
    """144 synthetic Sign-MNIST rows (uint8 pixels, 6 of each of the 24 letters, no J)."""
    return synthetic_arrays(144, seed=0)


def label_codes(y) -> np.ndarray:
    return np.unique(y, return_inverse=True)[1].astype(np.int32)


# ---- the stand-in rejects what cuML rejects ------------------------------------------------


@pytest.mark.parametrize("module, name", STANDIN_CLASSES)
def test_standin_constructors_are_keyword_only_without_kwargs(cuml_importable, module, name):
    cls = getattr(importlib.import_module(module), name)
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    assert {p.kind for p in params} == {inspect.Parameter.KEYWORD_ONLY}  # no positional, no **kwargs
    assert set(cls._get_param_names()) == {p.name for p in params}  # get_params sees every one
    with pytest.raises(TypeError):
        cls(no_such_parameter=1)
    with pytest.raises(TypeError):
        cls(2)


def test_standin_pca_rejects_random_state(cuml_importable):
    from cuml.decomposition import PCA as CumlPCA

    with pytest.raises(TypeError, match="random_state"):
        CumlPCA(n_components=2, random_state=0)


def test_standin_forest_rejects_a_numpy_integer_depth(cuml_importable, letters):
    from cuml.ensemble import RandomForestClassifier

    X, y = letters[0].astype(np.float32), label_codes(letters[1])
    with pytest.raises(ValueError, match="max_depth must be a positive integer or None"):
        RandomForestClassifier(n_estimators=2, max_depth=np.int64(4)).fit(X, y)
    assert RandomForestClassifier(n_estimators=2, max_depth=4).fit(X, y).n_classes_ == 24
    assert RandomForestClassifier(n_estimators=2, max_depth=None).fit(X, y).n_classes_ == 24  # unlimited


def test_standin_holds_the_project_to_float32_features_and_label_codes(cuml_importable, letters):
    from cuml.cluster import KMeans as CumlKMeans
    from cuml.decomposition import PCA as CumlPCA
    from cuml.ensemble import RandomForestClassifier
    from cuml.manifold import TSNE as CumlTSNE
    from cuml.metrics.cluster import silhouette_score

    X64, labels = letters[0].astype(np.float64), letters[1]
    for fit in (CumlPCA(n_components=2).fit, CumlKMeans(n_clusters=2).fit, CumlTSNE().fit):
        with pytest.raises(TypeError, match="float32"):
            fit(X64)
    with pytest.raises(TypeError, match="float32"):
        silhouette_score(X64, label_codes(labels))
    X = X64.astype(np.float32)
    with pytest.raises(TypeError, match="int32"):
        RandomForestClassifier(n_estimators=2).fit(X, labels.astype(np.int64))
    with pytest.raises(ValueError, match="0..k-1"):
        RandomForestClassifier(n_estimators=2).fit(X, labels.astype(np.int32))  # 0..24 without 9


def test_standin_kmeans_transform_squares_until_the_fix(cuml_importable, monkeypatch):
    from cuml.cluster import KMeans as CumlKMeans

    X = make_blobs(60, n_features=3, centers=3, random_state=0)[0].astype(np.float32)
    model = CumlKMeans(n_clusters=3, n_init=1, random_state=0).fit(X)
    plain = euclidean_distances(X, model.cluster_centers_)
    np.testing.assert_allclose(model.transform(X), plain**2, rtol=1e-4, atol=1e-3)  # cuML <= 26.10
    monkeypatch.setattr(cuml_importable.cluster.kmeans, "TRANSFORM_SQUARED", False)
    np.testing.assert_allclose(model.transform(X), plain, rtol=1e-4, atol=1e-3)  # after NVIDIA/cuml#8536


# ---- defect 1: cuML's PCA takes no random_state --------------------------------------------


def test_pca_on_cuml_passes_no_random_state(cuml_standin, letters):
    X = letters[0]
    gpu = PCA(0.95, backend="cuml", random_state=0).fit(X)
    cpu = PCA(0.95, backend="sklearn", random_state=0).fit(X)
    assert gpu.place_ == "cuml" and type(gpu.estimator_).__module__ == "cuml.decomposition.pca"
    assert "random_state" not in gpu.estimator_.get_params()
    assert cpu.estimator_.random_state == 0  # scikit-learn's PCA still gets it
    assert abs(gpu.n_components_ - cpu.n_components_) <= 1
    np.testing.assert_allclose(gpu.cumulative_variance_, cpu.cumulative_variance_, atol=1e-4)
    fixed = PCA(5, backend="cuml", random_state=0).fit(X)
    assert fixed.n_components_ == 5 and fixed.transform(X).shape == (len(X), 5)
    assert fixed.inverse_transform(fixed.transform(X)).shape == X.shape


# ---- defect 2: max_depth None and NumPy integers on cuML's forest --------------------------


def test_a_numpy_integer_depth_reaches_cuml_as_a_python_int(cuml_standin, letters):
    X, y = letters
    forest = RandomForest(5, np.int64(4), backend="cuml", random_state=0).fit(X, y)
    assert forest.place_ == "cuml"
    assert type(forest.estimator_.max_depth) is int and forest.estimator_.max_depth == 4
    assert forest.params_ == {"n_estimators": 5, "max_depth": 4, "random_state": 0}  # no n_jobs for cuML
    assert set(forest.predict(X)) <= set(y)  # codes decoded back to the letters (no 9)


def test_grid_search_over_numpy_depths_on_cuml(cuml_standin, letters):
    """GridSearchCV hands over the NumPy integers of np.arange."""
    X, y = letters
    search = GridSearchCV(RandomForest(5, backend="cuml", random_state=0), {"max_depth": np.arange(2, 5)}, cv=2).fit(X, y)
    assert search.best_estimator_.place_ == "cuml" and search.best_params_["max_depth"] in (2, 3, 4)


@pytest.mark.parametrize("none_accepted", [True, False], ids=["cuml-26.04+", "cuml-25.02-26.02"])
def test_no_depth_limit_on_every_cuml(cuml_standin, monkeypatch, letters, none_accepted):
    """max_depth=None is "no limit" on both backends: on cuML the int32 maximum, which cuML
    26.04+ itself puts in place of None and every cuML accepts (25.02-26.02 fail on None)."""
    monkeypatch.setattr(cuml_standin.ensemble.randomforest_common, "MAX_DEPTH_NONE_ACCEPTED", none_accepted)
    X, y = letters
    unlimited = RandomForest(5, None, backend="cuml", random_state=0).fit(X, y)
    assert unlimited.estimator_.max_depth == CUML_NO_DEPTH_LIMIT == np.iinfo(np.int32).max
    assert RandomForest(5, None, backend="sklearn", random_state=0, n_jobs=1).fit(X, y).estimator_.max_depth is None


@pytest.mark.parametrize("backend_name", ["sklearn", "cuml"])
@pytest.mark.parametrize("depth", [0, -3, 2.5, True, "3"])
def test_forest_depth_is_checked_once_in_the_wrapper(request, letters, backend_name, depth):
    if backend_name == "cuml":
        request.getfixturevalue("cuml_standin")
    with pytest.raises(ValueError, match=r"max_depth must be None \(no limit\) or a positive integer"):
        RandomForest(3, depth, backend=backend_name, n_jobs=1).fit(*letters)


# ---- defect 3: K-Means distances are plain on every cuML -----------------------------------


@pytest.mark.parametrize("squared", [True, False], ids=["cuml-squares", "cuml-fixed"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 255.0])
def test_kmeans_transform_gives_plain_distances_on_every_cuml(cuml_standin, monkeypatch, squared, scale):
    """cuML up to 26.10 squares its distances, a fixed one does not; either way, and at any
    scale of the data (distances far below 1, around 1, in the thousands), ``transform`` gives
    plain Euclidean distances."""
    monkeypatch.setattr(cuml_standin.cluster.kmeans, "TRANSFORM_SQUARED", squared)
    X = (make_blobs(90, n_features=5, centers=3, random_state=1)[0] * scale / 10).astype(np.float32)
    model = KMeans(3, n_init=2, backend="cuml", random_state=0).fit(X)
    expected = euclidean_distances(X.astype(np.float64), model.cluster_centers_.astype(np.float64))
    np.testing.assert_allclose(model.transform(X), expected, rtol=1e-4, atol=1e-5 * scale)
    assert model.transform(X).dtype == np.float32
    assert model.place_ == "cuml" and model.backend_squares_distances_ is squared


def test_kmeans_on_scikit_learn_needs_no_root():
    X = make_blobs(60, n_features=3, centers=3, random_state=0)[0]
    model = KMeans(3, n_init=2, backend="sklearn", random_state=0).fit(X)
    assert model.backend_squares_distances_ is False
    np.testing.assert_allclose(model.transform(X), euclidean_distances(X, model.cluster_centers_), rtol=1e-4)


# ---- defect 4: "can cuML run here?" asked as cuML asks it ----------------------------------


def fake_cupy(device_count: int = 1, error: Exception | None = None) -> types.ModuleType:
    """A CuPy whose device query answers ``device_count`` or raises ``error``."""

    def get_device_count():
        if error is not None:
            raise error
        return device_count

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    cupy.asarray = lambda array: types.SimpleNamespace(get=lambda: np.asarray(array))
    return cupy


@pytest.fixture
def fresh_status():
    """:func:`reduction.backend.cuml_status` asked afresh (it answers once per process), and
    its cache cleared again afterwards, so that the rest of the session gets the real answer."""
    backend.cuml_status.cache_clear()
    yield backend.cuml_status
    backend.cuml_status.cache_clear()


@pytest.fixture
def warnings_log(caplog):
    caplog.set_level(logging.WARNING, logger="sign_mnist_lab")
    return caplog


def test_cuml_runs_where_cupy_sees_a_device_even_with_a_cpu_only_torch(cuml_importable, fresh_status, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only torch
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(device_count=1))
    assert select_backend("auto").name == "cuml" and select_backend("cuml").name == "cuml"
    status = fresh_status()
    assert status.usable and status.imports, status


def test_a_device_cupy_cannot_use_falls_back_with_one_note(cuml_importable, fresh_status, monkeypatch, warnings_log):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # torch sees a GPU, but cannot use it either
    monkeypatch.setattr(backend, "torch_status", lambda: TorchStatus(True, "cpu", "torch cannot use the CUDA device"))
    reason = "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(error=RuntimeError(reason + "\nmore detail")))  # ...CuPy cannot use
    assert select_backend("auto").name == "sklearn"
    assert select_backend("auto").name == "sklearn"
    status = fresh_status()
    assert not status.usable and status.imports and "cudaErrorInsufficientDriver" in status.reason
    notes = [record.getMessage() for record in warnings_log.records if "cudaErrorInsufficientDriver" in record.getMessage()]
    assert len(notes) == 1 and "using scikit-learn" in notes[0], notes
    with pytest.raises(BackendError) as error:
        select_backend("cuml")
    message = str(error.value)
    assert len(message.splitlines()) == 1 and reason in message and "--backend sklearn" in message


@pytest.mark.parametrize(
    "cupy, expected",
    [(fake_cupy(device_count=0), "CuPy sees no CUDA device"), (None, "CuPy does not (ModuleNotFoundError")],
    ids=["no-device", "no-cupy"],
)
def test_no_device_or_no_cupy_means_no_cuml(cuml_importable, fresh_status, monkeypatch, cupy, expected):
    monkeypatch.setitem(sys.modules, "cupy", cupy)  # None: `import cupy` raises ImportError
    status = fresh_status()
    assert not status.usable and status.imports and expected in status.reason, status


def test_a_cuml_that_does_not_import_is_no_cuml(tmp_path, fresh_status, monkeypatch, warnings_log):
    broken = tmp_path / "site" / "cuml"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("libcuml++.so: cannot open shared object file")\n')
    for name in [name for name in sys.modules if name == "cuml" or name.startswith("cuml.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(backend, "torch_status", lambda: TorchStatus(True, "cpu", "torch sees no CUDA device"))
    status = fresh_status()
    assert not status.imports and not status.usable and "libcuml++.so" in status.reason
    assert select_backend("auto").name == "sklearn"
    assert not [record for record in warnings_log.records if "libcuml" in record.getMessage()]  # no cuML: quietly CPU


def test_cuml_backend_where_cuml_cannot_run_is_one_line_and_exit_2(synthetic_data_dir, tmp_path, monkeypatch, capsys):
    status = CumlStatus(False, True, "cuML imports, but CuPy sees no CUDA device")
    monkeypatch.setattr(backend, "cuml_status", lambda: status)
    for name in ("pca_forest", "embed", "cluster"):
        out = tmp_path / name
        assert run_main(load_script(name).main, ["--data-dir", str(synthetic_data_dir), "--out", str(out), "--backend", "cuml"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: backend 'cuml' was asked for, but cuML imports"), err
        assert not out.exists()


# ---- defect 5: cuML's version from any install; detection by import -----------------------


@pytest.mark.parametrize("distribution", ["cuml-cu13", "cuml-cu12", "cuml"])
def test_cuml_version_is_read_from_whichever_distribution_installed_it(tmp_path, monkeypatch, distribution):
    from reduction.studies.common import versions
    from whole_study.parts import library_versions

    if backend.cuml_distribution() is not None:
        pytest.skip(f"a real cuML is installed here ({backend.cuml_distribution()})")
    site = tmp_path / "site"
    info = site / f"{distribution.replace('-', '_')}-26.10.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 26.10.0\n")
    for name in [name for name in sys.modules if name == "cuml" or name.startswith("cuml.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(site))
    assert library_versions()["cuml"] == f"26.10.0 ({distribution})"
    assert versions()["cuml"] == f"26.10.0 ({distribution})"


def test_versions_name_the_cuml_that_ran(cuml_standin):
    from reduction.studies.common import versions
    from whole_study.parts import library_versions

    assert versions()["cuml"] == "26.10.00+standin"  # the imported module: what ran
    assert library_versions()["cuml"] == backend.cuml_version(prefer_imported=False)  # metadata only, stable


def test_the_tests_detect_cuml_by_importing_it(tmp_path):
    """A cuML that is installed but broken (found on the path, failing to import) is no cuML
    for the tests' markers: the real-cuML tests skip, saying "requires cuml"."""
    broken = tmp_path / "site" / "cuml"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("libcuml++.so: cannot open shared object file")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO_ROOT / "tests"), str(REPO_ROOT)])}
    code = "import conftest; print(conftest.HAS_CUML, conftest.requires_cuml.kwargs['reason'], sep='|')"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False|requires cuml"


@pytest.mark.gpu
@requires_cuml
def test_the_glue_on_real_cuml(letters):
    """What the stand-in pins, on real cuML and a real device."""
    import cuml

    from reduction.studies.common import versions

    X, y = letters
    pca = PCA(0.95, backend="cuml", random_state=0).fit(X)  # no random_state reaches cuML's PCA
    assert pca.place_ == "cuml" and not getattr(cuml, "STANDIN", False)
    depth = RandomForest(5, np.int64(4), backend="cuml", random_state=0).fit(X, y)
    unlimited = RandomForest(5, None, backend="cuml", random_state=0).fit(X, y)
    assert set(depth.predict(X)) <= set(y) and set(unlimited.predict(X)) <= set(y)
    Z = pca.transform(X)
    model = KMeans(4, n_init=2, backend="cuml", random_state=0).fit(Z)
    expected = euclidean_distances(Z.astype(np.float64), model.cluster_centers_.astype(np.float64))
    np.testing.assert_allclose(model.transform(Z), expected, rtol=1e-3, atol=1e-2)
    assert versions()["cuml"] == str(cuml.__version__)


# ---- the whole cuML path, end to end, through the stand-in ---------------------------------

# The steps of each study that cuML has no algorithm for (everything else runs on "cuml").
NOT_ON_CUML = {
    "embed": {"lle_fit", "mds_fit"},
    "cluster": {"gmm_sweep", "gmm_generate"},  # GaussianMixture: scikit-learn (Array API where torch has CUDA)
    "pca_forest": set(),
}


def placed_steps(results: dict) -> dict[str, str]:
    return {name: entry["place"] for name, entry in results["steps"].items() if entry.get("place")}


def assert_on_cuml(results: dict, study: str, at_least: set[str]) -> None:
    places = placed_steps(results)
    assert at_least <= set(places), places
    assert {name for name, place in places.items() if place != "cuml"} <= NOT_ON_CUML[study], places
    assert results["backend"] == {"requested": "cuml", "selected": "cuml", "device": None}
    assert results["versions"]["cuml"] == "26.10.00+standin"


def run_script(name: str, argv: list[str]) -> dict:
    """``scripts/<name>.py`` in this process; its results.json."""
    assert run_main(load_script(name).main, argv) == 0
    return json.loads((Path(argv[argv.index("--out") + 1]) / "results.json").read_text())


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Synthetic Kaggle-format CSVs: 600 train rows (480 in the unsupervised training part)."""
    root = tmp_path_factory.mktemp("cuml-data")
    write_synthetic_csvs(root / "data", n_train=600, n_test=240, seed=0)
    return root / "data"


def test_study_runs_end_to_end_on_cuml(cuml_standin, small_data, tmp_path):
    from test_study import TINY

    out = tmp_path / "out"
    tiny = [setting if not setting.startswith("embed.methods=") else "embed.methods=pca,tsne,lle" for setting in TINY]
    argv = ["--data-dir", str(small_data), "--out", str(out), "--backend", "cuml", "--quick"]
    for setting in tiny:
        argv += ["--set", setting]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        assert run_main(load_script("study").main, argv) == 0
    expected = {
        "pca_forest": {"pca_fit", "pca_transform", "forest_grid_raw", "forest_grid_pca"},
        "embed": {"pca_fit", "tsne_fit", "lle_fit"},
        "cluster": {"pca_fit", "pca_transform", "kmeans_fits", "silhouettes", "gmm_sweep"},
    }
    for study, steps in expected.items():
        results = json.loads((out / study / "results.json").read_text())
        assert_on_cuml(results, study, steps)
    report = (out / "report.md").read_text()
    assert (out / "report.html").stat().st_size > 1000
    assert report.count("| cuml (asked: cuml) |") == 3  # the three unsupervised parts ran on cuML
    assert json.loads((out / "embed" / "results.json").read_text())["methods"]["tsne"]["trustworthiness"] > 0.8


@pytest.mark.slow  # a slice of the real data
def test_pca_forest_script_on_cuml_agrees_with_scikit_learn(cuml_standin, real_data_dir, tmp_path):
    common = ["--data-dir", str(real_data_dir), "--quick", "--limit-rows", "1500", "--no-cache", "--quiet",
              "--raw-trees", "10,30", "--raw-depths", "5,15", "--pca-trees", "10,30", "--pca-depths", "5,15"]
    gpu = run_script("pca_forest", [*common, "--backend", "cuml", "--out", str(tmp_path / "cuml")])
    cpu = run_script("pca_forest", [*common, "--backend", "sklearn", "--out", str(tmp_path / "sklearn")])
    assert_on_cuml(gpu, "pca_forest", {"pca_fit", "pca_transform", "forest_grid_raw", "forest_grid_pca",
                                        "forest_fit_time_comparison"})
    assert abs(gpu["n_components_95"] - cpu["n_components_95"]) <= 2
    for name in ("raw", "pca"):
        grid = gpu["forests"][name]
        assert grid["backend"] == "cuml" and grid["method"] == "per_depth"  # cuML's trees cannot be cut
        assert grid["forests_grown"] == len(grid["cells"]) == 4  # one forest per cell
        assert gpu["test"][name]["backend"] == "cuml"
        assert abs(gpu["test"][name]["test_accuracy"] - cpu["test"][name]["test_accuracy"]) <= 0.05
        assert gpu["test"][name]["test_accuracy"] > 0.3  # 24 letters: chance is about 0.04
    assert all((tmp_path / "cuml" / path).is_file() for path in gpu["figures"].values())


def test_embed_script_on_cuml_agrees_with_scikit_learn(cuml_standin, small_data, tmp_path):
    common = ["--data-dir", str(small_data), "--quick", "--methods", "pca,tsne,lle"]
    gpu = run_script("embed", [*common, "--backend", "cuml", "--out", str(tmp_path / "cuml")])
    cpu = run_script("embed", [*common, "--backend", "sklearn", "--out", str(tmp_path / "sklearn")])
    assert_on_cuml(gpu, "embed", {"pca_fit", "tsne_fit", "lle_fit"})
    assert gpu["methods"]["lle"]["place"] == "sklearn"  # cuML has no LLE
    for method in ("pca", "tsne", "lle"):
        assert gpu["methods"][method]["rows"] == cpu["methods"][method]["rows"] == 480
        for score in ("trustworthiness", "knn_accuracy"):
            assert abs(gpu["methods"][method][score] - cpu["methods"][method][score]) <= 0.05, (method, score)
    assert gpu["methods"]["tsne"]["parameters"]["learning_rate_method"] == "none"  # cuML's keywords, not scikit-learn's
    assert all((tmp_path / "cuml" / path).is_file() for path in gpu["figures"].values())


def test_cluster_script_on_cuml_agrees_with_scikit_learn(cuml_standin, small_data, tmp_path):
    common = ["--data-dir", str(small_data), "--quick", "--k", "3,6", "--sample-size", "400", "--quiet"]
    gpu = run_script("cluster", [*common, "--backend", "cuml", "--out", str(tmp_path / "cuml")])
    cpu = run_script("cluster", [*common, "--backend", "sklearn", "--out", str(tmp_path / "sklearn")])
    assert_on_cuml(gpu, "cluster", {"pca_fit", "pca_transform", "kmeans_fits", "silhouettes", "kmeans_sweep", "gmm_sweep"})
    assert gpu["kmeans"]["place"] == gpu["kmeans"]["silhouette_place"] == "cuml"
    assert abs(gpu["pca"]["n_components"] - cpu["pca"]["n_components"]) <= 2
    np.testing.assert_allclose(gpu["kmeans"]["inertia"], cpu["kmeans"]["inertia"], rtol=0.05)
    np.testing.assert_allclose(gpu["kmeans"]["silhouette"], cpu["kmeans"]["silhouette"], atol=0.05)
    assert all((tmp_path / "cuml" / path).is_file() for path in gpu["figures"].values())
