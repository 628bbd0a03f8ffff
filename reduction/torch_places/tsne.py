"""t-SNE through TorchDR 0.5, called so that it computes what scikit-learn's TSNE computes.

:func:`torchdr_tsne_kwargs` turns scikit-learn's t-SNE parameters (perplexity, early
exaggeration, learning rate "auto" or a number, max_iter, the start) into keyword arguments of
:class:`ScikitLearnTSNE` (TorchDR's ``TSNE`` with t-SNE's normalisation, below), and
:class:`TorchDRTSNE` is the scikit-learn-shaped class that draws scikit-learn's start and runs
it on a torch device. Read against TorchDR 0.5's source (``torchdr/neighbor_embedding/base.py``,
``tsne.py``, ``affinity_matcher.py``, ``base.py``) and scikit-learn 1.9's
(``sklearn/manifold/_t_sne.py``):

* Same: P from each row's ``3 * perplexity`` nearest neighbours by squared euclidean distance,
  a binary search per row for the perplexity, normalised to sum 1 (TorchDR keeps it
  unsymmetrised; its loss ``-sum P log Q`` has the gradient of the symmetrised P, which is
  scikit-learn's); the gradient is KL's exact gradient with the same factor 4 (TorchDR
  differentiates the loss; scikit-learn writes it out), so a learning rate means the same in
  both; early exaggeration multiplies the attraction as scikit-learn multiplies P.
* Set to match: the learning rate is resolved as scikit-learn resolves "auto",
  ``max(N / early_exaggeration / 4, 50)``, and given as a number: TorchDR's "auto" recomputes it
  without the exaggeration after the exploration phase (12x larger). TorchDR exaggerates
  iterations ``0..early_exaggeration_iter`` inclusive, so 249 gives scikit-learn's 250.
* The descent is scikit-learn's, as a torch optimizer (:func:`scikit_learn_descent`): momentum
  0.5 then 0.8, and its per-coordinate gains (+0.2 while the step keeps its direction, x0.8
  otherwise, at least 0.01), both restarted when exploration ends. TorchDR's own SGD has no
  gains, and in 0.5 its switch to momentum 0.8 never takes effect (the new optimizer is built
  on the parameter-group dicts the first one filled in, so lr and momentum stay at the first
  phase's values); with plain SGD the map stays far more compact than scikit-learn's.
* The normalisation of Q: t-SNE sums ``1 / (1 + d_ij^2)`` over pairs ``i != j``. TorchDR 0.5
  sums the whole matrix, diagonal included, which adds N to the sum: at the end of a
  1,000-iteration run on 1,500 Sign-MNIST rows the true sum is about 6,200, so N = 1,500 would
  weaken every repulsion by a fifth. :class:`ScikitLearnTSNE` overrides TorchDR's repulsive
  term (the hook its subclasses implement) to leave the diagonal out.
* The start is scikit-learn's own (:func:`sklearn_tsne_start`: ``1e-4`` standard normal from
  ``random_state``, or the PCA start scaled to standard deviation 1e-4), given to TorchDR as an
  array with ``init_scaling`` equal to its standard deviation so that TorchDR's rescaling leaves
  it as it is. TorchDR is given no ``random_state``: nothing random is left, and a seed would
  make it call its ``seed_everything``, which reseeds Python's, NumPy's and torch's global
  generators and switches on ``cudnn.benchmark`` for the whole process.
* Every row is a point (``process_duplicates=False``; TorchDR would map duplicate rows once).

What cannot be matched: scikit-learn approximates the repulsion with Barnes-Hut (angle 0.5)
in float32; TorchDR computes it exactly (O(N^2) per iteration: fast on a GPU, slow on a CPU
beyond a few thousand rows). TorchDR takes ``3 * perplexity`` neighbours (90), scikit-learn
``int(3 * perplexity + 1)`` (91). scikit-learn also stops a phase after 300 checks without
progress of the KL divergence; TorchDR stops only on the gradient norm (1e-7, checked every 50
iterations, as scikit-learn). t-SNE maps are chaotic: from the same start the two end in
different maps of the same quality, as two seeds of scikit-learn do.

``n_iter_`` counts as scikit-learn's (the index of the last iteration: 999 for 1,000).
``kl_divergence_`` is KL(P || Q) of the final map, computed exactly from TorchDR's P
symmetrised (scikit-learn reports its Barnes-Hut estimate).
"""

