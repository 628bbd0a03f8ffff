"""What the three studies share: the start of a run, its steps and figures, the results layout.

A study's ``run`` starts with :meth:`StudyRun.start` (which resolves the backend first, so that
one that cannot run here fails before any work), times its named steps with ``study.timer``
(:class:`labkit.timing.StepTimer`), records each figure with :meth:`StudyRun.figure` and ends
with :meth:`StudyRun.results`, so all three results files have the same top-level layout.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import SettingsError
from labkit.timing import StepTimer
from reduction.backend import Backend, cuml_version, select_backend

# The share of the variance the studies' PCA features keep (the reference's 95%).
VARIANCE_TARGET = 0.95


@dataclass
class StudyRun:
    """One study's run in progress: where it writes and runs, its timed steps, its figures."""

    study: str
    out_dir: Path
    requested_backend: str
    backend: Backend
    timer: StepTimer = field(default_factory=StepTimer)
    figures: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, study: str, out_dir: str | os.PathLike, backend: str) -> "StudyRun":
        """Resolve ``backend`` ("auto", "sklearn", "cuml" or "torch"); BackendError before any work.

        ``out_dir`` is made when the first file is written into it.
        """
        return cls(study, Path(out_dir), backend, select_backend(backend))

    def figure(self, key: str, path: str | os.PathLike) -> str:
        """Record the figure file ``path`` (inside ``out_dir``) as ``key``; its path relative to ``out_dir``."""
        self.figures[key] = Path(path).relative_to(self.out_dir).as_posix()
        return self.figures[key]

    def results(self, profile, seed: int, data: dict, headline: dict[str, float | None], **sections) -> dict:
        """The results file's layout, the same for every study; also the study's TensorBoard run.

        ``study``, ``profile`` (the profile's fields), ``seed``, ``backend`` (``requested``,
        ``selected``, ``device``: the torch device of its device places), ``data`` (row counts),
        ``steps`` ({name: {"seconds", "place"}}, in the order
        they finished, ending with ``total``), ``figures`` ({key: path relative to the output
        folder}), ``tensorboard`` (the run holding the figures as images and the ``headline``
        numbers as scalars, relative to the output folder), ``versions``; then the study's own
        ``sections``.
        """
        from labkit.board import write_board

        write_board(
            self.out_dir / "tensorboard",
            images={f"{self.study}/{key}": self.out_dir / path for key, path in self.figures.items()},
            scalars={f"{self.study}/{name}": value for name, value in headline.items()},
        )
        self.timer.record("total", self.timer.elapsed())
        return {
            "study": self.study,
            "profile": dataclasses.asdict(profile),
            "seed": seed,
            "backend": {"requested": self.requested_backend, "selected": self.backend.name, "device": self.backend.device},
            "data": data,
            "steps": self.timer.as_dict(),
            "figures": dict(self.figures),
            "tensorboard": "tensorboard",
            "versions": versions(),
            **sections,
        }


def split_rows(data) -> dict[str, int]:
    """Row counts of a ``SplitArrays``: ``n_train``, ``n_val``, ``n_test``."""
    return {"n_train": len(data.train_images), "n_val": len(data.val_images), "n_test": len(data.test_images)}


def versions() -> dict[str, str | None]:
    """Python, NumPy, scikit-learn, torch and TorchDR (when they were imported) and cuML (the
    imported module's version, else the installed distribution's: cuml-cu13, cuml-cu12 or
    conda's cuml; None where absent; see :func:`reduction.backend.cuml_version`)."""
    import numpy
    import sklearn

    torch, torchdr = sys.modules.get("torch"), sys.modules.get("torchdr")
    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": str(torch.__version__) if torch is not None else None,
        "torchdr": str(torchdr.__version__) if torchdr is not None else None,
        "cuml": cuml_version(),
    }


def customized(profile, **overrides):
    """``profile`` with the ``overrides`` that are not None, named "<name>, custom" when there are any.

    An impossible value is a :class:`SettingsError` with the profile's one-line reason.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    if not given:
        return profile
    try:
        return dataclasses.replace(profile, name=f"{profile.name}, custom", **given)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def fit_variance_pca(study: StudyRun, images, random_state: int):
    """A PCA keeping :data:`VARIANCE_TARGET` of the variance of ``images``, timed as step ``pca_fit``."""
    from reduction.estimators import PCA

    with study.timer.step("pca_fit") as step:
        pca = PCA(VARIANCE_TARGET, backend=study.backend.name, random_state=random_state).fit(images)
        step.place = pca.place_
    return pca


def pca_transform(study: StudyRun, pca, *arrays) -> tuple:
    """``pca.transform`` of each array, timed together as step ``pca_transform``."""
    with study.timer.step("pca_transform", pca.place_):
        return tuple(pca.transform(array) for array in arrays)
