"""scripts/pca_forest.py end to end (synthetic and real data) and its one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import CUML_STATUS, REPO_ROOT, load_script

from cli_kit import run_main

SCRIPT = REPO_ROOT / "scripts" / "pca_forest.py"
TINY_GRIDS = ["--raw-trees", "3,6", "--raw-depths", "2,4", "--pca-trees", "3:6:3", "--pca-depths", "2,4"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def script():
    return load_script("pca_forest")


def run(script, argv) -> int:
    return run_main(script.main, argv)


def test_synthetic_run_writes_results_and_figures_and_resumes(script, synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--data-dir", str(synthetic_data_dir), "--out", str(out), "--backend", "sklearn", *TINY_GRIDS]
    assert run(script, argv) == 0
    captured = capsys.readouterr()
    assert "components explain 95% of the variance" in captured.out
    assert "[forests raw 2/2]" in captured.err

    results = json.loads((out / "results.json").read_text())
    for key in ("n_components_95", "variance_first_two", "pca", "forests", "test", "fit_time", "steps", "figures"):
        assert key in results, key
    assert results["study"] == "pca_forest" and results["profile"]["name"] == "full, custom"
    assert results["profile"]["raw_n_estimators"] == [3, 6] and results["profile"]["pca_max_depth"] == [2, 4]
    assert results["backend"] == {"requested": "sklearn", "selected": "sklearn", "device": None}
    assert results["data"] == {"n_train": 480, "n_val": 120, "n_test": 240, "forest_train_rows": 480}
    assert results["command"][0] == "pca_forest.py"

    # The PCA numbers are those of scikit-learn's own PCA on the training part.
    from sklearn.decomposition import PCA

    from datamodules import REDUCTION_VAL_FRACTION, load_splits

    splits = load_splits(synthetic_data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=22)
    reference = PCA(0.95).fit(splits.train_images.astype(np.float32))
    assert results["n_components_95"] == reference.n_components_
    np.testing.assert_allclose(results["variance_first_two"], reference.explained_variance_ratio_[:2], rtol=1e-4)
    assert len(results["pca"]["reconstruction_rows"]) == 10

    for name in ("raw", "pca"):
        grid = results["forests"][name]
        assert len(grid["cells"]) == 4
        assert grid["backend"] == "sklearn" and grid["method"] == "truncate" and grid["forests_grown"] == 1
        assert grid["trees_grown"] == max(grid["n_estimators"]) and grid["grown_max_depth"] == 4
        assert grid["scoring"].startswith("one forest of ") and grid["depth_seconds"] == {}
        assert grid["seconds"] == pytest.approx(grid["grow_seconds"] + grid["score_seconds"])
        cell_keys = {f"{part}_{metric}" for part in ("train", "val") for metric in ("accuracy", "precision", "recall", "f1")}
        assert all(cell_keys <= set(cell) for cell in grid["cells"])
        assert grid["best"]["val_accuracy"] == max(cell["val_accuracy"] for cell in grid["cells"])
        test = results["test"][name]
        assert {"test_accuracy", "test_precision", "test_recall", "test_f1", "fit_seconds"} <= set(test)
        assert (test["n_estimators"], test["max_depth"]) == (grid["best"]["n_estimators"], grid["best"]["max_depth"])
    assert results["forests"]["pca"]["n_features"] == results["n_components_95"]
    fit = results["fit_time"]
    assert fit["fit_time_ratio"] == pytest.approx(fit["fit_seconds_with_pca"] / fit["fit_seconds_without_pca"])
    steps = results["steps"]
    assert {"pca_fit", "pca_transform", "forest_grid_raw", "forest_grid_pca", "forest_fit_time_comparison"} <= set(steps)
    assert {entry["place"] for name, entry in steps.items() if name != "total"} == {"sklearn"}
    assert fit["pca_seconds"] == pytest.approx(steps["pca_fit"]["seconds"] + steps["pca_transform"]["seconds"], abs=2e-3)
    assert sorted(results["figures"].values()) == sorted(
        ["pca_cumulative_variance.png", "pca_reconstruction.png"]
        + [f"forest_{name}_{kind}.png" for name in ("raw", "pca") for kind in ("val_accuracy", "confusion")]
    )
    for path in results["figures"].values():
        assert (out / path).stat().st_size > 1000

    # Started again, the grids come from the cache and give the same cells.
    assert run(script, argv + ["--quiet"]) == 0
    again = json.loads((out / "results.json").read_text())
    for name in ("raw", "pca"):
        assert again["forests"][name]["forests_grown"] == 0 and again["forests"][name]["trees_grown"] == 0
        assert again["forests"][name]["depths_from_cache"] == [2, 4]
        assert again["forests"][name]["cells"] == results["forests"][name]["cells"]
    assert again["test"] == {name: {**results["test"][name], "fit_seconds": again["test"][name]["fit_seconds"]}
                             for name in ("raw", "pca")}  # the refits are ordinary forests, grown again


def test_no_cache_and_forest_row_sample(script, synthetic_data_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["--data-dir", str(synthetic_data_dir), "--out", str(out), "--backend", "sklearn", "--no-cache",
            "--forest-rows", "200", "--quiet", *TINY_GRIDS]
    assert run(script, argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["profile"]["forest_train_rows"] == 200 and results["data"]["forest_train_rows"] == 200
    assert results["forests"]["raw"]["n_train_rows"] == 200
    assert not (out / "grid_cache").exists()


def test_help_lists_every_flag(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data-dir", "--out", "--backend", "--seed", "--quick", "--cache-dir", "--no-cache",
                 "--raw-trees", "--raw-depths", "--pca-trees", "--pca-depths", "--forest-rows", "--limit-rows"):
        assert flag in text, flag


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data-dir", "/no/such/folder"], "no such file or directory"),
        (["--backend", "gpu"], "invalid choice"),
        (["--raw-trees", "50:10:10"], "is empty"),
        (["--pca-depths", "0,5"], "positive"),
        (["--raw-depths", "five"], "START:STOP:STEP"),
        (["--pca-trees", "10:50:0"], "step must be positive"),
        (["--forest-rows", "0"], "positive integer"),
        (["--no-cache", "--cache-dir", "somewhere"], "contradict"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(script, capsys, tmp_path, argv, message):
    argv = ["--out", str(tmp_path / "out"), *argv]
    code = run(script, argv)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.skipif(CUML_STATUS.usable, reason="cuML is usable here")
def test_cuml_backend_without_cuml_is_a_one_line_error(script, synthetic_data_dir, tmp_path, capsys):
    code = run(script, ["--data-dir", str(synthetic_data_dir), "--out", str(tmp_path / "out"), "--backend", "cuml"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: backend 'cuml'") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.slow  # a fresh interpreter pays for importing torch and lightning (datamodules imports them)
def test_script_process_exit_code(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--raw-depths", "", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["pca_forest.py: error: argument --raw-depths: the grid '' is empty"]


@pytest.mark.slow
def test_quick_run_on_a_slice_of_the_real_data(script, real_data_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["--data-dir", str(real_data_dir), "--out", str(out), "--backend", "sklearn", "--quick",
            "--limit-rows", "3000", "--quiet"]
    assert run(script, argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["profile"]["name"] == "quick"
    assert results["data"]["n_train"] == 2400 and results["data"]["n_test"] == 3000
    assert results["forests"]["raw"]["max_depth"] == [5, 10, 15]
    assert results["forests"]["raw"]["n_estimators"] == [10, 30, 50]
    assert results["test"]["raw"]["test_accuracy"] > 0.4  # 24 classes: chance is about 0.04
    assert all((out / path).is_file() for path in results["figures"].values())


def test_ctrl_c_in_the_grid_keeps_finished_grids_and_a_rerun_resumes(synthetic_data_dir, tmp_path):
    """The truncated grids (the default) are cached whole: Ctrl-C in the second grid keeps the
    first, and a rerun takes it from the cache and grows the second from its first tree."""
    from conftest import interrupt_script, leftover_temporary_files

    out = tmp_path / "out"
    argv = ["--data-dir", synthetic_data_dir, "--out", out, "--backend", "sklearn",
            "--raw-trees", "3,6", "--raw-depths", "2,4", "--pca-trees", "100:3000:100", "--pca-depths", "2:60:2"]
    code, _, stderr = interrupt_script(SCRIPT, *argv, cwd=tmp_path, after=r"\[forests pca 2/30\]")
    assert code == 130, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"interrupted in the 95% PCA features grid while growing and scoring trees \d+-\d+ of 3000; finished grids "
        r"are cached and a rerun takes them from there; this grid starts again; no results\.json written", last), last
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not (out / "results.json").exists()
    assert not leftover_temporary_files(tmp_path)
    cached = sorted((out / "grid_cache").glob("*.json"))
    assert [path.name.split("-")[:2] for path in cached] == [["raw", "truncate"]]
    assert len(json.loads(cached[0].read_text())["cells"]) == 4  # whole

    # The rerun takes the raw grid from the cache and grows the PCA grid again (stopped early by
    # a second Ctrl-C).
    code, _, stderr = interrupt_script(SCRIPT, *argv, cwd=tmp_path, after=r"\[forests pca 2/30\]")
    assert code == 130, stderr[-2000:]
    assert stderr.count("(from cache)") == 1 and "[forests raw] all 4 cells (from cache)" in stderr
    assert "[forests pca 1/30] 100 trees" in stderr


def test_ctrl_c_in_a_per_depth_grid_keeps_finished_depths(synthetic_data_dir, tmp_path):
    """The per-depth way (profile forest_method="per_depth") caches each finished depth."""
    import dataclasses

    from datamodules import REDUCTION_VAL_FRACTION, load_splits
    from labkit.progress import interruption_message
    from reduction.studies import pca_forest

    import reduction.forest_grid as forest_module

    data = load_splits(synthetic_data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=22)
    profile = dataclasses.replace(pca_forest.Profile("tiny", (3, 6), (2, 4, 6), (3,), (2,)), forest_method="per_depth")
    real, calls = forest_module.prefix_predictions, []

    def interrupted_at_the_second_depth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # train and validation of depth 2, then depth 4
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    cache = tmp_path / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(forest_module, "prefix_predictions", interrupted_at_the_second_depth)
        with pytest.raises(KeyboardInterrupt) as info:
            pca_forest.run(profile, data, tmp_path / "out", "sklearn", seed=22, cache_dir=cache)
    assert interruption_message(info.value) == (
        "interrupted in the raw pixels grid at depth 4; finished depths are cached and a rerun resumes from there; "
        "no results.json written")
    assert [path.name[:12] for path in cache.glob("*.json")] == ["raw-depth002"]
    results = pca_forest.run(profile, data, tmp_path / "out", "sklearn", seed=22, cache_dir=cache)
    assert results["forests"]["raw"]["method"] == "per_depth" and results["forests"]["raw"]["depths_from_cache"] == [2]
    assert results["forests"]["raw"]["forests_grown"] == 2 and results["profile"]["forest_method"] == "per_depth"


def test_grid_method_flag_chooses_the_way_the_grid_is_scored(script, synthetic_data_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["--data-dir", str(synthetic_data_dir), "--out", str(out), "--backend", "sklearn", "--no-cache",
            "--grid-method", "per_depth", *TINY_GRIDS]
    assert run(script, argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["profile"]["forest_method"] == "per_depth"
    assert results["forests"]["raw"]["method"] == results["forests"]["pca"]["method"] == "per_depth"