from __future__ import annotations

import numpy as np
import torch
import torchdr
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data
from torchdr.distance import pairwise_distances

from reduction.estimators.embedding import (
    TSNE_EXPLORATION_ITER,
    TSNE_POST_MOMENTUM,
    TSNE_PRE_MOMENTUM,
    sklearn_auto_learning_rate,
)
from reduction.torch_places.common import Heartbeat, resolve_device, resolve_dtype, to_tensor

# The TorchDR release this translation was read against (pyproject.toml pins it).
TORCHDR_VERSION = "0.5"
# scikit-learn's _gradient_descent: the smallest gain, and how gains grow and shrink.
TSNE_MIN_GAIN = 0.01
TSNE_GAIN_INCREMENT = 0.2
TSNE_GAIN_DECAY = 0.8
TSNE_MIN_GRAD_NORM = 1e-7
TSNE_CHECK_INTERVAL = 50  # scikit-learn's _N_ITER_CHECK
INIT_CHOICES = ("random", "pca")
# Rows per block when summing Q over all pairs for the KL divergence (memory ~ block x N).
KL_BLOCK_ROWS = 2048


def sklearn_tsne_start(X, init: str = "random", random_state=None, n_components: int = 2) -> np.ndarray:
    """scikit-learn 1.9 TSNE's start for ``X``, [N, n_components], as it makes it (float32 values).

    "random": ``1e-4 * standard_normal`` from ``check_random_state(random_state)``. "pca":
    scikit-learn's ``PCA(n_components, random_state)`` of X, scaled so that the first column has
    standard deviation 1e-4.
    """
    random_state = check_random_state(random_state)
    if init == "random":
        return 1e-4 * random_state.standard_normal(size=(len(X), n_components)).astype(np.float32)
    if init == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=n_components, random_state=random_state)
        pca.set_output(transform="default")
        start = pca.fit_transform(X).astype(np.float32, copy=False)
        return start / np.std(start[:, 0]) * 1e-4
    raise ValueError(f"init must be one of {', '.join(INIT_CHOICES)}, got {init!r}")


def scikit_learn_descent(exploration_iter: int = TSNE_EXPLORATION_ITER, momenta=(TSNE_PRE_MOMENTUM, TSNE_POST_MOMENTUM),
                         min_gain: float = TSNE_MIN_GAIN):
    """A new torch optimizer class doing scikit-learn's t-SNE descent, for one fit.

    Per step, as scikit-learn's ``_gradient_descent``: gains grow by 0.2 where the gradient
    points against the last update and shrink by x0.8 elsewhere (at least ``min_gain``); then
    ``update = momentum * update - lr * gains * grad`` and ``p += update``. Momentum is
    ``momenta[0]`` for the first ``exploration_iter`` steps, then ``momenta[1]``, with update and
    gains restarted (scikit-learn runs the two phases as two calls).

    TorchDR builds a new optimizer when exploration ends; the steps, updates and gains live
    with the class, not the instance, so they carry over and the phase is known by the step
    count. Hence a new class per fit. Optimizers take a single parameter: the embedding.
    """
    shared = {"steps": 0, "update": None, "gains": None}

    class ScikitLearnDescent(torch.optim.Optimizer):
        def __init__(self, params, lr):
            # Fresh group dicts: TorchDR hands over the dicts an earlier optimizer filled in.
            groups = [{"params": group["params"]} if isinstance(group, dict) else group for group in params]
            super().__init__(groups, {"lr": float(lr)})

        @torch.no_grad()
        def step(self, closure=None):
            (parameter,) = [p for group in self.param_groups for p in group["params"]]
            steps = shared["steps"]
            if steps in (0, exploration_iter):
                shared["update"] = torch.zeros_like(parameter)
                shared["gains"] = torch.ones_like(parameter)
            update, gains, grad = shared["update"], shared["gains"], parameter.grad
            momentum = momenta[0] if steps < exploration_iter else momenta[1]
            same_direction = update * grad < 0  # scikit-learn's "inc"
            gains.copy_(torch.where(same_direction, gains + TSNE_GAIN_INCREMENT, gains * TSNE_GAIN_DECAY))
            gains.clamp_min_(min_gain)
            update.mul_(momentum).sub_(gains * grad, alpha=self.param_groups[0]["lr"])
            parameter.add_(update)
            shared["steps"] = steps + 1

    return ScikitLearnDescent


