"""2-D maps of the images: t-SNE, LLE and MDS as scikit-learn estimators on cuML, torch or scikit-learn.

Each class stores its parameters in ``__init__``, fits with ``fit`` / ``fit_transform`` and keeps
``embedding_`` (NumPy float64, [n_samples, 2]), ``estimator_`` (the fitted object of the place),
``place_`` (where it ran: "cuml", "torch-cuda", "torch-cpu" or "sklearn", from
:func:`reduction.backend.implementation`) and ``params_`` (the keyword arguments actually given
to the implementation, for the results file). The maps are 2-D by construction (the study's
figures; cuML's t-SNE makes 2-D maps only), so there is no ``n_components`` parameter.

Only :class:`LLE` maps new rows (``transform``); t-SNE and MDS, like scikit-learn's, embed the
rows they were fitted on and have no ``transform``.

The reference study ran an older scikit-learn; where a default has moved since, the reference's
value is set explicitly (:data:`REFERENCE_MDS`, :func:`reference_mds_eps`). cuML's and TorchDR's
t-SNE are called so that their parameters mean what scikit-learn's mean
(:func:`cuml_tsne_kwargs`; :func:`reduction.torch_places.tsne.torchdr_tsne_kwargs`), and the
torch SMACOF is scikit-learn's metric SMACOF (:mod:`reduction.torch_places.smacof`).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from reduction.backend import announce, implementation, parameter_names, place_device, select_backend, to_numpy

# scikit-learn's estimator checks on backend="sklearn" (see reduction/estimators/pca.py). Their
# data sets have 10 to 30 rows: t-SNE's perplexity must be below the row count (scikit-learn's
# own test suite checks its TSNE with perplexity=2 for the same reason) and LLE's neighbourhood
# must be smaller than the data (n_neighbors=5, scikit-learn's default). The fewest t-SNE
# iterations allowed and shorter MDS runs keep the checks fast. Every check then passes.
CHECK_PARAMS: dict[str, dict] = {
    "TSNE": {"perplexity": 2.0, "max_iter": 250},
    "LLE": {"n_neighbors": 5},
    "MDS": {"n_init": 2, "max_iter": 100},
}
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {"TSNE": {}, "LLE": {}, "MDS": {}}

# scikit-learn's t-SNE runs a fixed exploration phase of 250 iterations (early exaggeration,
# momentum 0.5) before the main phase (momentum 0.8); this is why its max_iter must be >= 250.
TSNE_EXPLORATION_ITER = 250
TSNE_PRE_MOMENTUM = 0.5
TSNE_POST_MOMENTUM = 0.8

# scikit-learn multiplies the t-SNE gradient by 2 (dof + 1) / dof = 4 (dof = 1 in 2-D); cuML's
# Barnes-Hut and FFT kernels, like bhtsne and FIt-SNE, leave the 4 out. The same step therefore
# needs a 4x larger learning rate on cuML (scikit-learn's docs: "our learning_rate=200
# corresponds to learning_rate=800 in those other implementations").
CUML_LEARNING_RATE_FACTOR = 4.0

# The reference's MDS settings, written out because scikit-learn's defaults have moved since
# (n_init, init, normalized_stress; `metric` is now `metric_mds`). eps depends on the installed
# scikit-learn's stopping test: see reference_mds_eps().
REFERENCE_MDS = {
    "n_components": 2,
    "metric_mds": True,
    "n_init": 4,
    "init": "random",
    "max_iter": 300,
    "normalized_stress": False,
    # The inits one after another, each drawing its start from the one random stream in turn.
    # scikit-learn with n_jobs > 1 first draws one seed per init and starts each init from its
    # own seed: other starts, so another map for the same random_state (see MDS's n_jobs).
    "n_jobs": None,
}
# How the inits' random starts are drawn, by MDS's n_jobs (None, or a number of workers).
MDS_INIT_DRAWS = {
    "serial": "each init's start drawn in turn from one random_state stream (n_jobs=None)",
    "seeded": "one seed per init drawn first from random_state, each init's start from its seed (n_jobs set)",
}
# eps for SMACOF's relative stopping test (scikit-learn >= 1.7, and the torch SMACOF).
RELATIVE_TEST_EPS = 1e-6
# Beyond this many rows a t-SNE through TorchDR on the CPU (all N^2 pairs, each iteration) is
# told to take long: scikit-learn's Barnes-Hut t-SNE is the CPU's.
TORCH_CPU_TSNE_ROWS = 5000


def sklearn_auto_learning_rate(n_samples: int, early_exaggeration: float = 12.0) -> float:
    """scikit-learn's ``learning_rate="auto"``: max(N / early_exaggeration / 4, 50)."""
    return float(max(n_samples / early_exaggeration / 4, 50.0))


