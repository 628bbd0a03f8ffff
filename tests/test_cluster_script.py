"""scripts/cluster.py: end-to-end runs (synthetic data; --quick on the real data, slow) and
one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CUML_STATUS, HAS_CUDA, REPO_ROOT, load_script

from cli_kit import run_main

SCRIPT = REPO_ROOT / "scripts" / "cluster.py"
FIGURES = ("kmeans_scores", "kmeans_clusters", "gmm_aic_bic", "gmm_clusters", "gmm_generated")
# Small and fast on the synthetic CSVs (480 rows in the training part).
SMALL = ["--sample-size", "300", "--k", "3,6", "--kmeans-n-init", "2", "--gmm-n-init", "1", "--quick", "--quiet"]


@pytest.fixture(scope="module")
def cluster_script():
    return load_script("cluster")


def _run(cluster_script, argv, capsys):
    """(exit code, stdout, stderr) of the script's main, in-process."""
    code = run_main(cluster_script.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def _check_results(out_dir, ks, sample_size):
    results = json.loads((out_dir / "results.json").read_text())
    km, gm = results["kmeans"], results["gmm"]
    assert results["data"]["sample_size"] == sample_size
    assert km["ks"] == ks and gm["ks"] == ks
    assert len(km["silhouette"]) == len(km["inertia"]) == len(ks)
    assert len(gm["aic"]) == len(gm["bic"]) == len(ks)
    assert km["chosen_k"] in ks and gm["chosen_k"] in ks
    assert gm["chosen_k"] == ks[min(range(len(ks)), key=lambda i: gm["bic"][i])]
    if km["k_rule"] == "silhouette":
        assert km["chosen_k"] == ks[max(range(len(ks)), key=lambda i: km["silhouette"][i])]
    for part in (km, gm):
        purity = part["purity"]
        assert -1 <= purity["ari"] <= 1 and 0 <= purity["nmi"] <= 1 and 0 < purity["purity"] <= 1
        assert sum(c["size"] for c in purity["clusters"]) == sample_size
    assert gm["generated"]["n"] == 20 and len(gm["generated"]["components"]) == 20
    assert 0 <= gm["generated"]["pixel_min"] <= gm["generated"]["pixel_max"] <= 255
    for step in ("pca_fit", "kmeans_fits", "silhouettes", "kmeans_sweep", "gmm_sweep"):
        assert results["steps"][step]["seconds"] >= 0 and results["steps"][step]["place"]
    assert set(results["figures"]) == set(FIGURES)
    for name in FIGURES:
        path = out_dir / results["figures"][name]
        assert path.parent == out_dir and path.is_file() and path.stat().st_size > 1000, name
    assert results["figures"]["kmeans_clusters"] == f"kmeans_clusters_k{km['chosen_k']}.png"
    assert results["figures"]["gmm_clusters"] == f"gmm_clusters_k{gm['chosen_k']}.png"
    return results


def test_help_lists_every_flag(cluster_script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cluster_script.build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data-dir", "--out", "--backend", "--seed", "--cluster-seed", "--quick", "--k", "--sample-size",
                 "--kmeans-n-init", "--gmm-n-init", "--gmm-init", "--k-rule", "--quiet"):
        assert flag in text


def test_end_to_end_on_synthetic_data(cluster_script, synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(
        cluster_script, ["--data-dir", str(synthetic_data_dir), "--out", str(out), "--backend", "sklearn", *SMALL], capsys
    )
    assert code == 0, err
    results = _check_results(out, [3, 6], 300)
    assert results["kmeans"]["place"] == "sklearn" and results["gmm"]["place"] == "sklearn"
    assert results["study"] == "cluster" and results["seed"] == 22
    assert results["kmeans"]["params"]["random_state"] == results["gmm"]["params"]["random_state"] == 42
    assert results["profile"]["name"] == "quick, custom" and results["profile"]["ks"] == [3, 6]
    assert "K-Means" in stdout and "lowest BIC" in stdout and "results:" in stdout


def test_elbow_rule_and_other_mixture_start(cluster_script, synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(
        cluster_script,
        ["--data-dir", str(synthetic_data_dir), "--out", str(out), "--backend", "sklearn", *SMALL,
         "--k", "2,4,6", "--k-rule", "elbow", "--gmm-init", "random_from_data", "--cluster-seed", "7"],
        capsys,
    )
    assert code == 0, err
    results = _check_results(out, [2, 4, 6], 300)
    assert results["kmeans"]["k_rule"] == "elbow"
    assert results["kmeans"]["params"]["random_state"] == results["gmm"]["params"]["random_state"] == 7
    assert results["profile"]["gmm_init_params"] == "random_from_data"


@pytest.mark.slow
def test_quick_run_on_real_data(cluster_script, real_data_dir, tmp_path, capsys):
    out = tmp_path / "quick"
    code, _, err = _run(cluster_script, ["--data-dir", str(real_data_dir), "--out", str(out), "--quick", "--backend", "sklearn"], capsys)
    assert code == 0, err
    results = _check_results(out, [5, 15, 25], 2000)
    assert results["data"]["n_train"] == 21964
    assert results["pca"]["n_components"] > 10
    assert "[k-means 3/3]" in err and "[gaussian mixture 3/3]" in err  # progress per k


def _one_line_error(code, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "error" in lines[0], err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--data-dir", "/no/such/folder"], id="missing-data-dir"),
        pytest.param(["--backend", "tpu"], id="unknown-backend"),
        pytest.param(["--k", ""], id="empty-k-list"),
        pytest.param(["--k", "1,5"], id="k-below-2"),
        pytest.param(["--k", "5:2:1"], id="empty-k-range"),
        pytest.param(["--k", "five"], id="k-not-a-number"),
        pytest.param(["--sample-size", "0"], id="zero-sample"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(cluster_script, argv, tmp_path, capsys):
    code, _, err = _run(cluster_script, [*argv, "--out", str(tmp_path / "x")], capsys)
    _one_line_error(code, err)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--k", "3,300"], id="k-above-rows"),
        pytest.param(["--sample-size", "5000"], id="sample-larger-than-training-part"),
    ],
)
def test_impossible_sizes_exit_2_with_one_line(cluster_script, synthetic_data_dir, extra, tmp_path, capsys):
    argv = ["--data-dir", str(synthetic_data_dir), "--out", str(tmp_path / "x"), "--backend", "sklearn", *SMALL, *extra]
    code, _, err = _run(cluster_script, argv, capsys)
    _one_line_error(code, err)
    assert not (tmp_path / "x" / "results.json").exists()


@pytest.mark.skipif(CUML_STATUS.usable, reason="cuML is usable here")
def test_cuml_backend_without_cuml_exits_2(cluster_script, synthetic_data_dir, tmp_path, capsys):
    code, _, err = _run(cluster_script, ["--data-dir", str(synthetic_data_dir), "--backend", "cuml", "--out", str(tmp_path)], capsys)
    _one_line_error(code, err)
    assert "cuml" in err.lower()


@pytest.mark.slow
def test_script_process_exit_code(tmp_path):
    """The real process: one line on stderr and exit status 2."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(tmp_path / "missing")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "no such file" in done.stderr


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not (CUML_STATUS.usable and HAS_CUDA), reason="requires cuml and CUDA")
def test_quick_run_on_gpu(tmp_path, real_data_dir):
    """The whole study on the GPU, in its own process so that SCIPY_ARRAY_API=1 is set before
    SciPy loads: K-Means and silhouettes on cuML, mixtures via Array API on CUDA."""
    out = tmp_path / "gpu"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--backend", "cuml", "--data-dir", str(real_data_dir), "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = _check_results(out, [5, 15, 25], 2000)
    assert results["kmeans"]["place"] == "cuml" and results["kmeans"]["silhouette_place"] == "cuml"
    assert results["gmm"]["place"] == "sklearn-cuda"