class ScikitLearnTSNE(torchdr.TSNE):
    """TorchDR's TSNE with t-SNE's normalisation of Q (pairs i != j), the KL divergence, and progress.

    ``_compute_repulsive_loss`` is the hook TorchDR's neighbour-embedding subclasses implement;
    TorchDR's own sums ``1 / (1 + d^2)`` over the whole matrix, its diagonal of ones included.
    ``clear_memory`` (TorchDR calls it as a fit ends, before dropping P) first computes
    ``kl_divergence_``. With a :class:`Heartbeat` in ``heartbeat``, the affinity's end and,
    every :data:`HEARTBEAT_SECONDS`, the iteration with the map's KL divergence and the time
    left are reported (the KL divergence is computed only for a line that is due).
    """

    heartbeat: Heartbeat | None = None
    joint_: tuple | None = None  # the symmetrised P, for the KL divergence

    def _compute_repulsive_loss(self):
        q = (1 + pairwise_distances(self.embedding_, metric="sqeuclidean", backend=self.backend)).reciprocal()
        return torch.log(q.sum() - q.diagonal().sum())

    def on_affinity_computation_end(self):
        super().on_affinity_computation_end()
        self.joint_ = joint_probabilities(self.affinity_in_, self.NN_indices_)
        if self.heartbeat is not None:
            self.heartbeat.line(f"t-SNE (TorchDR): P from {self.NN_indices_.shape[1]} neighbours per row")
            self.heartbeat.mark()

    def on_training_step_end(self):
        super().on_training_step_end()
        if self.heartbeat is not None:
            self.heartbeat.beat(self._progress_line)
        return self

    def _progress_line(self) -> str:
        done = int(self.n_iter_) + 1
        with torch.no_grad():
            kl = kl_from_joint(*self.joint_, self.embedding_.detach())
        return (f"t-SNE (TorchDR) iteration {done}/{self.max_iter}: KL divergence {kl:.4f}, "
                f"{self.heartbeat.left(done, self.max_iter)}")

    def clear_memory(self):
        if self.joint_ is not None:
            with torch.no_grad():
                self.kl_divergence_ = kl_from_joint(*self.joint_, self.embedding_.detach())
            self.joint_ = None
        super().clear_memory()


