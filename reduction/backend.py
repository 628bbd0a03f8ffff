"""Where each algorithm runs: RAPIDS cuML or torch on a GPU, scikit-learn (or torch) on the CPU.

This is the one place that decides. Two functions answer the questions asked of the machine,
once per process: :func:`cuml_status` ("can cuML run here?": cuML imports and CuPy can use a
CUDA device) and :func:`torch_status` ("which device can torch use?"). ``select_backend("auto" |
"sklearn" | "cuml" | "torch")`` picks a backend from them, and ``implementation(algorithm,
backend)`` returns the class or function to call and the place it runs, following the table
``IMPLEMENTATIONS`` and each backend's order of places ``PLACES``. Where cuML and scikit-learn
spell a parameter differently, the estimators read what the class accepts from the class itself
(:func:`parameter_names`), not from a table of versions.

scikit-learn's Array API dispatch (PCA and the Gaussian mixture on torch tensors) needs SciPy's
own Array API support switched on before SciPy is first imported: :func:`enable_scipy_array_api`,
the one place that does it (the scripts that can run it call it before their other imports).

Importing this module imports neither scikit-learn, SciPy nor torch (``reduction/__init__``
loads its names lazily), so it can be imported first.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

from labkit.progress import note_once as announce  # fallbacks are told once per process

BACKEND_CHOICES = ("auto", "sklearn", "cuml", "torch")

# Where each algorithm can run, and what runs there. The places:
#   "cuml"            RAPIDS cuML on the GPU
#   "torch-device"    this project's torch code (reduction/torch_places) on the backend's torch device
#   "sklearn-device"  scikit-learn with Array API dispatch on torch tensors on that device
#   "torch-cpu"       this project's torch code on the CPU
#   "sklearn"         scikit-learn on the CPU (NumPy)
# A step records its place with the device named (place_name): "torch-cuda", "sklearn-cuda", or
# "torch-cpu" and "sklearn-cpu" under --backend torch on a machine without a GPU.
IMPLEMENTATIONS: dict[str, dict[str, str]] = {
    "pca": {
        "cuml": "cuml.decomposition:PCA",
        "sklearn-device": "sklearn.decomposition:PCA",
        "sklearn": "sklearn.decomposition:PCA",
    },
    "random_forest": {
        "cuml": "cuml.ensemble:RandomForestClassifier",
        "sklearn": "sklearn.ensemble:RandomForestClassifier",
    },
    # No "torch-cpu": TorchDR computes all N^2 pairs, scikit-learn's Barnes-Hut is the CPU's t-SNE.
    "tsne": {
        "cuml": "cuml.manifold:TSNE",
        "torch-device": "reduction.torch_places.tsne:TorchDRTSNE",
        "sklearn": "sklearn.manifold:TSNE",
    },
    "lle": {"sklearn": "sklearn.manifold:LocallyLinearEmbedding"},
    "mds": {
        "torch-device": "reduction.torch_places.smacof:TorchSMACOF",
        # The CPU's MDS: the batched torch SMACOF computes scikit-learn's (same starts, same map)
        # and was faster on the CPU (benchmarks/bench_mds.py). Delete this line for scikit-learn's.
        "torch-cpu": "reduction.torch_places.smacof:TorchSMACOF",
        "sklearn": "sklearn.manifold:MDS",
    },
    "kmeans": {"cuml": "cuml.cluster:KMeans", "sklearn": "sklearn.cluster:KMeans"},
    "silhouette": {
        "cuml": "cuml.metrics.cluster:silhouette_score",
        "sklearn": "sklearn.metrics:silhouette_score",
    },
    "gaussian_mixture": {
        "sklearn-device": "sklearn.mixture:GaussianMixture",
        "sklearn": "sklearn.mixture:GaussianMixture",
    },
}
# The places each backend may use, best first: an algorithm runs at the first place of its
# backend's list that its row has and that can run here. The device places need the backend's
# torch device (cuml: a CUDA device torch can use; torch: that, else the CPU); "cuml" on the
# torch backend needs cuML to be usable.
PLACES = {
    "cuml": ("cuml", "torch-device", "sklearn-device", "torch-cpu", "sklearn"),
    "torch": ("torch-device", "sklearn-device", "cuml", "torch-cpu", "sklearn"),
    "sklearn": ("torch-cpu", "sklearn"),
}
# How a place reads in a note.
PLACE_WORDS = {
    "cuml": "cuML on the GPU",
    "torch-device": "torch on {device}",
    "sklearn-device": "scikit-learn's Array API on {device}",
    "torch-cpu": "torch on the CPU",
    "sklearn": "scikit-learn on the CPU",
}


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
    """A selected backend: its ``name`` ("cuml", "torch" or "sklearn") and ``device``, the torch
    device its device places use ("cuda", "cpu" under --backend torch without a GPU; None where
    it has none)."""

    name: str
    device: str | None = None

    @property
    def uses_gpu(self) -> bool:
        return self.name == "cuml" or self.device not in (None, "cpu")


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


@dataclass(frozen=True)
class TorchStatus:
    """The answer to "which device can torch use?": ``usable`` (torch imports, and so do the
    torch places), ``device`` ("cuda" where torch can use a CUDA device, else "cpu"; None when
    not usable), and a one-line ``reason``."""

    usable: bool
    device: str | None
    reason: str

    @property
    def accelerated(self) -> bool:
        return self.device not in (None, "cpu")


@lru_cache(maxsize=1)
def torch_status() -> TorchStatus:
    """Which device can torch use here? Asked once per process.

    torch must import and TorchDR must be installed (the t-SNE place; it is imported when that
    place first runs). A CUDA device counts when ``torch.cuda.is_available()`` and a value copied
    to it and back works (a driver too old for torch's CUDA fails there). Everything runs inside
    ``try``. This is the one function that answers the question (tests replace it to drive the
    torch backend as if a GPU were present).
    """
    try:
        import torch
    except Exception as exc:
        return TorchStatus(False, None, f"torch does not import ({_first_line(exc)})")
    if importlib.util.find_spec("torchdr") is None:
        return TorchStatus(False, None, "TorchDR (the torch places' t-SNE) is not installed")
    try:
        if not torch.cuda.is_available():
            return TorchStatus(True, "cpu", "torch sees no CUDA device")
        torch.ones(1, device="cuda").cpu()
    except Exception as exc:
        return TorchStatus(True, "cpu", f"torch cannot use the CUDA device ({_first_line(exc)})")
    return TorchStatus(True, "cuda", f"torch can use {torch.cuda.device_count()} CUDA device(s)")


def select_backend(requested: str = "auto") -> Backend:
    """The backend for ``requested``; a :class:`BackendError` (one line saying why) where it cannot run.

    ``auto``: cuML when :func:`cuml_status` says it can run here; else torch when
    :func:`torch_status` finds a CUDA device; else scikit-learn. A cuML that is installed but
    cannot run is told once (a note). ``torch`` runs on torch's CUDA device, or on the CPU where
    there is none. The cuml backend also gets torch's CUDA device, for what cuML lacks.
    """
    if requested not in BACKEND_CHOICES:
        raise BackendError(f"unknown backend {requested!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if requested == "sklearn":
        return Backend("sklearn")
    if requested == "torch":
        torch = torch_status()
        if not torch.usable:
            raise BackendError(f"backend 'torch' was asked for, but {torch.reason}; reinstall the project "
                               "(pip install -e .) or use --backend sklearn")
        return Backend("torch", torch.device)
    status = cuml_status()
    if requested == "cuml" and not status.usable:
        raise BackendError(f"backend 'cuml' was asked for, but {status.reason}; install the 'gpu' (CUDA 12) or "
                           "'gpu-cu13' (CUDA 13) extra on an NVIDIA machine or use --backend sklearn")
    torch = torch_status()
    device = torch.device if torch.accelerated else None
    if status.usable:
        return Backend("cuml", device)
    if device is not None:
        if status.imports:
            announce(f"{status.reason}; using torch on {device}")
        return Backend("torch", device)
    if status.imports:
        announce(f"{status.reason}; using scikit-learn on the CPU")
    return Backend("sklearn")


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


def _can_run(place: str, backend: Backend) -> bool:
    if place.endswith("-device"):
        return backend.device is not None
    if place == "cuml":
        return backend.name == "cuml" or cuml_status().usable
    return True


def where(algorithm: str, backend: Backend) -> str:
    """The place ``algorithm`` runs on ``backend``, as the table says (nothing is imported), in
    the table's words ("torch-device"); :func:`place_name` names the device."""
    row = IMPLEMENTATIONS[algorithm]
    for place in PLACES[backend.name]:
        if place in row and _can_run(place, backend):
            return place
    raise BackendError(f"no implementation of {algorithm} for backend {backend.name}")


def place_name(place: str, backend: Backend) -> str:
    """A place as steps record it: the device places with the device named ("torch-cuda")."""
    return place.replace("-device", f"-{backend.device}") if place.endswith("-device") else place


def place_device(place: str) -> str | None:
    """The torch device of a recorded place ("torch-cuda" -> "cuda", "sklearn-cpu" -> "cpu");
    None for a place that computes on NumPy or cuML arrays ("sklearn", "cuml")."""
    library, _, device = place.partition("-")
    return device if library in ("torch", "sklearn") and device else None


def implementation(algorithm: str, backend: Backend):
    """(callable, place) for ``algorithm`` on ``backend``, following the table; ``place`` as steps
    record it (:func:`place_name`). When a GPU backend runs an algorithm elsewhere than its own
    place, that is told once."""
    place = where(algorithm, backend)
    elsewhere = {"cuml": place != "cuml", "torch": not place.endswith("-device")}.get(backend.name, False)
    if elsewhere:
        owner = "cuML" if backend.name == "cuml" else "the torch backend"
        announce(f"{owner} has no {algorithm}; it runs with {PLACE_WORDS[place].format(device=backend.device)}")
    module, name = IMPLEMENTATIONS[algorithm][place].split(":")
    return getattr(importlib.import_module(module), name), place_name(place, backend)


def array_api_problem(device: str | None = None) -> str | None:
    """Why scikit-learn's Array API dispatch cannot run here (on torch ``device``, when given),
    or None when it can.

    A CUDA ``device`` needs a torch that can use one: cuML being usable says nothing about
    torch, which may be a CPU-only build on a GPU machine. SciPy must have been imported with
    ``SCIPY_ARRAY_API=1`` (:func:`enable_scipy_array_api`).
    """
    if device is not None and str(device).startswith("cuda"):
        try:
            import torch

            if not torch.cuda.is_available():
                return "torch cannot use a CUDA device (torch.cuda.is_available() is False)"
        except Exception as exc:
            return f"torch cannot be asked about CUDA ({_first_line(exc)})"
    try:
        import sklearn

        with sklearn.config_context(array_api_dispatch=True):
            pass
    except (RuntimeError, ImportError) as exc:  # e.g. SCIPY_ARRAY_API unset when SciPy was imported
        return str(exc).split(". ")[0]
    if os.environ.get("SCIPY_ARRAY_API") != "1":
        return "SCIPY_ARRAY_API=1 is not set"
    return None


def array_api_call(method, device: str, *args):
    """``method(*args)`` under scikit-learn's Array API dispatch, NumPy arguments first moved to
    torch tensors on ``device`` (their dtype kept)."""
    import numpy as np
    import sklearn
    import torch

    args = [torch.as_tensor(arg, device=device) if isinstance(arg, np.ndarray) else arg for arg in args]
    with sklearn.config_context(array_api_dispatch=True):
        return method(*args)


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
