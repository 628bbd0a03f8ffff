"""scripts/study.py and whole_study/: the whole study in one command, reuse by fingerprint,
resumption after Ctrl-C, and the report beside the reference's numbers.

The study runs on small synthetic CSVs with tiny profiles (``--set`` overrides of the quick
ones), so that the whole path (all four parts, the report) takes seconds. Reuse is proven by
forbidding recomputation (a part's ``compute`` that fails if called) and by unchanged files,
never by timing.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from conftest import REPO_ROOT, interrupt_script, leftover_temporary_files, load_script

from whole_study import report as report_module
from whole_study.parts import PARTS, PART_NAMES, StudyConfig, parse_override, parse_parts, parse_setting
from whole_study.reference import load_reference

SCRIPT = REPO_ROOT / "scripts" / "study.py"
TINY = [
    "mlp.epochs=2",
    "pca_forest.raw_n_estimators=3,6", "pca_forest.raw_max_depth=2,4", "pca_forest.pca_n_estimators=3",
    "pca_forest.pca_max_depth=2", "pca_forest.forest_train_rows=none",
    "embed.map_rows=120", "embed.mds_rows=60", "embed.trust_sample=100", "embed.methods=pca,lle",
    "cluster.sample_size=300", "cluster.ks=3,6", "cluster.kmeans_n_init=1", "cluster.gmm_n_init=1", "cluster.gmm_max_iter=30",
]


def study_args(data_dir, out, *extra, tiny=TINY):
    args = ["--data-dir", str(data_dir), "--out", str(out), "--backend", "sklearn", "--quick"]
    for setting in tiny:
        args += ["--set", setting]
    return [*args, *extra]


def run_study_main(args):
    """scripts/study.py's main through run_main, in this process, on one BLAS thread."""
    from threadpoolctl import threadpool_limits

    from cli_kit import run_main

    module = load_script("study")
    with threadpool_limits(limits=1):
        return run_main(module.main, args)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from datamodules.synthetic import write_synthetic_csvs

    root = tmp_path_factory.mktemp("study-data")
    write_synthetic_csvs(root / "data", n_train=600, n_test=240, seed=0)
    return root / "data"


@pytest.fixture(scope="module")
def first_run(synthetic, tmp_path_factory):
    """The tiny quick study, run once for the module: its output folder."""
    out = tmp_path_factory.mktemp("study") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGN_MNIST_CACHE_DIR", str(tmp_path_factory.mktemp("study-cache")))
        assert run_study_main(study_args(synthetic, out)) == 0
    return out


@pytest.fixture
def copied_run(first_run, tmp_path):
    """A copy of the first run's folder, for tests that change it."""
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    return out


def forbid(monkeypatch, *names):
    """Make the parts ``names`` fail if anything asks them to compute."""
    for name in names:
        def refuse(*args, _name=name, **kwargs):
            raise AssertionError(f"part {_name} was recomputed")

        monkeypatch.setattr(PARTS[name], "compute", refuse)


def snapshot(out):
    """{path: (mtime_ns, bytes)} of every part's results and the reports."""
    files = [out / name / "results.json" for name in PART_NAMES] + [out / f"report.{kind}" for kind in ("md", "html", "json")]
    return {str(path.relative_to(out)): (path.stat().st_mtime_ns, path.read_bytes()) for path in files}


# The whole study, once -------------------------------------------------------------------------


