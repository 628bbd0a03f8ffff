"""Metric MDS by SMACOF in torch: every start in one batched tensor program, scikit-learn's algorithm.

:class:`TorchSMACOF` is scikit-learn 1.9's ``MDS(metric_mds=True)`` (``sklearn/manifold/_mds.py``,
``_smacof_single`` and ``smacof``) with its ``n_init`` starts held as one ``[n_init, n, 2]``
tensor and moved together, on any torch device and dtype. Per start, exactly scikit-learn's
steps:

1. the start: ``random_state.uniform(size=n * n_components)`` (see :func:`draw_random_starts`
   for how the starts share one random stream or get one seed each), or a given array, or
   classical MDS (``init="classical_mds"``);
2. each iteration, the Guttman transform ``X <- B(X) X / n`` with ``B = -D / d`` off the diagonal
   and the row sums of ``D / d`` on it, where ``d`` are the current map distances with exact
   zeros replaced by 1e-5 (:func:`guttman_transform`);
3. the raw stress ``sum_ij (d_ij - D_ij)^2 / 2`` over the full matrix (each pair counted twice,
   halved), from the new map's distances;
4. from the second iteration on, stop when the stress fell by less than ``eps`` relative to
   ``sum_ij d_ij^2 / 2`` (scikit-learn 1.7's test); at most ``max_iter`` iterations;
5. the reported stress is the raw stress, or Stress-1 ``sqrt(stress / (sum d^2 / 2))`` with
   ``normalized_stress=True``; ``n_iter`` is the iterations that start ran.

A start that has stopped is frozen and taken out of the batch; the others go on. The best start
is the one with the lowest reported stress, the first of equal ones (scikit-learn's serial loop
keeps the first strictly lower one; its parallel branch takes ``argmin``: the same start).
``n_iter_`` is the best start's.

Distances are computed as scikit-learn's ``euclidean_distances`` computes them (squared norms
minus twice the dot products, negatives clipped to 0, the diagonal set to 0, square root), the
dissimilarities once in float64 and then cast to ``dtype``. The results agree with
scikit-learn's to rounding (tests/test_torch_smacof.py states how closely).

Progress goes to the ``sign_mnist_lab`` logger: a line when the batch starts, one when each
start stops (its stress and iterations), and one every :data:`HEARTBEAT_SECONDS` in between.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state, check_symmetric
from sklearn.utils.validation import validate_data

from reduction.torch_places.common import Heartbeat, resolve_device, resolve_dtype, to_tensor

# scikit-learn replaces exact zeros among the map distances by this before dividing by them.
ZERO_DISTANCE = 1e-5
INIT_CHOICES = ("random", "classical_mds")
METRIC_CHOICES = ("euclidean", "precomputed")


def draw_random_starts(n_samples: int, n_components: int, n_init: int, random_state=None, draws: str = "serial") -> np.ndarray:
    """scikit-learn's random starts, ``[n_init, n_samples, n_components]`` float64 in [0, 1).

    ``draws="serial"`` (scikit-learn's loop, ``effective_n_jobs(n_jobs) == 1``): the starts are
    drawn one after another from one ``check_random_state(random_state)`` stream.
    ``draws="seeded"`` (its parallel branch): first one seed per start,
    ``randint(iinfo(int32).max, size=n_init)``, then each start from ``RandomState(seed)``.
    """
    rng = check_random_state(random_state)
    size = n_samples * n_components
    if draws == "serial":
        streams = [rng] * n_init
    elif draws == "seeded":
        streams = [check_random_state(seed) for seed in rng.randint(np.iinfo(np.int32).max, size=n_init)]
    else:
        raise ValueError(f"draws must be 'serial' or 'seeded', got {draws!r}")
    return np.stack([stream.uniform(size=size).reshape(n_samples, n_components) for stream in streams])


def euclidean_distances_into(X: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Pairwise distances of each configuration in ``X`` [a, n, c], written into ``out`` [a, n, n].

    scikit-learn's ``euclidean_distances(X)``: ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j`` clipped at 0, the
    diagonal 0, square-rooted. The three terms come from one batched product of
    ``[-2x, |x|^2, 1]`` and ``[x, 1, |x|^2]``, so the matrix is written once.
    """
    squared = (X * X).sum(-1, keepdim=True)
    ones = torch.ones_like(squared)
    torch.bmm(torch.cat([-2 * X, squared, ones], -1), torch.cat([X, ones, squared], -1).mT, out=out)
    out.clamp_min_(0)
    out.diagonal(dim1=1, dim2=2).zero_()
    return out.sqrt_()


def dissimilarities(X: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``X`` [n, features], as :func:`euclidean_distances_into`."""
    return euclidean_distances_into(X[None], torch.empty((1, len(X), len(X)), dtype=X.dtype, device=X.device))[0]


def guttman_transform(X: torch.Tensor, D: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """One SMACOF update of the configurations ``X`` [a, n, c]: ``B(X) X / n``. Overwrites ``distances``.

    ``distances`` [a, n, n] are the current map distances, exact zeros counting as
    :data:`ZERO_DISTANCE`; the buffer ends up holding ``D / d``. ``B = diag(rowsum(D / d)) - D / d``
    is never formed: one batched product of ``D / d`` with ``[X, 1]`` gives ``(D / d) X`` and the
    row sums, and ``B X = rowsum * X - (D / d) X``.

    Zeros: the diagonal is always 0 (set to :data:`ZERO_DISTANCE` directly). Elsewhere a 0 means
    two coincident points, which is rare; rather than scan every distance for zeros, the
    division is done and a zero shows as a non-finite row sum (``D / 0`` is inf or nan, and a
    positive float64 or float32 distance is never small enough for ``D / d`` to overflow); only
    then are those entries set to ``D / ZERO_DISTANCE``, what scikit-learn's replacement gives.
    """
    distances.diagonal(dim1=1, dim2=2).fill_(ZERO_DISTANCE)
    ratio = torch.div(D, distances, out=distances)
    augmented = torch.cat([X, torch.ones_like(X[..., :1])], -1)
    products = torch.bmm(ratio, augmented)
    if not bool(torch.isfinite(products[..., -1]).all()):
        undefined = ~torch.isfinite(ratio)
        ratio[undefined] = D.expand_as(ratio)[undefined] / ZERO_DISTANCE
        products = torch.bmm(ratio, augmented)
    return (products[..., -1:] * X - products[..., :-1]) * (1.0 / X.shape[1])


def stress_and_square_sum(X: torch.Tensor, D: torch.Tensor, distances: torch.Tensor, D_square_sum: float) -> torch.Tensor:
    """[2, a]: each configuration's raw stress ``sum (d - D)^2 / 2`` and ``sum d^2``, in float64.

    In float64 the stress is expanded as ``(sum d^2 - 2 sum d D + sum D^2) / 2``: one
    matrix-vector product reads the distances once, and ``sum d^2`` comes from the coordinates
    (``2n sum |x|^2 - 2 |sum x|^2``). Its rounding error, about 1e-16 of ``sum D^2``, is some
    1e-8 of the smallest stress decrease that ``eps``=1e-6 tells apart, so the stopping test
    decides as scikit-learn's does. In lower precision that margin is gone, and the
    differences are summed directly.
    """
    n = X.shape[1]
    if distances.dtype == torch.float64:
        cross = torch.mv(distances.reshape(len(X), -1), D.reshape(-1))
        square_sum = 2 * n * (X * X).sum((1, 2)) - 2 * X.sum(1).square().sum(-1)
        return torch.stack([(square_sum - 2 * cross + D_square_sum) / 2, square_sum])
    measures = torch.empty((2, len(X)), dtype=torch.float64, device=X.device)
    difference = torch.empty_like(D)
    for k in range(len(X)):
        flat = distances[k].reshape(-1)
        torch.sub(distances[k], D, out=difference)
        measures[0, k] = difference.reshape(-1).dot(difference.reshape(-1)) / 2
        measures[1, k] = flat.dot(flat)
    return measures


def smacof_batched(D: torch.Tensor, starts: torch.Tensor, *, max_iter: int = 300, eps: float = 1e-6,
                   normalized_stress: bool = False, on_stop=None, on_iteration=None):
    """Metric SMACOF from each start in ``starts`` [S, n, c] against dissimilarities ``D`` [n, n].

    Returns (configurations [S, n, c], stresses [S] as floats, iterations [S] as ints), each
    start run by scikit-learn's rule on its own (see the module's docstring). ``on_stop(start,
    stress, n_iter, converged)`` is called as each start stops, ``on_iteration(it, running)``
    after each iteration with the number of starts still running.
    """
    n_starts, n = starts.shape[:2]
    X = starts.clone()
    # Slot k of the working buffers holds start order[k]; stopped starts leave, the rest move up.
    order = list(range(n_starts))
    distances = torch.empty((n_starts, n, n), dtype=X.dtype, device=X.device)
    euclidean_distances_into(X, distances)
    D_square_sum = float(D.reshape(-1).double().square().sum())
    final_X = torch.empty_like(X)
    stresses, n_iters = [0.0] * n_starts, [0] * n_starts
    old_stress: list[float | None] = [None] * n_starts
    for it in range(max_iter):
        active = len(order)
        X[:active] = guttman_transform(X[:active], D, distances[:active])
        euclidean_distances_into(X[:active], distances[:active])
        measures = stress_and_square_sum(X[:active], D, distances[:active], D_square_sum)
        stress_now, squared_sums = measures.tolist()
        stopped = []
        for k, start in enumerate(order):
            stress = stress_now[k]
            converged = old_stress[start] is not None and (old_stress[start] - stress) / (squared_sums[k] / 2) < eps
            old_stress[start] = stress
            if converged or it == max_iter - 1:
                if normalized_stress:
                    stress = float(np.sqrt(stress / (squared_sums[k] / 2)))
                stresses[start], n_iters[start] = stress, it + 1
                final_X[start] = X[k]
                stopped.append(k)
                if on_stop is not None:
                    on_stop(start, stress, it + 1, converged)
        if stopped:
            keep = [k for k in range(active) if k not in stopped]
            for new, old in enumerate(keep):
                if new != old:
                    X[new] = X[old]
                    distances[new] = distances[old]
            order = [order[k] for k in keep]
            if not order:
                break
        if on_iteration is not None:
            on_iteration(it, len(order))
    return final_X, stresses, n_iters


def best_start(stresses) -> int:
    """The start with the lowest stress, the first of equal ones (scikit-learn's choice)."""
    return int(np.argmin(np.asarray(stresses, dtype=float)))


class TorchSMACOF(BaseEstimator):
    """Metric MDS (SMACOF) with scikit-learn 1.9 ``MDS``'s parameters, all starts batched in torch.

    Parameters are scikit-learn's (the subset for metric MDS) plus where to compute:

    * ``n_components``, ``max_iter``, ``eps``, ``random_state``, ``normalized_stress``
      (``"auto"`` = False for metric MDS): as scikit-learn's.
    * ``metric_mds``: must be True (non-metric MDS is not implemented here).
    * ``n_init``: the starts, run together as one batch.
    * ``init``: "random" (``n_init`` random starts) or "classical_mds" (one start from
      scikit-learn's ``ClassicalMDS``, computed on the CPU). ``fit_transform(X, init=array)``
      takes one start [n, c] as scikit-learn's does, or several [S, n, c] (then S starts).
    * ``n_jobs``: only decides how the random starts are drawn, as in scikit-learn
      (:func:`draw_random_starts`): one stream when ``effective_n_jobs(n_jobs) == 1``, else one
      seed per start. The starts always run as one batch in this process.
    * ``metric``: "euclidean" (distances between the rows of X) or "precomputed" (X is the
      symmetric dissimilarity matrix).
    * ``device``: a torch device; None: CUDA when torch sees one, else the CPU.
    * ``dtype``: "float64" (scikit-learn's precision; the default) or "float32". The
      dissimilarities are computed in float64 either way. In float32 the stopping test
      (relative stress decrease under ``eps``=1e-6) is near the precision of the stress itself.

    Fitted: ``embedding_`` (NumPy float64 [n, c]), ``stress_``, ``n_iter_`` (the best start's),
    ``start_stress_`` and ``start_n_iter_`` (every start's, in start order), ``best_start_``,
    ``init_draws_`` ("serial", "seeded", "given" or "classical_mds"), ``device_``,
    ``n_features_in_``. Unlike scikit-learn it does not keep ``dissimilarity_matrix_`` (n x n).
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        metric_mds: bool = True,
        n_init: int = 1,
        init: str = "random",
        max_iter: int = 300,
        eps: float = 1e-6,
        n_jobs=None,
        random_state=None,
        metric: str = "euclidean",
        normalized_stress="auto",
        device=None,
        dtype: str = "float64",
    ) -> None:
        self.n_components = n_components
        self.metric_mds = metric_mds
        self.n_init = n_init
        self.init = init
        self.max_iter = max_iter
        self.eps = eps
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.metric = metric
        self.normalized_stress = normalized_stress
        self.device = device
        self.dtype = dtype

    def fit(self, X, y=None, init=None):
        self.fit_transform(X, init=init)
        return self

    def _check_params(self) -> None:
        if self.metric_mds is not True:
            raise ValueError("TorchSMACOF runs metric MDS only (metric_mds=True)")
        if self.init not in INIT_CHOICES:
            raise ValueError(f"init must be one of {', '.join(INIT_CHOICES)}, got {self.init!r}")
        if self.metric not in METRIC_CHOICES:
            raise ValueError(f"metric must be one of {', '.join(METRIC_CHOICES)}, got {self.metric!r}")
        for name in ("n_components", "n_init", "max_iter"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps!r}")

    def fit_transform(self, X, y=None, init=None) -> np.ndarray:
        self._check_params()
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        self.device_ = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype)
        n = len(X)
        if self.metric == "precomputed":
            D = to_tensor(check_symmetric(X, raise_exception=True), self.device_)
        else:
            D = dissimilarities(to_tensor(X, self.device_))
        starts = self._starts(n, D, init)
        normalized = (not self.metric_mds) if self.normalized_stress == "auto" else bool(self.normalized_stress)
        n_starts = len(starts)
        heartbeat = Heartbeat()
        heartbeat.line(f"SMACOF: {n_starts} start(s) on {n} rows as one batch on {self.device_} ({self.dtype}), "
                       f"up to {self.max_iter} iterations each")
        heartbeat.mark()

        def on_stop(start, stress, n_iter, converged):
            heartbeat.line(f"SMACOF start {start + 1}/{n_starts}: stress {stress:.6g} after {n_iter} iterations "
                           f"({'converged' if converged else 'max_iter reached'})")

        def on_iteration(it, running):
            heartbeat.beat(lambda: f"SMACOF iteration {it + 1}/{self.max_iter}: {running} of {n_starts} start(s) "
                                   f"running, at most {heartbeat.left(it + 1, self.max_iter)}")

        configurations, stresses, n_iters = smacof_batched(
            D.to(dtype), torch.as_tensor(starts, device=self.device_).to(dtype), max_iter=int(self.max_iter),
            eps=float(self.eps), normalized_stress=normalized, on_stop=on_stop, on_iteration=on_iteration,
        )
        self.best_start_ = best_start(stresses)
        self.start_stress_ = np.asarray(stresses, dtype=float)
        self.start_n_iter_ = np.asarray(n_iters, dtype=int)
        self.stress_ = float(stresses[self.best_start_])
        self.n_iter_ = int(n_iters[self.best_start_])
        self.embedding_ = configurations[self.best_start_].cpu().numpy().astype(np.float64)
        return self.embedding_

    def _starts(self, n: int, D: torch.Tensor, init) -> np.ndarray:
        """The start(s), [S, n, n_components] float64, and ``init_draws_`` saying where they came from."""
        if init is not None:
            starts = np.asarray(init, dtype=np.float64)
            if starts.ndim == 2:
                starts = starts[None]
            if starts.ndim != 3 or starts.shape[1] != n:
                raise ValueError(f"init must have shape (n_samples, n_components) or (n_starts, n_samples, "
                                 f"n_components) with n_samples={n}, got {np.shape(init)}")
            if len(starts) == 1 and self.n_init != 1:
                warnings.warn(f"Explicit initial positions passed: performing only one init of the MDS instead of {self.n_init}")
            self.init_draws_ = "given"
            return starts
        if self.init == "classical_mds":
            from sklearn.manifold import ClassicalMDS

            self.init_draws_ = "classical_mds"
            start = ClassicalMDS(metric="precomputed", n_components=self.n_components).fit_transform(D.cpu().numpy())
            return np.asarray(start, dtype=np.float64)[None]
        self.init_draws_ = "serial" if effective_n_jobs(self.n_jobs) == 1 else "seeded"
        return draw_random_starts(n, self.n_components, int(self.n_init), self.random_state, self.init_draws_)
