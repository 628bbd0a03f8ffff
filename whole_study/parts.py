"""The study's four parts, each a thin adapter over the code that does the work:

* ``mlp``: the learning rate x activation sweep (:func:`lightning_modules.sweep.run_sweep`, fused),
* ``pca_forest``, ``embed``, ``cluster``: the unsupervised studies (:mod:`reduction.studies`).

A part has a full profile (the reference's settings) and a quick one, options that are not
profile fields (the maps to draw, the clustering seed, the MLP's accelerator), and the packages
whose source its results depend on (for the fingerprint). :meth:`Part.plan` resolves the profile
and options from a :class:`StudyConfig` (``--quick``, ``--seeds``, ``--set part.field=value``);
:meth:`Part.compute` runs the part into a folder and returns its results dict, laid out as the
studies' results (``study``, ``profile``, ``seed``, ``backend``, ``data``, ``steps``,
``figures``, ``versions``, then the part's own sections).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import SettingsError
from labkit.files import write_json
from labkit.numbers import int_list
from labkit.progress import duration as elapsed_text  # noqa: F401  (12.3 s, 4 min 05 s: the report's and runner's name)
from labkit.timing import StepTimer

PART_NAMES = ("mlp", "pca_forest", "embed", "cluster")
REDUCTION_PARTS = ("pca_forest", "embed", "cluster")


@dataclass(frozen=True)
class StudyConfig:
    """What the whole study is asked to do (the command line's flags, as data)."""

    data_dir: str | None = None
    seed: int = 22
    backend: str = "auto"
    quick: bool = False
    limit_rows: int | None = None  # first rows of each CSV, for every part
    mlp_seeds: tuple[int, ...] = ()  # the sweep's initialisation seeds (empty: the study's seed alone)
    overrides: tuple[tuple[str, str], ...] = ()  # (("cluster.ks", "3,6"), ...), see Part.plan

    def __post_init__(self):
        if self.limit_rows is not None and self.limit_rows < 1:
            raise SettingsError(f"limit_rows must be positive, got {self.limit_rows}")


@dataclass(frozen=True)
class MLPProfile:
    """The sweep's settings: epochs, batch size, the grid, seeds, rows and TensorBoard pictures."""

    name: str
    epochs: int
    batch_size: int = 32
    lrs: tuple[float, ...] = (1e-3, 1e-5, 1e-9)
    acts: tuple[str, ...] = ("relu", "linear")
    seeds: tuple[int, ...] = ()  # initialisation seeds; empty: the study's seed alone, as the reference
    limit_rows: int | None = None  # first rows of each CSV (the study's --limit-rows wins)
    pictures: bool = True  # TensorBoard's confusion matrix, mistakes and projector per run

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lrs or not all(math.isfinite(lr) and lr > 0 for lr in self.lrs):
            raise ValueError(f"learning rates must be positive numbers, got {self.lrs}")
        if not self.acts:
            raise ValueError("the list of activations is empty")
        if self.limit_rows is not None and self.limit_rows < 1:
            raise ValueError(f"limit_rows must be positive, got {self.limit_rows}")


# The reference: lrs 1e-3 1e-5 1e-9 x relu, linear, 100 epochs, batch 32, one seed.
MLP_FULL = MLPProfile("full", epochs=100)
# Three epochs on the first 8,000 rows of each CSV (6,667 training rows; the whole test CSV),
# without the TensorBoard pictures: the sweep's whole path in seconds.
MLP_QUICK = MLPProfile("quick", epochs=3, limit_rows=8000, pictures=False)


@dataclass(frozen=True)
class Plan:
    """A part's resolved settings for one study run."""

    profile: object  # the part's profile dataclass
    options: dict = field(default_factory=dict)
    limit_rows: int | None = None


class StudyContext:
    """Shared by the parts of one study run: the configuration, the output folder, the data."""

    def __init__(self, config: StudyConfig, out_dir: Path) -> None:
        self.config, self.out_dir = config, Path(out_dir)
        self._reduction_data = None

    @property
    def cache_dir(self) -> Path:
        """Kept across runs and interruptions (grid depths, data digests); never a part's results."""
        return self.out_dir / ".cache"

    def reduction_data(self):
        """The unsupervised part's splits (80/20 of the train CSV, the test CSV), loaded once."""
        if self._reduction_data is None:
            from datamodules import REDUCTION_VAL_FRACTION, load_splits

            self._reduction_data = load_splits(self.config.data_dir, val_fraction=REDUCTION_VAL_FRACTION,
                                               seed=self.config.seed, limit_rows=self.config.limit_rows)
        return self._reduction_data


class Part:
    """One part of the study. Subclasses say how to plan and compute it."""

    name: str = ""
    title: str = ""
    packages: tuple[str, ...] = ()  # source folders its results depend on (with whole_study/parts.py)
    option_types: dict[str, str] = {}

    def profiles(self) -> tuple:
        """(full, quick) profiles."""
        raise NotImplementedError

    def default_options(self) -> dict:
        return {}

    def plan(self, config: StudyConfig) -> Plan:
        """The profile (quick or full, ``--set`` applied) and options for ``config``."""
        full, quick = self.profiles()
        profile, options = (quick if config.quick else full), self.default_options()
        custom = {}
        for key, text in config.overrides:
            part, _, name = key.partition(".")
            if part != self.name:
                continue
            fields = {f.name: f.type for f in dataclasses.fields(profile) if f.name != "name"}
            if name in fields:
                custom[name] = parse_setting(text, str(fields[name]), key)
            elif name in self.option_types:
                options[name] = parse_setting(text, self.option_types[name], key)
            else:
                known = sorted([*fields, *self.option_types])
                raise SettingsError(f"--set {key}: {self.name} has no setting {name!r}; it has {', '.join(known)}")
        if custom:
            try:
                profile = dataclasses.replace(profile, name=f"{profile.name}, custom", **custom)
            except ValueError as exc:
                raise SettingsError(f"{self.name}: {exc}") from None
        return Plan(profile, options, config.limit_rows)

    def backend(self, config: StudyConfig, plan: Plan) -> dict:
        """{"requested", "selected", ...}: where the part runs (selected None when it cannot run here)."""
        raise NotImplementedError

    def compute(self, plan: Plan, context: StudyContext, folder: Path) -> dict:
        """Run the part, writing its files into ``folder``; its results dict."""
        raise NotImplementedError

    def relocate(self, staging: Path, final: Path) -> None:
        """Before ``staging`` is renamed to ``final``: fix files that name their own folder."""


class MLPPart(Part):
    name, title = "mlp", "MLP sweep"
    packages = ("datamodules", "labkit", "lightning_modules")
    option_types = {"accelerator": "str"}

    def profiles(self):
        return MLP_FULL, MLP_QUICK

    def default_options(self):
        return {"accelerator": "auto"}

    def plan(self, config):
        plan = super().plan(config)
        profile = plan.profile
        if config.mlp_seeds:  # more seeds measure the noise; the profile stays what it was
            profile = dataclasses.replace(profile, seeds=tuple(dict.fromkeys(config.mlp_seeds)))
        if profile.acts != MLP_FULL.acts:  # (importing the model costs seconds: only when asked for others)
            from lightning_modules.mlp_module import ACTIVATIONS

            unknown = [act for act in profile.acts if act not in ACTIVATIONS]
            if unknown:
                raise SettingsError(f"mlp.acts: unknown activation(s) {', '.join(unknown)}; "
                                    f"choose from {', '.join(sorted(ACTIVATIONS))}")
        limit = config.limit_rows if config.limit_rows is not None else profile.limit_rows
        return Plan(profile, plan.options, limit)

    def backend(self, config, plan):
        import torch

        accelerator = plan.options["accelerator"]
        cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        return {"requested": accelerator, "selected": "cuda" if cuda else ("cpu" if accelerator in ("auto", "cpu") else accelerator)}

    def compute(self, plan, context, folder):
        from lightning_modules.sweep import run_sweep
        from lightning_modules.training import TrainConfig
        from reduction.studies.common import versions

        profile, config = plan.profile, context.config
        timer = StepTimer()
        started = time.perf_counter()
        # TensorBoard runs go to <logdir>/mlp/<run>: the part's folder, which is named "mlp".
        base = TrainConfig(
            epochs=profile.epochs, batch_size=profile.batch_size, seed=config.seed, data_dir=config.data_dir,
            logdir=os.fspath(folder.parent), accelerator=plan.options["accelerator"], limit_rows=plan.limit_rows,
            echo=True, pictures=profile.pictures,
        )
        summary = run_sweep(base, list(profile.lrs), list(profile.acts), folder, seeds=list(profile.seeds) or None)
        sweep_seconds = time.perf_counter() - started
        runs = [json.loads((folder / Path(row["log_dir"]).name / "results.json").read_text()) for row in summary["runs"]]
        fit_seconds = runs[0]["total_seconds"]  # fused: one fit and test for all members together
        timer.record("fit_and_test", fit_seconds, runs[0]["device"])
        # Loading the data and building the model before; pictures, HParams and the summary after.
        timer.record("data_pictures_and_summary", sweep_seconds - fit_seconds, "cpu")
        timer.record("total", timer.elapsed())
        rows = runs[0]["rows"]
        members = len(runs)
        steps_per_epoch = math.ceil(rows["train"] / profile.batch_size)
        per_epoch = runs[0]["seconds_per_epoch"]
        timing = {
            "device": runs[0]["device"],
            "members": members,
            "seconds_per_epoch_fused": per_epoch,
            "seconds_per_epoch_per_setting": per_epoch / members if per_epoch is not None else None,
            "steps_per_epoch": steps_per_epoch,
            "ms_per_step_fused": 1000 * per_epoch / steps_per_epoch if per_epoch is not None else None,
            "ms_per_step_per_setting": 1000 * per_epoch / steps_per_epoch / members if per_epoch is not None else None,
            "note": "all settings train fused, in one loop on the same batches: an epoch trains every one of them; "
                    "'per setting' divides it by their number",
        }
        for row in [*summary["settings"], *summary["runs"]]:
            row["log_dir"] = Path(row["log_dir"]).name  # relative to this folder
        return {
            "study": "mlp",
            "profile": dataclasses.asdict(profile),
            "seed": config.seed,
            "backend": {"requested": plan.options["accelerator"], "selected": runs[0]["device"]},
            "data": {"n_train": rows["train"], "n_val": rows["val"], "n_test": rows["test"], "limit_rows": plan.limit_rows},
            "steps": timer.as_dict(),
            "figures": {"curves": "curves.png"},
            "tensorboard": ".",  # one TensorBoard run per setting, in <act>_lr<lr>/ here
            "versions": {**versions(), "lightning": _distribution_version("lightning")},
            "settings": summary["settings"],
            "runs": summary["runs"],
            "best_lr_per_activation": summary["best_lr_per_activation"],
            "params": runs[0]["params"],
            "timing": timing,
        }

    def relocate(self, staging: Path, final: Path) -> None:
        """Point the run files' absolute or relative paths at the part's final folder."""
        old, new = os.fspath(staging), os.fspath(final)
        for path in [staging / "summary.json", *staging.glob("*/results.json")]:
            if path.is_file():
                write_json(path, _replace_prefix(json.loads(path.read_text()), old, new))


class ReductionPart(Part):
    packages = ("datamodules", "labkit", "reduction")

    def module(self):
        raise NotImplementedError

    def profiles(self):
        module = self.module()
        return module.FULL, module.QUICK

    def backend(self, config, plan):
        from reduction.backend import BackendError, select_backend

        try:
            backend = select_backend(config.backend)
        except BackendError:
            return {"requested": config.backend, "selected": None, "device": None}
        return {"requested": config.backend, "selected": backend.name, "device": backend.device}


class PcaForestPart(ReductionPart):
    name, title = "pca_forest", "PCA and random forests"

    def module(self):
        from reduction.studies import pca_forest

        return pca_forest

    def compute(self, plan, context, folder):
        # Finished grid depths outlive an interrupted run (they are keyed by the data and the grid).
        return self.module().run(plan.profile, context.reduction_data(), folder, context.config.backend,
                                 seed=context.config.seed, cache_dir=context.cache_dir / "pca_forest_grid")


class EmbedPart(ReductionPart):
    name, title = "embed", "2-D maps"
    option_types = {"methods": "tuple[str, ...]"}

    def module(self):
        from reduction.studies import embed

        return embed

    def default_options(self):
        return {"methods": list(self.module().METHODS)}

    def plan(self, config):
        plan = super().plan(config)
        methods = list(plan.options["methods"])
        unknown = [m for m in methods if m not in self.module().METHODS]
        if unknown or not methods:
            raise SettingsError(f"embed.methods: unknown method(s) {', '.join(unknown) or '(none)'}; "
                                f"choose from {', '.join(self.module().METHODS)}")
        return dataclasses.replace(plan, options={**plan.options, "methods": methods})

    def compute(self, plan, context, folder):
        return self.module().run(plan.profile, context.reduction_data(), folder, context.config.backend,
                                 seed=context.config.seed, methods=plan.options["methods"])


class ClusterPart(ReductionPart):
    name, title = "cluster", "K-Means and Gaussian mixtures"
    option_types = {"cluster_seed": "int"}

    def module(self):
        from reduction.studies import cluster

        return cluster

    def default_options(self):
        return {"cluster_seed": self.module().CLUSTER_SEED}

    def compute(self, plan, context, folder):
        return self.module().run(plan.profile, context.reduction_data(), folder, context.config.backend,
                                 seed=context.config.seed, cluster_seed=plan.options["cluster_seed"])


PARTS: dict[str, Part] = {part.name: part for part in (MLPPart(), PcaForestPart(), EmbedPart(), ClusterPart())}


def parse_parts(text: str) -> list[str]:
    """'cluster,mlp' -> ['mlp', 'cluster'] (the study's order); ValueError naming an unknown part."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PARTS]
    if unknown or not names:
        raise ValueError(f"unknown part {', '.join(unknown) or repr(text)}; choose from {', '.join(PART_NAMES)}")
    return [name for name in PART_NAMES if name in names]


def parse_override(text: str) -> tuple[str, str]:
    """'cluster.ks=3,6' -> ('cluster.ks', '3,6'); ValueError when it is not PART.FIELD=VALUE."""
    key, sep, value = text.partition("=")
    part, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ValueError(f"expected PART.SETTING=VALUE, got {text!r}")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r} in {text!r}; choose from {', '.join(PART_NAMES)}")
    return f"{part}.{name.strip()}", value.strip()


def parse_setting(text: str, type_name: str, key: str):
    """A setting's text as its field's type: ``int``, ``float``, ``str``, ``bool``, ``X | None``
    ("none"), or ``tuple[X, ...]`` (a comma list, or START:STOP:STEP for integers).
    SettingsError (one line, naming ``key``) when the text is not of that type."""
    try:
        return _convert(text.strip(), type_name.replace(" ", ""))
    except ValueError as exc:
        raise SettingsError(f"--set {key}={text}: {exc}") from None


def _convert(text: str, type_name: str):
    if type_name.endswith("|None"):
        return None if text.lower() == "none" else _convert(text, type_name[: -len("|None")])
    if type_name.startswith("tuple["):
        element = type_name[len("tuple["):].split(",")[0]
        if element == "int" and text:
            return tuple(int_list(text))
        return tuple(_convert(part.strip(), element) for part in text.split(",") if part.strip())
    if type_name == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if type_name == "float":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        return value
    if type_name == "bool":
        if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() in ("true", "yes", "1")
    if type_name == "str":
        return text
    raise ValueError(f"cannot set a setting of type {type_name}")


def _replace_prefix(value, old: str, new: str):
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + os.sep) else value
    if isinstance(value, list):
        return [_replace_prefix(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _replace_prefix(item, old, new) for key, item in value.items()}
    return value


def _distribution_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of the numerical libraries, read from their metadata (nothing imported); cuML's
    from whichever distribution installed it (cuml-cu13, cuml-cu12 or conda's cuml)."""
    from reduction.backend import cuml_version

    names = {"numpy": "numpy", "scipy": "scipy", "scikit-learn": "scikit-learn", "torch": "torch",
             "lightning": "lightning", "torchdr": "torchdr"}
    return {**{key: _distribution_version(dist) for key, dist in names.items()}, "cuml": cuml_version(prefer_imported=False)}