def joint_probabilities(P: torch.Tensor, neighbours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """t-SNE's joint probabilities ``(P + P^T) / 2`` from P given per row on its neighbours ([N, k]
    values and indices, summing to 1): (rows i, columns j, values p) of the pairs with p > 0, float64."""
    n, k = P.shape
    rows = torch.arange(n, device=P.device).repeat_interleave(k)
    columns = neighbours.reshape(-1).long()
    halves = P.reshape(-1).double() / 2
    # Each entry once as (i, j) and once as (j, i), halved; entries at the same pair add up.
    pairs, where = torch.unique(torch.cat([rows * n + columns, columns * n + rows]), return_inverse=True)
    p = torch.zeros(len(pairs), dtype=torch.float64, device=P.device).index_add_(0, where, torch.cat([halves, halves]))
    positive = p > 0
    return pairs[positive] // n, pairs[positive] % n, p[positive]


def kl_from_joint(i: torch.Tensor, j: torch.Tensor, p: torch.Tensor, embedding: torch.Tensor) -> float:
    """KL(P || Q) of a map for joint probabilities (i, j, p): Q is the Student-t kernel normalised
    over pairs ``i != j``, summed in blocks of rows."""
    Y = embedding.double()
    n = len(Y)
    log_kernel = -torch.log1p(((Y[i] - Y[j]) ** 2).sum(-1))
    total = torch.zeros((), dtype=torch.float64, device=Y.device)
    for begin in range(0, n, KL_BLOCK_ROWS):
        block = Y[begin:begin + KL_BLOCK_ROWS]
        total += (1 + torch.cdist(block, Y).square()).reciprocal().sum()
    total -= n  # the diagonal's ones
    return float((p * (p.log() - log_kernel)).sum() + torch.log(total))


def kl_divergence(P: torch.Tensor, neighbours: torch.Tensor, embedding: torch.Tensor) -> float:
    """KL(P || Q) of a map, P given per row on its neighbours ([N, k] values and indices, summing
    to 1), symmetrised as t-SNE's joint probabilities are (:func:`joint_probabilities`)."""
    return kl_from_joint(*joint_probabilities(P, neighbours), embedding)


def torchdr_tsne_kwargs(
    start: np.ndarray,
    *,
    perplexity: float = 30.0,
    early_exaggeration: float = 12.0,
    learning_rate="auto",
    max_iter: int = 1000,
    accepted=None,
) -> dict:
    """Keyword arguments for :class:`ScikitLearnTSNE` (TorchDR 0.5's TSNE) that mean scikit-learn's t-SNE.

    ``start`` is the initial map [N, n_components] (:func:`sklearn_tsne_start`); the other
    arguments are scikit-learn's. ``accepted`` is the set of TorchDR's parameter names (its
    signature, by default): TorchDR calls the learning rate ``lr`` and the exaggeration
    ``early_exaggeration_coeff`` (both also taken under scikit-learn's names through
    ``**kwargs``); the names its signature has are used. A new optimizer class is made per call.
    """
    if accepted is None:
        import inspect

        accepted = set(inspect.signature(torchdr.TSNE).parameters)
    n_samples, n_components = np.shape(start)
    if learning_rate == "auto":
        learning_rate = sklearn_auto_learning_rate(n_samples, early_exaggeration)
    start = np.asarray(start, dtype=np.float64)
    return {
        "n_components": int(n_components),
        "perplexity": float(perplexity),
        "lr" if "lr" in accepted else "learning_rate": float(learning_rate),
        "early_exaggeration_coeff" if "early_exaggeration_coeff" in accepted else "early_exaggeration": float(early_exaggeration),
        # TorchDR exaggerates iterations 0..early_exaggeration_iter inclusive.
        "early_exaggeration_iter": min(TSNE_EXPLORATION_ITER, int(max_iter)) - 1,
        "max_iter": int(max_iter),
        "optimizer": scikit_learn_descent(),
        "optimizer_kwargs": None,
        "init": start,
        # TorchDR scales an array start to init_scaling / std(first column, ddof=1): this keeps it.
        "init_scaling": float(np.std(start[:, 0], ddof=1)),
        "min_grad_norm": TSNE_MIN_GRAD_NORM,
        "check_interval": TSNE_CHECK_INTERVAL,
        "metric": "sqeuclidean",  # scikit-learn's P comes from squared euclidean distances
        "sparsity": True,  # P on the nearest neighbours, as scikit-learn's Barnes-Hut t-SNE
        "max_iter_affinity": 100,  # scikit-learn's binary search: at most 100 steps
        "backend": None,  # plain torch (no KeOps or FAISS)
        "random_state": None,  # the start is given; see the module's docstring
        "process_duplicates": False,
        "device": "auto",  # the device of the data handed to fit_transform
        "distributed": False,
        "compile": False,
        "verbose": False,
    }


def describe_kwargs(kwargs: dict) -> dict:
    """``kwargs`` JSON-ready: the start array and the optimizer class described in words."""
    described = dict(kwargs)
    described["init"] = f"array {list(np.shape(kwargs['init']))} (scikit-learn's start)"
    described["optimizer"] = "scikit-learn's descent (momentum and gains)"
    return described


class TorchDRTSNE(BaseEstimator):
    """scikit-learn's t-SNE (its parameters, its start, its descent) computed by TorchDR on a torch device.

    Parameters: scikit-learn's ``n_components``, ``perplexity``, ``early_exaggeration``,
    ``learning_rate`` ("auto" or a number, scikit-learn's units), ``max_iter`` (>= 250),
    ``init`` ("random" or "pca"), ``random_state``; and ``device`` (None: CUDA when torch sees
    one, else the CPU) and ``dtype`` ("float32", the precision of scikit-learn's Barnes-Hut
    gradient, or "float64"). Like scikit-learn's TSNE it has no ``transform``.

    Fitted: ``embedding_`` (NumPy float64), ``kl_divergence_``, ``n_iter_``, ``learning_rate_``,
    ``torchdr_params_`` (the TorchDR keyword arguments, JSON-ready), ``device_``,
    ``n_features_in_``.
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        perplexity: float = 30.0,
        early_exaggeration: float = 12.0,
        learning_rate="auto",
        max_iter: int = 1000,
        init: str = "random",
        random_state=None,
        device=None,
        dtype: str = "float32",
    ) -> None:
        self.n_components = n_components
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.init = init
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        if not self.perplexity < len(X):
            raise ValueError(f"perplexity ({self.perplexity}) must be less than n_samples ({len(X)})")
        if self.max_iter < TSNE_EXPLORATION_ITER:
            raise ValueError(f"max_iter must be >= {TSNE_EXPLORATION_ITER} (scikit-learn's exploration phase), got {self.max_iter}")
        if self.init not in INIT_CHOICES:
            raise ValueError(f"init must be one of {', '.join(INIT_CHOICES)}, got {self.init!r}")
        dtype = resolve_dtype(self.dtype)
        self.device_ = resolve_device(self.device)
        start = sklearn_tsne_start(X, self.init, self.random_state, self.n_components)
        kwargs = torchdr_tsne_kwargs(start, perplexity=self.perplexity, early_exaggeration=self.early_exaggeration,
                                     learning_rate=self.learning_rate, max_iter=self.max_iter)
        self.learning_rate_ = kwargs.get("lr", kwargs.get("learning_rate"))
        self.torchdr_params_ = describe_kwargs(kwargs)
        model = ScikitLearnTSNE(**kwargs)
        model.heartbeat = Heartbeat()
        model.heartbeat.line(f"t-SNE (TorchDR {torchdr.__version__}): {len(X)} rows on {self.device_} ({self.dtype}), "
                             f"{self.max_iter} iterations, perplexity {self.perplexity:g}")
        embedding = model.fit_transform(to_tensor(X, self.device_).to(dtype))
        self.embedding_ = embedding.detach().cpu().numpy().astype(np.float64)
        self.n_iter_ = int(model.n_iter_)
        self.kl_divergence_ = getattr(model, "kl_divergence_", None)
        model.heartbeat.line(f"t-SNE (TorchDR): done after {self.n_iter_ + 1} iterations, KL divergence "
                             + ("unknown" if self.kl_divergence_ is None else f"{self.kl_divergence_:.4f}"))
        return self.embedding_