def test_every_part_writes_its_folder_and_the_report(first_run):
    for name in PART_NAMES:
        results = json.loads((first_run / name / "results.json").read_text())
        assert results["study"] == name
        assert list(results)[:9] == ["study", "profile", "seed", "backend", "data", "steps", "figures", "tensorboard", "versions"]
        assert results["study_part"]["conditions"] == {"kaggle_data": False, "all_rows": name != "mlp",
                                                        "full_profile": False, "profile": "quick, custom",
                                                        "limit_rows": 8000 if name == "mlp" else None}
        for path in results["figures"].values():
            assert (first_run / name / path).read_bytes().startswith(b"\x89PNG"), (name, path)
    # The MLP's TensorBoard runs live in its folder, their paths pointing there (not at the staging folder).
    runs = sorted(path.parent.name for path in (first_run / "mlp").glob("*/results.json"))
    assert runs == ["linear_lr1e-03", "linear_lr1e-05", "linear_lr1e-09", "relu_lr1e-03", "relu_lr1e-05", "relu_lr1e-09"]
    run = json.loads((first_run / "mlp" / "relu_lr1e-03" / "results.json").read_text())
    assert run["log_dir"] == os.fspath(first_run / "mlp" / "relu_lr1e-03")
    assert list((first_run / "mlp" / "relu_lr1e-03").glob("events.out.tfevents.*"))
    assert not (first_run / ".partial").exists() and not leftover_temporary_files(first_run)
    assert (first_run / "report.md").is_file() and (first_run / "report.html").is_file()


