"""2-D maps of the images: t-SNE, LLE and MDS as estimators that run on cuML or scikit-learn.

Each class stores its parameters in ``__init__``, fits with ``fit`` / ``fit_transform`` and keeps
``embedding_`` (NumPy, [n_samples, 2]), ``backend_`` (the place it ran: "cuml", "sklearn-cuda"
or "sklearn", from :func:`reduction.backend.implementation`) and ``params_`` (the keyword
arguments actually given to the implementation, for the results file).

The reference study ran scikit-learn 1.2. Where a default moved since, the reference's value is
set explicitly (see :data:`REFERENCE_MDS` and :func:`reference_mds_eps`), and cuML's t-SNE is
called so that its parameters mean what scikit-learn's mean (:func:`cuml_tsne_kwargs`).

Two numbers compare the maps: :func:`trustworthiness_on_sample` (are the map's neighbours
neighbours in pixel space?) and :func:`knn_accuracy` (how well do the letters separate in 2-D?).
"""

from __future__ import annotations

import inspect

import numpy as np

from reduction.backend import implementation, select_backend, to_numpy

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

# The reference's MDS: scikit-learn 1.2's defaults, written out because 1.9 changed them
# (n_init 4 -> 1 in 1.9; `init` added in 1.8 and warns unless given; `metric` renamed
# `metric_mds` in 1.8; normalized_stress "warn" (= False for metric MDS) -> "auto" in 1.4).
# eps depends on the installed scikit-learn: see reference_mds_eps().
REFERENCE_MDS = {
    "n_components": 2,
    "metric_mds": True,
    "n_init": 4,
    "init": "random",
    "max_iter": 300,
    "normalized_stress": False,
    "n_jobs": None,  # n_jobs > 1 draws other seeds for the n_init runs than the serial loop
}


def sklearn_auto_learning_rate(n_samples: int, early_exaggeration: float = 12.0) -> float:
    """scikit-learn's ``learning_rate="auto"``: max(N / early_exaggeration / 4, 50)."""
    return float(max(n_samples / early_exaggeration / 4, 50.0))


def tsne_n_neighbors(n_samples: int, perplexity: float) -> int:
    """The neighbours scikit-learn's Barnes-Hut t-SNE uses for P: min(N - 1, int(3 perplexity + 1))."""
    return int(min(n_samples - 1, int(3.0 * perplexity + 1)))


def iteration_parameter_name(param_names) -> str:
    """cuML renamed TSNE's ``n_iter`` to ``max_iter`` in 25.12 (``n_iter`` gone in 26.02)."""
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
    sd 1e-4); ``method`` is cuML's gradient approximation ("fft", deterministic for a given
    ``random_state`` since cuML 26.08; scikit-learn uses Barnes-Hut).
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
    """The ``eps`` that stops SMACOF where scikit-learn 1.2's default eps=1e-3 stopped it.

    Before 1.7, SMACOF stopped when ``old - stress / sum(|x_i|)`` fell under eps, a test on an
    unnormalised quantity; on pixel data it practically never fires, so 1.2 ran all max_iter
    iterations (300 of 300 on 800 Sign-MNIST rows). 1.7 fixed the test to a relative stress
    decrease and moved the default to 1e-6 with it; eps=1e-3 under the fixed test stops after
    ~10 iterations (measured on the same rows), far from the reference. So: 1e-3 for a
    scikit-learn that still has the old test, 1e-6 for one with the new test.
    """
    major, minor = (int(part) for part in sklearn_version.split(".")[:2])
    return 1e-3 if (major, minor) < (1, 7) else 1e-6


def sklearn_mds_kwargs(accepted: set[str], sklearn_version: str, random_state=None, **overrides) -> dict:
    """The reference MDS parameters in the spelling the installed scikit-learn accepts."""
    params = {**REFERENCE_MDS, "eps": reference_mds_eps(sklearn_version), "random_state": random_state, **overrides}
    if "metric_mds" not in accepted:  # before 1.8, `metric` was the metric/non-metric switch
        params["metric"] = params.pop("metric_mds")
    if "init" not in accepted:  # before 1.8 random init was the only one (and not a parameter)
        if params.pop("init") != "random":
            raise ValueError("this scikit-learn's MDS supports only random initialisation")
    return params


def _param_names(factory) -> set[str]:
    getter = getattr(factory, "_get_param_names", None)
    if getter is not None:
        try:
            return set(getter())
        except Exception:  # an unbound classmethod quirk; fall back to the signature
            pass
    return set(inspect.signature(factory).parameters)


class _Embedding:
    """Shared plumbing: the backend lookup, ``fit`` through ``fit_transform``, ``get_params``."""

    algorithm: str

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def _implementation(self):
        factory, self.backend_ = implementation(self.algorithm, select_backend(self.backend))
        return factory

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}


