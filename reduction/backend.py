"""Where each algorithm runs: RAPIDS cuML on an NVIDIA GPU, scikit-learn on the CPU.

This is the one place that decides. ``select_backend("auto" | "sklearn" | "cuml")`` picks a
backend; ``implementation(algorithm, backend)`` returns the class or function to call and the
place it actually runs, following the table ``IMPLEMENTATIONS``. cuML 26.x lacks some of the
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
import os
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


@lru_cache(maxsize=1)
def cuml_status() -> tuple[bool, str]:
    """(usable, reason): cuML imports and a CUDA device is present."""
    try:
        import cuml  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library failing to load
        return False, f"cuML is not installed or does not import ({type(exc).__name__}: {exc})"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA device is visible"
    except Exception as exc:
        return False, f"cannot query CUDA ({exc})"
    return True, "cuML and a CUDA device are present"


def select_backend(requested: str = "auto") -> Backend:
    """``auto``: cuML when it imports and a CUDA device is present, else scikit-learn."""
    if requested not in BACKEND_CHOICES:
        raise BackendError(f"unknown backend {requested!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if requested == "sklearn":
        return Backend("sklearn")
    usable, reason = cuml_status()
    if requested == "cuml" and not usable:
        raise BackendError(f"backend 'cuml' was asked for, but {reason}; install the 'gpu' extra on an NVIDIA machine or use --backend sklearn")
    return Backend("cuml" if usable else "sklearn")


def implementation(algorithm: str, backend: Backend):
    """(callable, place) for ``algorithm`` on ``backend``, falling back as the table says."""
    row = IMPLEMENTATIONS[algorithm]
    for place in PLACES[backend.name]:
        if place in row:
            if backend.uses_gpu and place != "cuml":
                where = "on the GPU via scikit-learn's Array API" if place == "sklearn-cuda" else "on the CPU"
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