def test_the_html_report_is_self_contained(first_run):
    page = (first_run / "report.html").read_text()
    markdown = (first_run / "report.md").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert not re.search(r"<script|<link|@import|url\(", page, re.IGNORECASE)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//|file:)", page, re.IGNORECASE)
    images = re.findall(r"<img [^>]*src=\"([^\"]*)\"", page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    # Every figure of the markdown report is embedded in the page.
    assert len(images) == len(re.findall(r"^!\[", markdown, re.MULTILINE))
    for name in PART_NAMES:
        results = json.loads((first_run / name / "results.json").read_text())
        for path in results["figures"].values():
            assert f"]({name}/{path})" in markdown


def test_every_reference_value_is_in_the_report_with_a_verdict(first_run):
    reference = load_reference()
    rows = json.loads((first_run / "report.json").read_text())["comparisons"]
    assert [row["id"] for row in rows] == [entry["id"] for entry in reference["values"]]
    markdown, page = (first_run / "report.md").read_text(), (first_run / "report.html").read_text()
    for entry, row in zip(reference["values"], rows):
        assert row["verdict"] in report_module.VERDICTS, row
        shown = report_module.format_value(entry, entry["value"])
        lines = [line for line in markdown.splitlines() if line.startswith(f"| {entry['label']} | {shown} |")
                 and f"| **{row['verdict']}** |" in line and entry["source"] in line]
        assert lines, entry["id"]
        assert f"<td class=\"num\">{shown}</td>" in page.replace("&#x27;", "'"), entry["id"]
    # Synthetic data: everything that depends on the data is "not comparable", saying why; the
    # parameter counts do not, and the reference's own miscount shows as such.
    verdicts = {row["id"]: row for row in rows}
    assert verdicts["pca_components_95"]["verdict"] == "not comparable"
    assert verdicts["pca_components_95"]["reason"] == "not the Kaggle data"
    assert verdicts["mlp_params_total"]["verdict"] == "same"
    assert verdicts["mlp_params_written_bias"]["verdict"] == "differs"
    assert "the reference's own error" in verdicts["mlp_params_written_bias"]["reason"]
    assert verdicts["mlp_params_written_bias"]["measured"] == "275"


def test_reference_numbers_live_in_the_data_file_not_in_code():
    code = "\n".join(path.read_text() for path in (REPO_ROOT / "whole_study").glob("*.py"))
    for number in ("31.0377", "9.5145", "0.99836", "169894", "169,894", "22879", "0.8001", "3.6797", "0.7876"):
        assert number not in code, number
    reference = load_reference()
    assert all(entry["source"] for entry in reference["values"])


# Reuse, --force, changed settings --------------------------------------------------------------


def test_a_second_run_reuses_every_part_and_writes_the_same_report(copied_run, synthetic, monkeypatch, capsys):
    before = snapshot(copied_run)
    forbid(monkeypatch, *PART_NAMES)
    assert run_study_main(study_args(synthetic, copied_run)) == 0
    after = snapshot(copied_run)
    for path, (mtime, content) in before.items():
        if path.startswith("report."):
            assert after[path][1] == content, path  # rewritten, the same bytes
        else:
            assert after[path] == (mtime, content), path  # not touched
    out = capsys.readouterr().out
    assert all(re.search(rf"^{name}\s+reused\b", out, re.MULTILINE) for name in PART_NAMES), out


def test_force_recomputes_the_selected_part(copied_run, synthetic, monkeypatch, capsys):
    before = snapshot(copied_run)
    forbid(monkeypatch, "mlp", "pca_forest", "embed")
    assert run_study_main(study_args(synthetic, copied_run, "--force", "--parts", "cluster")) == 0
    after = snapshot(copied_run)
    assert after["cluster/results.json"][0] != before["cluster/results.json"][0]
    for name in ("mlp", "pca_forest", "embed"):
        assert after[f"{name}/results.json"] == before[f"{name}/results.json"]
    out = capsys.readouterr().out
    assert re.search(r"^cluster\s+computed\s+--force", out, re.MULTILINE)
    # Parts not selected are still reported, since their results match the settings.
    assert re.search(r"^mlp\s+kept\b", out, re.MULTILINE)
    report = json.loads((copied_run / "report.json").read_text())
    assert set(report["parts"]) == set(PART_NAMES)


def test_changed_settings_recompute_only_the_affected_part(copied_run, synthetic, monkeypatch, capsys):
    before = snapshot(copied_run)
    forbid(monkeypatch, "mlp", "pca_forest", "embed")
    tiny = [setting for setting in TINY if not setting.startswith("cluster.ks=")] + ["cluster.ks=3,5"]
    assert run_study_main(study_args(synthetic, copied_run, tiny=tiny)) == 0
    after = snapshot(copied_run)
    for name in ("mlp", "pca_forest", "embed"):
        assert after[f"{name}/results.json"] == before[f"{name}/results.json"], name
    cluster = json.loads((copied_run / "cluster" / "results.json").read_text())
    assert cluster["profile"]["ks"] == [3, 5] and cluster["kmeans"]["ks"] == [3, 5]
    assert re.search(r"^cluster\s+computed\s+changed: settings\.profile$", capsys.readouterr().out, re.MULTILINE)


def test_other_data_recomputes(copied_run, tmp_path, monkeypatch):
    from datamodules.synthetic import write_synthetic_csvs

    write_synthetic_csvs(tmp_path / "other", n_train=600, n_test=240, seed=1)
    forbid(monkeypatch, "mlp", "pca_forest", "embed", "cluster")
    with pytest.raises(AssertionError, match="part mlp was recomputed"):
        run_study_main(study_args(tmp_path / "other", copied_run))
    assert (copied_run / "mlp" / "results.json").is_file()  # the older, complete results stay until replaced
    assert not (copied_run / ".partial").exists()


# Ctrl-C ----------------------------------------------------------------------------------------


def test_ctrl_c_names_the_part_keeps_finished_ones_and_a_rerun_resumes(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child: tiny arrays, a busy machine
    out = tmp_path / "out"
    args = study_args(synthetic, out, "--parts", "embed,cluster")
    # "sample: ..." is the cluster part's first line; its PCA, K-Means and mixtures follow.
    code, stdout, stderr = interrupt_script(SCRIPT, *args, cwd=tmp_path, after=r"^sample: ")
    assert code == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and lines[0] == stderr.strip().splitlines()[-1], stderr[-3000:]
    assert lines[0].startswith("interrupted in part cluster (2/2)")
    assert "finished parts are kept (embed)" in lines[0] and lines[0].endswith("a rerun resumes at cluster")
    assert (out / "embed" / "results.json").is_file()
    assert not (out / "cluster").exists() and not (out / ".partial").exists()
    assert not leftover_temporary_files(out) and not (out / "report.md").exists()

    forbid(monkeypatch, "embed")
    assert run_study_main(args) == 0
    assert (out / "cluster" / "results.json").is_file() and (out / "report.html").is_file()


def test_readme_block_from_the_results(first_run, tmp_path, capsys):
    assert run_study_main(["--readme-results", "--out", str(first_run)]) == 0
    block = capsys.readouterr().out
    assert block.startswith("(Not README's numbers: not full runs on the Kaggle data: mlp (quick, custom, first 8000 rows)")
    for start in ("- MLP sweep (2 epochs, 6 settings fused)", "- `pca_forest`: ", "- `embed`: ", "- `cluster`: "):
        assert any(line.startswith(start) for line in block.splitlines()), start
    assert run_study_main(["--readme-results", "--out", str(tmp_path / "nothing")]) == 2
    assert "no study results" in capsys.readouterr().err


# Bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    (["--parts", "mlp,forest"], "unknown part forest"),
    (["--set", "cluster.nope=1"], "cluster has no setting 'nope'"),
    (["--set", "cluster.ks=a,b"], "error: --set cluster.ks=a,b: 'a' is not an integer"),
    (["--set", "cluster.kmeans_n_init=0"], "kmeans_n_init must be positive"),
    (["--set", "embed.methods=pca,umap"], "unknown method(s) umap"),
    (["--set", "ks=3"], "expected PART.SETTING=VALUE"),
    (["--backend", "tpu"], "invalid choice: 'tpu'"),
])
def test_bad_input_is_one_line_and_exit_2(extra, message, synthetic, tmp_path, capsys):
    assert run_study_main(["--data-dir", str(synthetic), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].count("\n") == 0, err
    assert not (tmp_path / "out").exists()


def test_settings_that_cannot_work_with_the_data_name_the_part(synthetic, tmp_path, capsys):
    args = study_args(synthetic, tmp_path / "out", "--parts", "cluster", "--set", "cluster.sample_size=5000")
    assert run_study_main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: in part cluster: the sample of 5000 rows")
    assert not (tmp_path / "out" / "cluster").exists() and not (tmp_path / "out" / ".partial").exists()


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_study_main(["--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--quick"]) == 2
    assert "no sign_mnist_train.csv" in capsys.readouterr().err


# The pieces --------------------------------------------------------------------------------------


def test_parse_setting_and_overrides():
    assert parse_setting("3,5", "tuple[int, ...]", "k") == (3, 5)
    assert parse_setting("5:20:5", "tuple[int, ...]", "k") == (5, 10, 15, 20)
    assert parse_setting("none", "int | None", "k") is None and parse_setting("7", "int | None", "k") == 7
    assert parse_setting("1e-3,1e-5", "tuple[float, ...]", "k") == (1e-3, 1e-5)
    assert parse_setting("false", "bool", "k") is False
    assert parse_override("cluster.k_rule=elbow") == ("cluster.k_rule", "elbow")
    assert parse_parts("cluster,mlp") == ["mlp", "cluster"]
    plan = PARTS["cluster"].plan(StudyConfig(quick=True, overrides=(("cluster.k_rule", "elbow"),)))
    assert plan.profile.k_rule == "elbow" and plan.profile.name == "quick, custom"
    mlp = PARTS["mlp"].plan(StudyConfig(mlp_seeds=(22, 23, 23)))
    assert mlp.profile.seeds == (22, 23) and mlp.profile.name == "full"  # more seeds: still the reference's settings


def _entry(**fields):
    base = {"id": "x", "question": "mlp", "label": "x", "source": "s", "requires": ["full_profile"],
            "path": [["mlp", "settings", {"act": "relu", "lr": 0.001}, "test_acc"]],
            "spread": ["mlp", "settings", {"act": "relu", "lr": 0.001}, "test_acc_std"]}
    return {**base, **fields}


def _results(acc, sd=None, seeds=(22,), profile="full"):
    setting = {"act": "relu", "lr": 0.001, "test_acc": acc, "test_acc_std": sd, "seeds": list(seeds)}
    conditions = {"kaggle_data": True, "all_rows": True, "full_profile": profile == "full", "profile": profile}
    return {"mlp": {"settings": [setting], "backend": {"selected": "cpu"}, "study_part": {"conditions": conditions}}}


def test_verdicts():
    noisy = _entry(kind="noisy", value=0.80, decimals=4, tolerance={"abs": 0.03}, reason_if_differs="varies")
    row = report_module.compare(noisy, _results(0.82))
    assert (row["verdict"], row["reason"]) == ("within noise", "difference +0.0200; noise: single run, stated tolerance ±0.03")
    row = report_module.compare(noisy, _results(0.85))
    assert row["verdict"] == "differs" and row["reason"].startswith("varies (difference +0.0500")
    # Several seeds: the noise is their spread (2 sd), not the stated tolerance.
    row = report_module.compare(noisy, _results(0.82, sd=0.005, seeds=(1, 2, 3)))
    assert row["verdict"] == "differs" and "2 sd over 3 seeds = 0.0100" in row["reason"]
    assert row["measured"] == "0.8200 ± 0.0050 (3 seeds)"
    assert report_module.compare(noisy, _results(0.82, sd=0.02, seeds=(1, 2, 3)))["verdict"] == "within noise"
    row = report_module.compare(noisy, _results(0.82, profile="quick"))
    assert (row["verdict"], row["reason"]) == ("not comparable", "quick profile")
    assert report_module.compare(noisy, {})["verdict"] == "not run"
    limited = _results(0.82, profile="quick")
    limited["mlp"]["study_part"]["conditions"].update(all_rows=False, limit_rows=8000)
    strict = {**noisy, "requires": ["kaggle_data", "all_rows", "full_profile"]}
    assert report_module.compare(strict, limited)["reason"] == "quick profile; only the first 8,000 rows of each CSV"
    limited["mlp"]["study_part"]["conditions"]["kaggle_data"] = False
    assert report_module.compare(strict, limited)["reason"] == "not the Kaggle data"

    rounded = _entry(kind="rounded", value=31.0377, decimals=4, scale=100, unit="%", requires=[],
                     path=[["pca_forest", "pca", "variance_first_two", 0]])
    assert report_module.compare(rounded, {"pca_forest": {"pca": {"variance_first_two": [0.31037679]}}})["verdict"] == "same"
    row = report_module.compare(rounded, {"pca_forest": {"pca": {"variance_first_two": [0.3104]}}})
    assert row["verdict"] == "differs" and row["measured"] == "31.0400%"

    cells = [{"n_estimators": n, "max_depth": d, "val_accuracy": acc}
             for n, d, acc in ((50, 10, 0.990), (100, 10, 0.999), (50, 20, 0.9985), (100, 20, 0.995))]
    best = {"n_estimators": 100, "max_depth": 10, "val_accuracy": 0.999}
    cell = _entry(kind="grid_cell", value={"n_estimators": 50, "max_depth": 20}, tolerance={"abs": 0.002}, requires=[],
                  path=[["pca_forest", "forests", "raw", "best"]], cells=["pca_forest", "forests", "raw", "cells"])
    results = {"pca_forest": {"forests": {"raw": {"best": best, "cells": cells}}}}
    row = report_module.compare(cell, results)
    assert row["verdict"] == "within noise" and "scores 0.99850 on validation, 0.00050 below the best" in row["reason"]
    assert (row["reference"], row["measured"]) == ("50 / 20", "100 / 10")
    row = report_module.compare({**cell, "value": {"n_estimators": 50, "max_depth": 10}}, results)
    assert row["verdict"] == "differs"

    elbow = _entry(kind="computed", value=15, requires=[],
                   path=[{"rule": "k_by_elbow", "ks": ["cluster", "kmeans", "ks"], "values": ["cluster", "kmeans", "inertia"]}])
    curve = {"cluster": {"kmeans": {"ks": [5, 10, 15, 20, 25], "inertia": [100, 60, 30, 27, 25]}}}
    assert report_module.compare(elbow, curve)["verdict"] == "same"


def test_the_reference_file_is_checked(tmp_path):
    reference = json.loads((REPO_ROOT / "whole_study" / "reference.json").read_text())
    reference["values"][0].pop("source")
    (tmp_path / "bad.json").write_text(json.dumps(reference))
    with pytest.raises(ValueError, match="lacks source"):
        load_reference(tmp_path / "bad.json")