def tsne_n_neighbors(n_samples: int, perplexity: float) -> int:
    """The neighbours scikit-learn's Barnes-Hut t-SNE uses for P: min(N - 1, int(3 perplexity + 1))."""
    return int(min(n_samples - 1, int(3.0 * perplexity + 1)))


def iteration_parameter_name(param_names) -> str:
    """The name of cuML TSNE's iteration count: ``max_iter``, or ``n_iter`` in the older releases."""
    names = set(param_names)
    return "max_iter" if "max_iter" in names or "n_iter" not in names else "n_iter"


def cuml_tsne_kwargs(
    n_samples: int,
    *,
    perplexity: float = 30.0,
    early_exaggeration: float = 12.0,
    learning_rate="auto",
    max_iter: int = 1000,
    init: str = "random",
    random_state=None,
    method: str = "fft",
    iteration_name: str = "max_iter",
) -> dict:
    """Keyword arguments for ``cuml.manifold.TSNE`` that mean what scikit-learn's TSNE means.

    ``learning_rate`` is in scikit-learn's units ("auto" or a number); it is resolved as
    scikit-learn resolves it and scaled by :data:`CUML_LEARNING_RATE_FACTOR`.
    ``learning_rate_method="none"`` stops cuML from replacing the learning rate, early
    exaggeration and neighbour count with its own size-based values ("adaptive", its default).
    The neighbour count, exaggeration phase and momenta are scikit-learn's.

    What cannot be matched: without "adaptive", cuML doubles the learning rate after the
    exaggeration phase; its random init is uniform on [-1e-4, 1e-4] (scikit-learn: normal,
    sd 1e-4); ``method`` is cuML's gradient approximation ("fft"; scikit-learn uses Barnes-Hut).
    """
    if learning_rate == "auto":
        learning_rate = sklearn_auto_learning_rate(n_samples, early_exaggeration)
    return {
        "n_components": 2,  # cuML's TSNE makes 2-D maps only
        "perplexity": float(perplexity),
        "early_exaggeration": float(early_exaggeration),
        "late_exaggeration": 1.0,
        "exaggeration_iter": min(TSNE_EXPLORATION_ITER, int(max_iter)),
        "learning_rate": float(learning_rate) * CUML_LEARNING_RATE_FACTOR,
        "learning_rate_method": "none",
        iteration_name: int(max_iter),
        "n_neighbors": tsne_n_neighbors(n_samples, perplexity),
        "pre_momentum": TSNE_PRE_MOMENTUM,
        "post_momentum": TSNE_POST_MOMENTUM,
        "min_grad_norm": 1e-7,
        "metric": "euclidean",
        "square_distances": True,  # scikit-learn's P comes from squared euclidean distances
        "init": init,
        "method": method,
        "angle": 0.5,
        "random_state": random_state,
    }


def sklearn_tsne_kwargs(
    *, perplexity=30.0, early_exaggeration=12.0, learning_rate="auto", max_iter=1000, init="random", random_state=None
) -> dict:
    return {
        "n_components": 2,
        "perplexity": float(perplexity),
        "early_exaggeration": float(early_exaggeration),
        "learning_rate": learning_rate,
        "max_iter": int(max_iter),
        "init": init,
        "method": "barnes_hut",
        "angle": 0.5,
        "random_state": random_state,
    }


