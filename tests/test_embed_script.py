"""scripts/embed.py: flags, outputs, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CUML_STATUS, REPO_ROOT, load_script

from cli_kit import run_main
from datamodules.synthetic import write_synthetic_csvs
from reduction.studies.embed import METHODS

SCRIPT = REPO_ROOT / "scripts" / "embed.py"

# Synthetic CSVs are not the Kaggle release; the loader says so, which is expected here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*differs from the Kaggle release:UserWarning"),
    pytest.mark.usefixtures("single_thread"),
]


@pytest.fixture(scope="module")
def embed():
    return load_script("embed")


@pytest.fixture
def tiny_data_dir(tmp_path):
    """240 train rows (192 in the 80 % part): every map of the quick profile in seconds."""
    write_synthetic_csvs(tmp_path / "data", n_train=240, n_test=48, seed=1)
    return tmp_path / "data"


def call(embed, argv):
    """Exit code of the script's entry point, in-process."""
    return run_main(embed.main, argv)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "error" in lines[0]
    return lines[0]


def test_help_names_every_flag(embed, capsys):
    assert call(embed, ["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--data-dir", "--out", "--backend", "--seed", "--quick", "--methods"):
        assert flag in text
    assert "runs/embed" in text and "pca,tsne,lle,mds" in text


def test_methods_are_comma_or_space_separated(embed):
    args = embed.build_parser().parse_args(["--methods", "tsne,PCA", "lle"])
    assert [m for group in args.methods for m in group] == ["tsne", "pca", "lle"]
    defaults = embed.build_parser().parse_args([])
    assert [m for group in defaults.methods for m in group] == list(METHODS)
    assert defaults.seed == 22 and str(defaults.out) == "runs/embed" and defaults.backend == "auto"


def test_quick_run_writes_results_and_figures(embed, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert call(embed, ["--data-dir", str(tiny_data_dir), "--out", str(out), "--quick"]) == 0
    captured = capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == list(METHODS)
    assert results["study"] == "embed" and results["profile"]["name"] == "quick" and results["seed"] == 22
    assert results["backend"]["requested"] == "auto"
    assert results["data"] == {"n_train": 192, "n_val": 48, "n_test": 48}
    for method, entry in results["methods"].items():
        assert entry["rows"] == 192
        assert results["steps"][f"{method}_fit"]["place"] == entry["place"]
        assert {key: results["figures"][f"{method}_{key}"] for key in ("scatter", "thumbnails")} == entry["figures"]
        assert entry["place"] in ("cuml", "torch-cuda", "sklearn-cuda", "torch-cpu", "sklearn")
        assert entry["seconds"] >= 0
        assert 0.5 < entry["trustworthiness"] <= 1.0
        assert 0.0 <= entry["knn_accuracy"] <= 1.0
        assert entry["parameters"]
        for figure in entry["figures"].values():
            png = (out / figure).read_bytes()
            assert png.startswith(b"\x89PNG") and len(png) > 5000
        assert method in captured.out  # the summary table
        assert f"{method}: fitting 192 rows" in captured.err and f"{method} done" in captured.err
    assert results["methods"]["tsne"]["parameters"]["max_iter"] == 500
    assert results["methods"]["tsne"]["parameters"]["init"] == "random"
    assert results["methods"]["mds"]["parameters"]["n_init"] == 4
    assert results["methods"]["lle"]["parameters"]["n_neighbors"] == 10
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"{m}_{kind}.png" for m in METHODS for kind in ("scatter", "thumbnails")
    )


def test_a_subset_of_methods(embed, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert call(embed, ["--data-dir", str(tiny_data_dir), "--out", str(out), "--methods", "pca", "--seed", "5"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["pca"] and results["seed"] == 5
    assert sorted(p.name for p in out.glob("*.png")) == ["pca_scatter.png", "pca_thumbnails.png"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--data-dir", "/no/such/folder"], "no such file or directory"),
        (["--backend", "gpu"], "invalid choice"),
        (["--methods", "pca,umap"], "unknown method umap"),
        (["--methods", ","], "unknown method"),
        (["--seed", "x"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(embed, tmp_path, capsys, argv, expected):
    assert call(embed, [*argv, "--out", str(tmp_path / "out")]) == 2
    assert expected in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(CUML_STATUS.usable, reason="cuML and a GPU are here: the cuml backend works")
def test_cuml_backend_without_cuml_is_one_line_and_exit_2(embed, tmp_path, capsys):
    assert call(embed, ["--backend", "cuml", "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: backend 'cuml'")


@pytest.mark.slow  # a fresh interpreter imports torch and Lightning: ~10 s on a busy machine
def test_the_entry_point_exits_2_on_bad_input(tmp_path):
    """The real process: `sys.exit(run_main(main))` turns a bad flag into exit code 2."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--methods", "umap", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown method umap" in one_error_line(done.stderr)
