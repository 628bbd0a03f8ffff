"""Where each algorithm runs: RAPIDS cuML on an NVIDIA GPU, scikit-learn on the CPU.

This is the one place that decides. :func:`cuml_status` answers "can cuML run here?" (cuML
imports and CuPy can use a CUDA device); ``select_backend("auto" | "sklearn" | "cuml")`` picks a
backend from it; ``implementation(algorithm, backend)`` returns the class or function to call and
the place it actually runs, following the table ``IMPLEMENTATIONS``. Where cuML and scikit-learn
spell a parameter differently, the estimators read what the class accepts from the class itself
(:func:`parameter_names`), not from a table of versions. cuML 26.x lacks some of the
study's algorithms (GaussianMixture, LLE, MDS); for those the GPU backend falls back along the
row of the table (scikit-learn's Array API dispatch on torch CUDA tensors where scikit-learn
supports it, else scikit-learn on the CPU) and says so once. That Array API path needs SciPy's
own Array API support switched on before SciPy is first imported: :func:`enable_scipy_array_api`,
the one place that does it (scripts/cluster.py calls it before its other imports).

Importing this module imports neither scikit-learn nor SciPy (``reduction/__init__`` loads its
names lazily), so it can be imported first.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

from labkit.progress import note_once as announce  # fallbacks are told once per process

BACKEND_CHOICES = ("auto", "sklearn", "cuml")

# Where each algorithm runs, in order of preference, per backend:
#   "cuml"            RAPIDS cuML on the GPU
#   "sklearn-cuda"    scikit-learn with Array API dispatch on torch CUDA tensors
#   "sklearn"         scikit-learn on the CPU (NumPy)
IMPLEMENTATIONS: dict[str, dict[str, str]] = {
    "pca": {"cuml": "cuml.decomposition:PCA", "sklearn": "sklearn.decomposition:PCA"},
    "random_forest": {
        "cuml": "cuml.ensemble:RandomForestClassifier",
        "sklearn": "sklearn.ensemble:RandomForestClassifier",
    },
    "tsne": {"cuml": "cuml.manifold:TSNE", "sklearn": "sklearn.manifold:TSNE"},
    "lle": {"sklearn": "sklearn.manifold:LocallyLinearEmbedding"},
    "mds": {"sklearn": "sklearn.manifold:MDS"},
    "kmeans": {"cuml": "cuml.cluster:KMeans", "sklearn": "sklearn.cluster:KMeans"},
    "silhouette": {
        "cuml": "cuml.metrics.cluster:silhouette_score",
        "sklearn": "sklearn.metrics:silhouette_score",
    },
    "gaussian_mixture": {
        "sklearn-cuda": "sklearn.mixture:GaussianMixture",
        "sklearn": "sklearn.mixture:GaussianMixture",
    },
}
# The places each backend may use, best first.
PLACES = {"cuml": ("cuml", "sklearn-cuda", "sklearn"), "sklearn": ("sklearn",)}


def enable_scipy_array_api() -> None:
    """Switch on SciPy's Array API support (``SCIPY_ARRAY_API=1``) unless the environment says otherwise.

    scikit-learn's Array API dispatch (the Gaussian mixture on a CUDA device) needs it, and SciPy
    reads the variable once, when it is first imported: call this before anything imports SciPy
    (scikit-learn, and so ``datamodules``, do). Without it the mixture runs on the CPU and says so
    (:func:`reduction.estimators.clustering.array_api_problem`).
    """
    os.environ.setdefault("SCIPY_ARRAY_API", "1")


class BackendError(RuntimeError):
    """A backend was asked for that cannot run here; the message is one line."""


@dataclass(frozen=True)
class Backend:
    name: str  # "cuml" or "sklearn"

    @property
    def uses_gpu(self) -> bool:
        return self.name == "cuml"


@dataclass(frozen=True)
class CumlStatus:
    """The answer to "can cuML run here?": ``usable``, whether ``import cuml`` works
    (``imports``), and a one-line ``reason``."""

    usable: bool
    imports: bool
    reason: str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@lru_cache(maxsize=1)
def cuml_status() -> CumlStatus:
    """Can cuML run here? Asked as cuML asks it, once per process.

    ``import cuml`` must work, and then CuPy (cuML's own array library, which cuML's benchmark
    tools query the same way) must count at least one CUDA device and copy a value to it and
    back, which creates the device context cuML's fits need. torch is not asked: a CPU-only
    torch does not stop cuML, and a device torch can use may still be one CuPy cannot (a driver
    older than CuPy's CUDA). Everything runs inside ``try``: any failure is an answer, not a crash.
    This is the one function that answers the question (tests replace it to drive the cuML path).
    """
    try:
        import cuml  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library failing to load
        return CumlStatus(False, False, f"cuML is not installed or does not import ({_first_line(exc)})")
    try:
        import cupy
    except Exception as exc:
        return CumlStatus(False, True, f"cuML imports, but CuPy does not ({_first_line(exc)})")
    try:
        import numpy

        count = int(cupy.cuda.runtime.getDeviceCount())
        if count < 1:
            return CumlStatus(False, True, "cuML imports, but CuPy sees no CUDA device")
        cupy.asarray(numpy.ones(1, dtype=numpy.float32)).get()
    except Exception as exc:  # CUDARuntimeError (no device, driver too old), a missing CUDA library...
        return CumlStatus(False, True, f"cuML imports, but CuPy cannot use a CUDA device ({_first_line(exc)})")
    return CumlStatus(True, True, f"cuML and {count} CUDA device(s) usable through CuPy")


def select_backend(requested: str = "auto") -> Backend:
    """``auto``: cuML when :func:`cuml_status` says it can run here, else scikit-learn.

    ``cuml`` where it cannot run is a :class:`BackendError` (one line saying why). ``auto`` on a
    machine where cuML is installed but cannot run says so once (a note), then uses scikit-learn.
    """
    if requested not in BACKEND_CHOICES:
        raise BackendError(f"unknown backend {requested!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if requested == "sklearn":
        return Backend("sklearn")
    status = cuml_status()
    if requested == "cuml" and not status.usable:
        raise BackendError(f"backend 'cuml' was asked for, but {status.reason}; install the 'gpu' (CUDA 12) or "
                           "'gpu-cu13' (CUDA 13) extra on an NVIDIA machine or use --backend sklearn")
    if not status.usable and status.imports:
        announce(f"{status.reason}; using scikit-learn on the CPU")
    return Backend("cuml" if status.usable else "sklearn")


def parameter_names(factory) -> frozenset[str]:
    """The keyword arguments ``factory`` (a cuML or scikit-learn class, or a function) accepts,
    read from the object itself at run time: its ``_get_param_names()`` (scikit-learn's and
    cuML's estimators both have one), else its signature."""
    getter = getattr(factory, "_get_param_names", None)
    if getter is not None:
        try:
            return frozenset(getter())
        except Exception:  # an unbound classmethod quirk; fall back to the signature
            pass
    return frozenset(inspect.signature(factory).parameters)


def accepted(factory, **optional) -> dict:
    """The ``optional`` keyword arguments that ``factory`` accepts (see :func:`parameter_names`).

    Only for arguments whose absence changes nothing the caller promises (``random_state`` of
    an exact PCA, ``n_jobs`` of a forest); everything else is passed as it is, so that a keyword
    a backend does not know fails loudly.
    """
    names = parameter_names(factory)
    return {name: value for name, value in optional.items() if name in names}


# Distributions that install the ``cuml`` package: the pip wheels for CUDA 13 and 12, conda's.
CUML_DISTRIBUTIONS = ("cuml-cu13", "cuml-cu12", "cuml")


def cuml_distribution() -> tuple[str, str] | None:
    """(distribution, version) of the installed cuML, read from package metadata (nothing is
    imported); None when none of :data:`CUML_DISTRIBUTIONS` is installed."""
    from importlib.metadata import PackageNotFoundError, version

    for name in CUML_DISTRIBUTIONS:
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return None


def cuml_version(prefer_imported: bool = True) -> str | None:
    """The cuML version for reports: "26.10.0 (cuml-cu13)" from the package metadata, or, with
    ``prefer_imported`` and cuML already imported in this process, that module's ``__version__``
    (what actually ran). None where cuML is absent. Never imports cuML itself. Run fingerprints
    pass ``prefer_imported=False``, so that they do not change once cuML has been imported."""
    module = sys.modules.get("cuml") if prefer_imported else None
    if module is not None:
        return str(getattr(module, "__version__", "unknown"))
    found = cuml_distribution()
    return None if found is None else f"{found[1]} ({found[0]})"


def implementation(algorithm: str, backend: Backend):
    """(callable, place) for ``algorithm`` on ``backend``, falling back as the table says."""
    row = IMPLEMENTATIONS[algorithm]
    for place in PLACES[backend.name]:
        if place in row:
            if backend.uses_gpu and place != "cuml":
                where = ("on the CUDA device via scikit-learn's Array API where torch can use one"
                         if place == "sklearn-cuda" else "on the CPU")
                announce(f"cuML has no {algorithm}; it runs with scikit-learn {where}")
            module, name = row[place].split(":")
            return getattr(importlib.import_module(module), name), place
    raise BackendError(f"no implementation of {algorithm} for backend {backend.name}")


def to_numpy(array):
    """A NumPy array from NumPy, cuML/CuPy or torch output."""
    import numpy as np

    if hasattr(array, "get"):  # CuPy
        array = array.get()
    elif hasattr(array, "detach"):  # torch
        array = array.detach().cpu().numpy()
    elif hasattr(array, "to_numpy"):  # cuDF / pandas
        array = array.to_numpy()
    return np.asarray(array)