class TSNE(_Embedding):
    """t-SNE with scikit-learn's meaning of every parameter, on cuML or scikit-learn.

    Fitted: ``embedding_``, ``backend_``, ``params_``, ``learning_rate_`` (scikit-learn units),
    ``kl_divergence_``, ``n_iter_``.
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
    ) -> None:
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.init = init
        self.random_state = random_state
        self.backend = backend
        self.cuml_method = cuml_method

    def fit_transform(self, X, y=None) -> np.ndarray:
        if self.max_iter < TSNE_EXPLORATION_ITER:
            raise ValueError(f"max_iter must be >= {TSNE_EXPLORATION_ITER} (scikit-learn's exploration phase), got {self.max_iter}")
        factory = self._implementation()
        common = dict(
            perplexity=self.perplexity,
            early_exaggeration=self.early_exaggeration,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            init=self.init,
            random_state=self.random_state,
        )
        if self.backend_ == "cuml":
            self.params_ = cuml_tsne_kwargs(
                len(X), method=self.cuml_method, iteration_name=iteration_parameter_name(_param_names(factory)), **common
            )
        else:
            self.params_ = sklearn_tsne_kwargs(**common)
        # cuML computes in float32; scikit-learn gets float64, as the reference's DataFrame was.
        X = np.asarray(X, dtype=np.float32 if self.backend_ == "cuml" else np.float64)
        model = factory(**self.params_)
        self.embedding_ = to_numpy(model.fit_transform(X)).astype(np.float64)
        self.learning_rate_ = (
            sklearn_auto_learning_rate(len(X), self.early_exaggeration)
            if self.learning_rate == "auto"
            else float(self.learning_rate)
        )
        kl = getattr(model, "kl_divergence_", None)
        self.kl_divergence_ = None if kl is None else float(kl)
        n_iter = getattr(model, "n_iter_", None)
        self.n_iter_ = None if n_iter is None else int(n_iter)
        return self.embedding_


class LLE(_Embedding):
    """Standard locally linear embedding (scikit-learn; cuML has none, so it falls back).

    The defaults other than ``n_neighbors`` are scikit-learn's, unchanged since 1.2
    (reg=1e-3, eigen_solver="auto" = ARPACK shift-invert above 200 rows, tol=1e-6,
    max_iter=100). ARPACK fails with "Factor is exactly singular" when the neighbourhood graph
    splits into well-separated groups (tight clusters); up to ``dense_fallback_rows`` rows the
    fit is then repeated with the dense eigensolver (O(N^3), so not beyond that).
    Fitted: ``embedding_``, ``backend_``, ``params_`` (``eigen_solver`` is the one that
    succeeded), ``reconstruction_error_``.
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
        from reduction.backend import announce

        X = np.asarray(X, dtype=np.float64)
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
            model = factory(**self.params_)
            embedding = model.fit_transform(X)
        except ValueError as exc:
            if "ARPACK" not in str(exc) or len(X) > self.dense_fallback_rows:
                raise
            announce(f"LLE: ARPACK failed on {len(X)} rows (singular shift-invert factor); using the dense eigensolver")
            self.params_["eigen_solver"] = "dense"
            model = factory(**self.params_)
            embedding = model.fit_transform(X)
        self.embedding_ = to_numpy(embedding).astype(np.float64)
        self.reconstruction_error_ = float(model.reconstruction_error_)
        return self.embedding_


class MDS(_Embedding):
    """Metric MDS by SMACOF with the reference's (scikit-learn 1.2) settings by default.

    Fitted: ``embedding_``, ``backend_``, ``params_``, ``stress_`` (raw stress), ``stress_1_``
    (normalised), ``n_iter_``.
    """

    algorithm = "mds"

    def __init__(self, n_init: int = 4, max_iter: int = 300, random_state=None, backend: str = "auto") -> None:
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state
        self.backend = backend

    def fit_transform(self, X, y=None) -> np.ndarray:
        import sklearn

        X = np.asarray(X, dtype=np.float64)
        factory = self._implementation()
        self.params_ = sklearn_mds_kwargs(
            _param_names(factory), sklearn.__version__, self.random_state, n_init=int(self.n_init), max_iter=int(self.max_iter)
        )
        model = factory(**self.params_)
        self.embedding_ = to_numpy(model.fit_transform(X)).astype(np.float64)
        self.stress_ = float(model.stress_)
        self.n_iter_ = int(getattr(model, "n_iter_", -1))
        # Kruskal's Stress-1 (scikit-learn's normalized_stress): raw stress over the sum of
        # squared map distances, square-rooted; 0 is perfect, 0.2 poor. Comparable across sizes.
        from sklearn.metrics import euclidean_distances

        squared = float((euclidean_distances(self.embedding_) ** 2).sum()) / 2
        self.stress_1_ = float(np.sqrt(self.stress_ / squared)) if squared > 0 else None
        return self.embedding_


def sample_positions(n_rows: int, n: int, seed: int) -> np.ndarray:
    """``n`` sorted row positions out of ``n_rows`` (all of them when n >= n_rows)."""
    if n >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=n, replace=False))


def trustworthiness_on_sample(X, embedding, n_neighbors: int = 5, n_sample: int = 2000, seed: int = 22) -> float:
    """scikit-learn's trustworthiness of ``embedding`` on ``n_sample`` of its rows.

    1 means every map neighbour is a pixel-space neighbour; the neighbourhoods are those within
    the sample (all pairwise distances of the sample, so the cost is n_sample^2).
    """
    from sklearn.manifold import trustworthiness

    rows = sample_positions(len(X), n_sample, seed)
    return float(
        trustworthiness(np.asarray(X, dtype=np.float64)[rows], np.asarray(embedding)[rows], n_neighbors=n_neighbors)
    )


def knn_accuracy(embedding, labels, n_neighbors: int = 5, n_folds: int = 5, seed: int = 22) -> float | None:
    """Stratified k-fold cross-validated accuracy of a k-NN classifier on the 2-D points.

    How well the letters separate in the map. None when a class has too few rows for two folds.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    counts = np.unique(labels, return_counts=True)[1]
    folds = min(n_folds, int(counts.min())) if len(counts) > 1 else 0
    if folds < 2:
        return None
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=n_neighbors), np.asarray(embedding), labels, cv=cv)
    return float(scores.mean())