def reference_mds_eps(sklearn_version: str) -> float:
    """The ``eps`` that stops SMACOF where the reference's default eps=1e-3 stopped it.

    The reference's SMACOF stopped when ``old - stress / sum(|x_i|)`` fell under eps, a test on
    an unnormalised quantity that practically never fires on pixel data: it ran all max_iter
    iterations. scikit-learn 1.7 replaced it by a relative stress decrease, under which eps=1e-3
    would stop after a few iterations. So: 1e-3 for a scikit-learn with the old test,
    :data:`RELATIVE_TEST_EPS` for one with the relative test.
    """
    major, minor = (int(part) for part in sklearn_version.split(".")[:2])
    return 1e-3 if (major, minor) < (1, 7) else RELATIVE_TEST_EPS


def sklearn_mds_kwargs(accepted: set[str], sklearn_version: str, random_state=None, **overrides) -> dict:
    """The reference MDS parameters in the spelling the installed scikit-learn accepts."""
    params = {**REFERENCE_MDS, "eps": reference_mds_eps(sklearn_version), "random_state": random_state, **overrides}
    if "metric_mds" not in accepted:  # before 1.8, `metric` was the metric/non-metric switch
        params["metric"] = params.pop("metric_mds")
    if "init" not in accepted:  # before 1.8 random init was the only one (and not a parameter)
        if params.pop("init") != "random":
            raise ValueError("this scikit-learn's MDS supports only random initialisation")
    return params


