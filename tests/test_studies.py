"""The three studies (reduction.studies) are built one way: the same entry point, profiles, step
timer and results layout; and the step timer itself (labkit.timing)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from labkit.errors import SettingsError
from labkit.timing import StepTimer
from reduction.backend import BackendError
from reduction.studies import cluster, common, embed, pca_forest

STUDIES = {"pca_forest": pca_forest, "embed": embed, "cluster": cluster}
COMMON_KEYS = ["study", "profile", "seed", "backend", "data", "steps", "figures", "tensorboard", "versions"]

# Small enough for seconds on the synthetic CSVs (480 rows in the training part).
TINY = {
    "pca_forest": (pca_forest.Profile("tiny", (3, 6), (2, 4), (3,), (2,)), {}),
    "embed": (dataclasses.replace(embed.QUICK, name="tiny", map_rows=120, mds_rows=60, trust_sample=100),
              {"methods": ("pca", "lle")}),
    "cluster": (cluster.Profile("tiny", sample_size=300, ks=(3, 6), kmeans_n_init=1, kmeans_max_iter=50,
                                gmm_n_init=1, gmm_max_iter=30), {}),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from datamodules import REDUCTION_VAL_FRACTION, load_splits
    from datamodules.synthetic import write_synthetic_csvs

    root = tmp_path_factory.mktemp("studies")
    write_synthetic_csvs(root / "data", n_train=600, n_test=240, seed=0)
    return load_splits(root / "data", val_fraction=REDUCTION_VAL_FRACTION, seed=22, cache_dir=root / "cache")


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """{study: (results, output folder)} of every study run on the tiny profiles."""
    from threadpoolctl import threadpool_limits

    done = {}
    with threadpool_limits(limits=1):
        for name, module in STUDIES.items():
            profile, extra = TINY[name]
            out = tmp_path_factory.mktemp(name) / "out"
            done[name] = (module.run(profile, data, out, "sklearn", seed=22, **extra), out)
    return done


def test_every_study_module_has_the_same_shape():
    for name, module in STUDIES.items():
        assert dataclasses.is_dataclass(module.Profile) and module.Profile.__dataclass_params__.frozen, name
        assert (module.FULL.name, module.QUICK.name) == ("full", "quick"), name
        for function in ("run", "summary_lines"):
            assert callable(getattr(module, function)), (name, function)
        plots = [attribute for attribute in vars(module) if attribute.endswith("_figure") or attribute.startswith("_plot")]
        assert not plots, (name, plots)  # figures are plot_<what>(..., path)
        assert [n for n in vars(module) if n.startswith("plot_")], name


def test_the_three_results_share_one_layout(runs):
    versions = None
    for name, (results, out) in runs.items():
        assert list(results)[: len(COMMON_KEYS)] == COMMON_KEYS, name
        assert results["study"] == name and results["seed"] == 22
        assert results["backend"] == {"requested": "sklearn", "selected": "sklearn", "device": None}
        assert results["profile"] == dataclasses.asdict(TINY[name][0])
        assert {"n_train": 480, "n_val": 120, "n_test": 240}.items() <= results["data"].items(), name
        steps = results["steps"]
        assert list(steps)[-1] == "total" and len(steps) > 2, name
        for step, entry in steps.items():
            assert set(entry) == {"seconds", "place"} and entry["seconds"] >= 0, (name, step)
            assert entry["place"] in (None, "sklearn"), (name, step)
        assert sum(entry["place"] == "sklearn" for entry in steps.values()) >= 2, name
        assert results["figures"], name
        for key, path in results["figures"].items():
            assert not path.startswith("/") and (out / path).is_file(), (name, key, path)
            assert (out / path).read_bytes().startswith(b"\x89PNG")
        assert {"python", "numpy", "scikit-learn", "torch", "torchdr", "cuml"} == set(results["versions"]), name
        assert versions in (None, results["versions"])
        versions = results["versions"]
        assert all(isinstance(line, str) for line in STUDIES[name].summary_lines(results))


def test_each_study_writes_its_figures_and_headline_numbers_to_tensorboard(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name, (results, out) in runs.items():
        events = EventAccumulator(str(out / results["tensorboard"]), size_guidance={"images": 0})
        events.Reload()
        assert set(events.Tags()["images"]) == {f"{name}/{key}" for key in results["figures"]}, name
        scalars = events.Tags()["scalars"]
        assert scalars and all(tag.startswith(f"{name}/") for tag in scalars), name
        assert not [p for p in out.iterdir() if p.name.startswith(".")], name  # no partial run left
    pca_forest = runs["pca_forest"][0]
    events = EventAccumulator(str(runs["pca_forest"][1] / "tensorboard"))
    events.Reload()
    assert events.Scalars("pca_forest/raw/test_accuracy")[-1].value == pytest.approx(pca_forest["test"]["raw"]["test_accuracy"])


def test_each_study_keeps_its_own_sections(runs):
    assert {"pca", "n_components_95", "forests", "test", "fit_time"} <= set(runs["pca_forest"][0])
    assert list(runs["embed"][0]["methods"]) == ["pca", "lle"]
    assert {"pca", "kmeans", "gmm"} <= set(runs["cluster"][0])


@pytest.mark.parametrize("name", STUDIES)
def test_an_unknown_backend_fails_before_any_work(name, data, tmp_path):
    profile, extra = TINY[name]
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        STUDIES[name].run(profile, data, tmp_path / "out", "tpu", **extra)
    assert not (tmp_path / "out").exists()


def test_customized_profiles():
    assert common.customized(cluster.QUICK, ks=None, sample_size=None) is cluster.QUICK
    custom = common.customized(cluster.QUICK, ks=(3, 4), sample_size=None)
    assert custom.name == "quick, custom" and custom.ks == (3, 4) and custom.sample_size == cluster.QUICK.sample_size
    with pytest.raises(SettingsError, match="unknown k rule"):
        common.customized(cluster.QUICK, k_rule="biggest")
    with pytest.raises(SettingsError, match="forest_train_rows"):
        common.customized(pca_forest.FULL, forest_train_rows=0)


def test_step_timer_records_seconds_and_place_in_order():
    timer = StepTimer()
    with timer.step("first") as step:
        time.sleep(0.01)
        step.place = "sklearn"
    with timer.step("second", "cuml"):
        pass
    timer.record("third", 1.23456)
    with pytest.raises(KeyboardInterrupt), timer.step("stopped"):
        raise KeyboardInterrupt
    steps = timer.as_dict()
    assert list(steps) == ["first", "second", "third"]  # an interrupted step is not recorded
    assert steps["first"]["place"] == "sklearn" and steps["first"]["seconds"] >= 0.01
    assert steps["second"]["place"] == "cuml"
    assert steps["third"] == {"seconds": 1.235, "place": None}
    assert timer.seconds("third") == 1.23456
    assert timer.elapsed() >= timer.seconds("first")


def _definitions(pattern: str) -> list[str]:
    found = []
    for path in [*(REPO_ROOT / "reduction").rglob("*.py"), *(REPO_ROOT / "scripts").glob("*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line):
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}")
    return found


def test_variance_target_and_scipy_array_api_are_set_in_one_place():
    assert _definitions(r"^\s*VARIANCE_TARGET\s*=") == ["reduction/studies/common.py:" + _line_of("VARIANCE_TARGET =")]
    assert len(_definitions(r"SCIPY_ARRAY_API\", \"1\"")) == 1


def _line_of(text: str) -> str:
    lines = (REPO_ROOT / "reduction" / "studies" / "common.py").read_text().splitlines()
    return str(next(number for number, line in enumerate(lines, 1) if line.startswith(text)))


@pytest.mark.slow  # a fresh interpreter
def test_the_backend_module_imports_neither_scipy_nor_scikit_learn():
    """scripts/cluster.py imports reduction.backend to switch SciPy's Array API on before SciPy loads."""
    code = "import sys, reduction.backend; print(sorted({'scipy', 'sklearn'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