class _Embedding(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared plumbing: the backend lookup and ``fit`` through ``fit_transform``."""

    algorithm: str

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def _implementation(self):
        factory, self.place_ = implementation(self.algorithm, select_backend(self.backend))
        return factory

    def _verbosity(self) -> dict:
        """scikit-learn's ``verbose`` (its progress prints, see labkit.progress.printed_lines); not a
        result-changing parameter, so kept out of ``params_``. The torch places report through
        the progress log themselves."""
        return {"verbose": int(self.verbose)} if getattr(self, "verbose", 0) and self.place_ == "sklearn" else {}

    @property
    def _n_features_out(self) -> int:
        return self.embedding_.shape[1]


class TSNE(_Embedding):
    """t-SNE with scikit-learn's meaning of every parameter, on cuML, torch (TorchDR) or scikit-learn.

    ``cuml_method`` is cuML's gradient approximation ("fft" or "barnes_hut") and is used only
    on cuML; scikit-learn always runs Barnes-Hut; TorchDR computes the exact gradient (all
    pairs: for a GPU). As in scikit-learn, ``perplexity`` must be less than the number of rows
    and there is no ``transform`` (t-SNE embeds only the rows it was fitted on). cuML and
    TorchDR compute in float32; scikit-learn gets float64.

    ``verbose`` is scikit-learn's (progress printed to stdout; not passed to cuML, whose
    ``verbose`` is a log level; TorchDR's iterations go to the progress log anyway).

    Fitted: ``embedding_``, ``estimator_``, ``place_``, ``params_``, ``learning_rate_``
    (scikit-learn units), ``kl_divergence_``, ``n_iter_``, ``n_features_in_``.
    """

    algorithm = "tsne"

    def __init__(
        self,
        perplexity: float = 30.0,
        early_exaggeration: float = 12.0,
        learning_rate="auto",
        max_iter: int = 1000,
        init: str = "random",
        random_state=None,
        backend: str = "auto",
        cuml_method: str = "fft",
        verbose: int = 0,
    ) -> None:
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.init = init
        self.random_state = random_state
        self.backend = backend
        self.cuml_method = cuml_method
        self.verbose = verbose

    def fit_transform(self, X, y=None) -> np.ndarray:
        if self.max_iter < TSNE_EXPLORATION_ITER:
            raise ValueError(f"max_iter must be >= {TSNE_EXPLORATION_ITER} (scikit-learn's exploration phase), got {self.max_iter}")
        factory = self._implementation()
        # cuML computes in float32; scikit-learn gets float64, as the reference's DataFrame was.
        X = validate_data(self, X, dtype=np.float32 if self.place_ == "cuml" else np.float64, ensure_min_samples=2)
        if not self.perplexity < len(X):  # scikit-learn's rule, checked here for cuML too
            raise ValueError("perplexity must be less than n_samples")
        device = place_device(self.place_)
        if device == "cpu" and len(X) > TORCH_CPU_TSNE_ROWS:
            announce(f"t-SNE through TorchDR on the CPU computes all {len(X)}^2 pairs at each of {self.max_iter} "
                     "iterations, which takes long (the progress lines say how long); scikit-learn's Barnes-Hut "
                     "t-SNE (--backend sklearn) is the CPU's")
        common = dict(
            perplexity=self.perplexity,
            early_exaggeration=self.early_exaggeration,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            init=self.init,
            random_state=self.random_state,
        )
        if self.place_ == "cuml":
            self.params_ = cuml_tsne_kwargs(
                len(X), method=self.cuml_method, iteration_name=iteration_parameter_name(parameter_names(factory)), **common
            )
        elif device is not None:  # TorchDRTSNE: scikit-learn's parameters, and where it computes
            self.params_ = {"n_components": 2, **common, "device": device, "dtype": "float32"}
        else:
            self.params_ = sklearn_tsne_kwargs(**common)
        self.estimator_ = factory(**self.params_, **self._verbosity())
        self.embedding_ = to_numpy(self.estimator_.fit_transform(X)).astype(np.float64)
        self.learning_rate_ = (
            sklearn_auto_learning_rate(len(X), self.early_exaggeration)
            if self.learning_rate == "auto"
            else float(self.learning_rate)
        )
        kl = getattr(self.estimator_, "kl_divergence_", None)
        self.kl_divergence_ = None if kl is None else float(kl)
        n_iter = getattr(self.estimator_, "n_iter_", None)
        self.n_iter_ = None if n_iter is None else int(n_iter)
        return self.embedding_


class LLE(_Embedding):
    """Standard locally linear embedding (scikit-learn; cuML has none, so it falls back).

    The defaults other than ``n_neighbors`` are scikit-learn's, unchanged since 1.2
    (reg=1e-3, eigen_solver="auto" = ARPACK shift-invert above 200 rows, tol=1e-6,
    max_iter=100). ARPACK fails with "Factor is exactly singular" when the neighbourhood graph
    splits into well-separated groups (tight clusters); up to ``dense_fallback_rows`` rows the
    fit is then repeated with the dense eigensolver (O(N^3), so not beyond that).
    ``transform`` maps new rows as scikit-learn's LocallyLinearEmbedding does (float64).

    Fitted: ``embedding_``, ``estimator_``, ``place_``, ``params_`` (``eigen_solver`` is the one
    that succeeded), ``reconstruction_error_``, ``n_features_in_``.
    """

    algorithm = "lle"

    def __init__(
        self, n_neighbors: int = 10, random_state=None, backend: str = "auto", dense_fallback_rows: int = 5000
    ) -> None:
        self.n_neighbors = n_neighbors
        self.random_state = random_state
        self.backend = backend
        self.dense_fallback_rows = dense_fallback_rows

    def fit_transform(self, X, y=None) -> np.ndarray:
        X = validate_data(self, X, dtype=np.float64)
        if X.shape[1] < 2:  # LLE cannot map to more dimensions than the data have
            raise ValueError(f"LLE makes 2-D maps, which needs at least 2 features; got n_features={X.shape[1]}")
        factory = self._implementation()
        self.params_ = {
            "n_neighbors": int(self.n_neighbors),
            "n_components": 2,
            "method": "standard",
            "reg": 1e-3,
            "eigen_solver": "auto",
            "random_state": self.random_state,
        }
        try:
            self.estimator_ = factory(**self.params_)
            embedding = self.estimator_.fit_transform(X)
        except ValueError as exc:
            if "ARPACK" not in str(exc) or len(X) > self.dense_fallback_rows:
                raise
            announce(f"LLE: ARPACK failed on {len(X)} rows (singular shift-invert factor); using the dense eigensolver")
            self.params_["eigen_solver"] = "dense"
            self.estimator_ = factory(**self.params_)
            embedding = self.estimator_.fit_transform(X)
        self.embedding_ = to_numpy(embedding).astype(np.float64)
        self.reconstruction_error_ = float(self.estimator_.reconstruction_error_)
        return self.embedding_

    def transform(self, X) -> np.ndarray:
        """New rows placed in the fitted map by their barycentric weights (float64)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return to_numpy(self.estimator_.transform(X)).astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # scikit-learn's LLE is marked non-deterministic on 32-bit and PowerPC machines
        # (its eigensolvers); this one runs it, so it inherits that.
        from sklearn.manifold import LocallyLinearEmbedding
        from sklearn.utils import get_tags

        tags.non_deterministic = get_tags(LocallyLinearEmbedding()).non_deterministic
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


class MDS(_Embedding):
    """Metric MDS by SMACOF with the reference's settings by default, on torch or scikit-learn.

    Like scikit-learn's MDS it has no ``transform``: SMACOF places only the rows it was fitted
    on. Data are float64. On a torch place (:class:`reduction.torch_places.smacof.TorchSMACOF`)
    the ``n_init`` runs go as one batch, in float64, with scikit-learn's algorithm, stopping
    rule and random starts: the same map as scikit-learn's for the same ``random_state``.

    ``n_jobs`` says how the ``n_init`` SMACOF runs' random starts are drawn; the algorithm, its
    settings and the choice of the run with the lowest stress are the same either way:

    * None (the default, the reference's): scikit-learn's serial loop. Each run draws its random
      start from the one ``random_state`` stream in turn (scikit-learn: one run after another).
    * a number of workers (-1: all cores): scikit-learn's parallel branch. One seed per run is
      drawn from ``random_state`` first and each run starts from its own seed (scikit-learn:
      the runs in up to ``n_init`` parallel processes). Other random starts than the serial
      loop, so another map for the same ``random_state``; the same map for any number of
      workers, including one core (a count that would come to one worker is given as 2, which
      is what makes scikit-learn take this branch).

    ``verbose`` is scikit-learn's (each SMACOF iteration's stress printed to stdout; with
    ``n_jobs`` by the worker processes, straight to the terminal). The torch SMACOF reports
    each run's end through the progress log anyway.

    Fitted: ``embedding_``, ``estimator_``, ``place_``, ``params_`` (``n_jobs`` as given to the
    implementation), ``init_draws_`` ("serial" or "seeded", see :data:`MDS_INIT_DRAWS`),
    ``stress_`` (raw stress), ``stress_1_`` (normalised), ``n_iter_``, ``n_features_in_``.
    """

    algorithm = "mds"

    def __init__(
        self, n_init: int = 4, max_iter: int = 300, random_state=None, backend: str = "auto", n_jobs=None, verbose: int = 0
    ) -> None:
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state
        self.backend = backend
        self.n_jobs = n_jobs
        self.verbose = verbose

    def fit_transform(self, X, y=None) -> np.ndarray:
        import sklearn
        from sklearn.metrics import euclidean_distances

        X = validate_data(self, X, dtype=np.float64)
        factory = self._implementation()
        if self.n_jobs is None:
            workers, self.init_draws_ = None, "serial"
        else:
            from joblib import effective_n_jobs

            workers, self.init_draws_ = max(2, min(int(self.n_init), effective_n_jobs(self.n_jobs))), "seeded"
        device = place_device(self.place_)
        if device is None:
            self.params_ = sklearn_mds_kwargs(
                parameter_names(factory), sklearn.__version__, self.random_state, n_init=int(self.n_init),
                max_iter=int(self.max_iter), n_jobs=workers,
            )
        else:  # TorchSMACOF: scikit-learn's (relative) stopping test, its float64
            self.params_ = {**REFERENCE_MDS, "eps": RELATIVE_TEST_EPS, "random_state": self.random_state,
                            "n_init": int(self.n_init), "max_iter": int(self.max_iter), "n_jobs": workers,
                            "device": device, "dtype": "float64"}
        self.estimator_ = factory(**self.params_, **self._verbosity())
        self.embedding_ = to_numpy(self.estimator_.fit_transform(X)).astype(np.float64)
        self.init_draws_ = getattr(self.estimator_, "init_draws_", self.init_draws_)  # the torch SMACOF says
        self.stress_ = float(self.estimator_.stress_)
        self.n_iter_ = int(getattr(self.estimator_, "n_iter_", -1))
        # Kruskal's Stress-1 (scikit-learn's normalized_stress): raw stress over the sum of
        # squared map distances, square-rooted; 0 is perfect, 0.2 poor. Comparable across sizes.
        squared = float((euclidean_distances(self.embedding_) ** 2).sum()) / 2
        self.stress_1_ = float(np.sqrt(self.stress_ / squared)) if squared > 0 else None
        return self.embedding_
