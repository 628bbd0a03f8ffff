"""Many independent MLPs trained as one LightningModule: the fused learning-rate sweep (issue 8).

Training the 200-50-25 MLP for each (activation, learning rate, seed) one after another pays
Lightning's per-step cost (about 0.5 ms, half of this small model's own step on 2 CPU cores;
benchmarks/RESULTS.md) once per member, and runs matrix products too small to keep any device
busy. :class:`FusedMLPs` holds S members whose weights are stacked, so that one optimizer step
trains all of them:

* the first layer of every member is one matrix product, ``x [B, 784] @ W0.T`` with the
  members' first-layer weights stacked as ``W0 [S*200, 784]`` (they share the input batch);
* later layers are batched products on ``[S, B, width]`` (``torch.baddbmm``);
* the loss is the sum of the members' mean cross-entropies, so each member's gradient is
  exactly the gradient it would get alone;
* each member has its own Adam state and learning rate (:class:`MemberAdam`), its own initial
  weights (those ``MLPClassifier(lr, act)`` gets after ``torch.manual_seed(member.seed)``) and
  its own activation.

Three things make a step cheap where the model is small. Each Lightning step carries several
batches (``train_fused``'s ``batches_per_step``, the data module's ``GroupedBatches``), each
trained with its own optimizer step, so Lightning's per-step cost is paid once per group. On
CUDA the forward and backward pass is recorded once as a CUDA graph and replayed
(:class:`GraphedTrainStep`), one launch instead of some 40. Neither changes a number. On the
CPU, when every member's activation is ReLU or linear, the gradients are written out by hand
(:meth:`FusedMLPs.explicit_train`): a few batched products into fixed buffers instead of
autograd's graph, with the same formulas, so the numbers agree to float rounding.

All members see the same batches in the same order. Member ``i`` therefore follows, up to
float32 rounding, the training run of a plain ``MLPClassifier`` with the same initial weights
and batches (``tests/test_fused.py`` checks that step by step). A member's ``seed`` sets only
its initialisation; the batch order is the data module's (in ``train_mlp``, one seed sets both).

Per-member results: :meth:`FusedMLPs.member_results` (history rows, test numbers, best
validation accuracy, as ``train_mlp`` reports them) and :meth:`FusedMLPs.member_classifier`
(member ``i`` as a plain ``MLPClassifier``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from labkit.progress import note_once
from lightning_modules.mlp_module import ACTIVATIONS, MLPClassifier, Normalization, StagedSteps
from lightning_modules.training import flush_denormals, run_name

BATCHES_PER_STEP = 16  # train_fused's batches per Lightning step (GroupedBatches)


@dataclass(frozen=True)
class MemberSpec:
    """One member of a fused sweep: hidden activation, Adam learning rate, initialisation seed."""

    act: str = "relu"
    lr: float = 1e-3
    seed: int = 22

    @property
    def name(self) -> str:
        """``relu_lr1e-05_seed22``: ``training.run_name`` with the seed, unique per member."""
        return run_name(self.act, self.lr, seed=self.seed)


def member_specs(acts: Sequence[str], lrs: Sequence[float], seeds: Sequence[int] = (22,)) -> list[MemberSpec]:
    """Every (activation, learning rate, seed), in the sequential sweep's order (act, then lr)."""
    return [MemberSpec(act, float(lr), int(seed)) for act in acts for lr in lrs for seed in seeds]


def solo_initial_state(spec: MemberSpec, num_classes: int = 25, input_dim: int = 784, hidden=(200, 50)) -> dict:
    """The state dict ``MLPClassifier(spec.lr, spec.act)`` starts from under ``spec.seed``.

    This is what ``train_mlp`` builds after ``L.seed_everything(seed)`` (only torch's generator
    draws the weights). The caller's random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = MLPClassifier(lr=spec.lr, act=spec.act, num_classes=num_classes, input_dim=input_dim, hidden=tuple(hidden))
    return model.state_dict()


class FusedMLPs(StagedSteps):
    """S independent ``Normalization -> Linear -> act -> ... -> Linear`` MLPs trained in one step.

    ``members``: :class:`MemberSpec` (or dicts of its fields), one per MLP. Every member starts
    from the weights a solo ``MLPClassifier`` gets under its seed (:func:`solo_initial_state`).
    Call :meth:`adapt` with the training images before fitting (one normalisation for all: every
    member would adapt on the same images).

    ``forward`` returns logits ``[S, B, num_classes]``. Metrics are kept per member and per epoch
    (:attr:`history`, :attr:`test_metrics`, :meth:`member_results`) and logged once per epoch as
    ``<member name>/<stage>/loss`` and ``.../acc``.

    Training steps are taken by hand (``training_step``), one per batch, also when a Lightning
    step carries a list of batches. ``cuda_graphs`` (default on) records a CUDA training step
    as a graph and replays it (:class:`GraphedTrainStep`); it changes no number, only the
    per-step launch cost, and is not used on the CPU or under DDP. ``explicit_gradients``
    (default on) computes a CPU training step's gradients by hand (:meth:`explicit_train`) when
    every activation is ReLU or linear; not under DDP, whose gradient exchange runs in autograd.
    Neither way runs Lightning's ``on_before_backward``/``on_after_backward`` hooks.
    """

    def __init__(
        self,
        members: Sequence[MemberSpec | dict],
        num_classes: int = 25,
        input_dim: int = 784,
        hidden: tuple[int, ...] = (200, 50),
        cuda_graphs: bool = True,
        explicit_gradients: bool = True,
    ) -> None:
        super().__init__()
        members = [m if isinstance(m, MemberSpec) else MemberSpec(**m) for m in members]
        if not members:
            raise ValueError("a fused model needs at least one member")
        for member in members:
            if member.act not in ACTIVATIONS:
                raise ValueError(f"unknown activation {member.act!r}; choose one of {', '.join(ACTIVATIONS)}")
            if not member.lr > 0:
                raise ValueError(f"learning rate must be positive, got {member.lr}")
        names = [member.name for member in members]
        if len(set(names)) != len(names):
            raise ValueError(f"members must differ in activation, learning rate or seed; got {', '.join(names)}")
        hidden = tuple(int(h) for h in hidden)
        # Plain dicts, so that checkpoints reload without this module's classes.
        self.save_hyperparameters({"members": [asdict(m) for m in members], "num_classes": num_classes,
                                   "input_dim": input_dim, "hidden": hidden})
        self.members = members
        self.num_members = S = len(members)
        self.widths = (input_dim, *hidden, num_classes)
        self.normalization = Normalization(input_dim)
        # Layer 0 is stacked like one wide nn.Linear, [S*out, in]: one product serves all members.
        # Layers k >= 1 are [S, out, in] (nn.Linear's layout per member) with biases [S, 1, out].
        for k, (n_in, n_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            if k == 0:
                weight, bias = torch.empty(S * n_out, n_in), torch.empty(S * n_out)
            else:
                weight, bias = torch.empty(S, n_out, n_in), torch.empty(S, 1, n_out)
            setattr(self, f"weight{k}", nn.Parameter(weight))
            setattr(self, f"bias{k}", nn.Parameter(bias))
        self.num_layers = len(self.widths) - 1
        self._setup_activations()
        for index, member in enumerate(members):
            self.load_member(index, solo_initial_state(member, num_classes, input_dim, hidden))
        self.cuda_graphs = cuda_graphs
        self.explicit_gradients = explicit_gradients
        self.automatic_optimization = False  # see training_step
        self._graph: GraphedTrainStep | None = None
        self._graph_failed = False
        self.graph_steps = 0  # training steps taken by replaying the graph
        self._sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per stage: loss sums, correct counts
        self._rows: dict[str, int] = {}
        self.history: list[list[dict[str, float]]] = [[] for _ in members]
        self.test_metrics: list[dict[str, float]] = [{} for _ in members]

    def __setattr__(self, name, value) -> None:
        # As in MLPClassifier: Lightning sets the running hook's name ~40 times per step, and
        # nn.Module.__setattr__'s bookkeeping would make that a noticeable share of the step.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # --- activations ---------------------------------------------------------------------------

    def _setup_activations(self) -> None:
        """The most common activation runs on every member; each other one replaces it, by mask,
        on its own members. Elementwise selection keeps each member's values and gradients exactly
        those of its own activation (the unselected branch gets a zero gradient)."""
        acts = [m.act for m in self.members]
        order = sorted(dict.fromkeys(acts), key=lambda a: -acts.count(a))
        self._base_act = ACTIVATIONS[order[0]]()
        self._other_acts: list[tuple[nn.Module, str, str]] = []
        for number, act in enumerate(order[1:]):
            chosen = torch.tensor([a == act for a in acts])
            # Layer 0's output is [B, S*width0]; later outputs are [S, B, width].
            self.register_buffer(f"_mask0_{number}", chosen.repeat_interleave(self.widths[1]), persistent=False)
            self.register_buffer(f"_mask_{number}", chosen.view(-1, 1, 1), persistent=False)
            self._other_acts.append((ACTIVATIONS[act](), f"_mask0_{number}", f"_mask_{number}"))
        # For explicit_train: whether every activation's derivative is a 0/1 mask, and the members
        # whose mask is all ones. Floats, as the derivative masks are (a mask of bools costs several
        # times as much to apply on a CPU).
        self.piecewise_linear = set(acts) <= {"relu", "linear"}
        linear = torch.tensor([float(a == "linear") for a in acts]).view(-1, 1, 1)
        self.register_buffer("_linear_members", linear if linear.any() else None, persistent=False)

    def _activate(self, h: torch.Tensor, first: bool) -> torch.Tensor:
        out = self._base_act(h)
        for act, mask0, mask in self._other_acts:
            out = torch.where(getattr(self, mask0 if first else mask), act(h), out)
        return out

    # --- model ---------------------------------------------------------------------------------

    def adapt(self, train_images) -> "FusedMLPs":
        """Fix the normalisation statistics from the training images (uint8 or float, [N, 784])."""
        self.normalization.adapt(train_images)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, ``[S, B, num_classes]``."""
        S, B = self.num_members, x.shape[0]
        h = torch.addmm(self.bias0, self.normalization(x), self.weight0.t())  # [B, S*width1]
        if self.num_layers == 1:
            return h.view(B, S, -1).transpose(0, 1)
        h = self._activate(h, first=True).view(B, S, -1).transpose(0, 1)  # [S, B, width1]
        for k in range(1, self.num_layers):
            h = torch.baddbmm(getattr(self, f"bias{k}"), h, getattr(self, f"weight{k}").transpose(1, 2))
            if k < self.num_layers - 1:
                h = self._activate(h, first=False)
        return h

    def member_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy over the batch, ``[S]``."""
        S, B, C = logits.shape
        losses = F.cross_entropy(logits.reshape(S * B, C), labels.repeat(S), reduction="none")
        return losses.view(S, B).mean(dim=1)

    # --- members in and out --------------------------------------------------------------------

    def stacked_parameters(self) -> list[tuple[nn.Parameter, tuple[int, ...]]]:
        """(stacked parameter, shape of one member's part) in ``MLPClassifier.state_dict`` order.

        ``param.view(S, *shape)[i]`` is member ``i``'s nn.Linear weight or bias (a view).
        """
        out = []
        for k, (n_in, n_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            out += [(getattr(self, f"weight{k}"), (n_out, n_in)), (getattr(self, f"bias{k}"), (n_out,))]
        return out

    def _member_views(self, index: int):
        S = self.num_members
        for param, shape in self.stacked_parameters():
            yield param.view(S, *shape)[index]

    def _linear_keys(self):
        for k in range(self.num_layers):
            yield f"layers.{2 * k}.weight"
            yield f"layers.{2 * k}.bias"

    @torch.no_grad()
    def load_member(self, index: int, state_dict: dict) -> "FusedMLPs":
        """Copy an ``MLPClassifier`` state dict's layer weights into member ``index``.

        The normalisation is shared by all members and is not touched (use :meth:`adapt`).
        """
        for key, view in zip(self._linear_keys(), self._member_views(index)):
            view.copy_(state_dict[key])
        return self

    @torch.no_grad()
    def member_state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Member ``index`` as an ``MLPClassifier`` state dict (copies, on the model's device)."""
        state = {f"normalization.{name}": buffer.clone() for name, buffer in self.normalization.named_buffers()}
        for key, view in zip(self._linear_keys(), self._member_views(index)):
            state[key] = view.detach().clone()
        return state

    def member_classifier(self, index: int) -> MLPClassifier:
        """Member ``index`` as a plain ``MLPClassifier`` (on the CPU), e.g. for saving or testing alone."""
        spec = self.members[index]
        model = MLPClassifier(lr=spec.lr, act=spec.act, num_classes=self.widths[-1], input_dim=self.widths[0], hidden=self.widths[1:-1])
        model.load_state_dict({key: value.cpu() for key, value in self.member_state_dict(index).items()})
        return model

    # --- training ------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> None:
        # Manual optimization: one Lightning step may carry several batches (the data module's
        # batches_per_step), each trained with its own optimizer step, so that Lightning's own
        # per-step cost (about 0.5 ms on a CPU, more than a GPU step of the model) is paid once
        # per group. Each step still goes through Lightning's optimizer (hooks, step count).
        optimizer = self.optimizers()
        batches = batch if isinstance(batch, list) else [batch]
        for images, labels in batches:
            optimizer.step(closure=self.train_closure(images, labels, self.manual_backward))
        # Lightning logs at the count of its own steps; with several batches per step that count
        # would fall behind train_mlp's (one per batch), and the members' TensorBoard curves with it.
        loop = self.trainer.fit_loop.epoch_loop
        loop._batches_that_stepped += len(batches) - 1

    def train_closure(self, images: torch.Tensor, labels: torch.Tensor, backward=None) -> Callable[[], None]:
        """The gradients of one training batch, as a closure for ``optimizer.step(closure=...)``.

        Calling it runs the members' forward pass, adds their losses and correct predictions to
        the epoch's sums, and back-propagates the summed loss through ``backward`` (default
        ``Tensor.backward``; Lightning's ``manual_backward`` in ``training_step``). On CUDA, in one
        process, that work is recorded once as a CUDA graph (:class:`GraphedTrainStep`) and
        replayed for every batch of the recorded size: one launch instead of ~40 small kernels.
        On the CPU, for ReLU and linear members, :meth:`explicit_train` does it without autograd
        (``backward`` is then not called).
        """
        graph = self._graph_for(images)
        if graph is not None:
            return partial(graph.replay, images, labels)
        if self.explicit_gradients and self.piecewise_linear and images.device.type == "cpu" and not self._distributed():
            return partial(self.explicit_train, images, labels)
        return partial(self._eager_train, images, labels, backward or torch.Tensor.backward)

    def _distributed(self) -> bool:
        return self._trainer is not None and self._trainer.world_size > 1

    @torch.no_grad()
    def explicit_train(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One training batch's losses ``[S]``, metric sums and gradients, the gradients written
        by hand into the stacked parameters' ``.grad`` (kept from step to step).

        For members whose activations are ReLU or linear (``piecewise_linear``) the backward
        pass is a handful of batched products: with ``delta`` the gradient of the summed losses
        at a layer's output, the layer's weight gradient is ``delta^T @ input`` and its input's
        gradient is ``delta @ weight`` times the activation's 0/1 derivative, the mask of
        ``h > 0`` (ReLU, as ``torch.relu``'s backward) or all ones (linear); at the logits,
        ``delta = (softmax - one_hot) / B``, the gradient of each member's mean cross-entropy.
        These are autograd's formulas, and for the log-softmax its kernel. Every member's
        products are products of its own (one batched product over the members, the shared input
        broadcast, not copied), as a solo run on one thread computes them: on this project's CPU
        a member's weights after 20 steps equal such a solo run's to the bit, on one thread or two
        (``tests/test_fused.py``). On 2 CPU cores, 30 members, a whole training step takes 0.76-0.80x
        autograd's time (``benchmarks/bench_fused_step.py``): no graph is built, no gradient is
        allocated, float masks replace the activations' backward passes, and this CPU's matrix
        library runs the batched first layer faster than the one wide product autograd needs.
        """
        if not self.piecewise_linear:
            raise ValueError("explicit gradients need ReLU or linear activations only")
        S, B = self.num_members, images.shape[0]
        h = self.normalization(images).expand(S, B, -1)
        inputs, derivatives = [h], []  # each layer's input; each hidden layer's activation derivative
        for k in range(self.num_layers):
            weight, bias = self._member_layer(k)
            h = torch.baddbmm(bias, h, weight.transpose(1, 2))
            if k < self.num_layers - 1:
                derivative = torch.gt(h, 0, out=torch.empty_like(h))  # 1.0 or 0.0
                if self._linear_members is not None:
                    torch.maximum(derivative, self._linear_members, out=derivative)
                h = h.mul_(derivative)  # ReLU where the mask says so, the identity elsewhere
                inputs.append(h)
                derivatives.append(derivative)
        log_probs = torch.log_softmax(h, dim=2)
        targets = labels.view(1, B, 1).expand(S, B, 1)
        losses = log_probs.gather(2, targets).squeeze(2).mean(dim=1).neg_()
        self._record("train", losses, h.argmax(dim=2), labels)
        # delta = (softmax - one_hot) / B, through the kernel autograd uses for log_softmax's
        # gradient: its exp rounds differently from torch.exp, and matching autograd to the bit
        # keeps a member's run as close to its solo run as autograd's is.
        nll_grad = torch.zeros_like(log_probs).scatter_(2, targets, -1.0 / B)
        delta = torch._log_softmax_backward_data(nll_grad, log_probs, 2, log_probs.dtype)
        for k in reversed(range(self.num_layers)):
            weight, _ = self._member_layer(k)
            weight_grad, bias_grad = self._member_layer(k, grads=True)
            torch.bmm(delta.transpose(1, 2), inputs[k], out=weight_grad)
            torch.sum(delta, dim=1, keepdim=True, out=bias_grad)
            if k > 0:
                delta = torch.bmm(delta, weight).mul_(derivatives[k - 1])
        return losses

    def _member_layer(self, k: int, grads: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``k``'s weights ``[S, out, in]`` and biases ``[S, 1, out]`` (views), or, with
        ``grads``, views of their ``.grad`` (made when missing or of another kind)."""
        S, n_in, n_out = self.num_members, self.widths[k], self.widths[k + 1]
        tensors = []
        for param in (getattr(self, f"weight{k}"), getattr(self, f"bias{k}")):
            if grads:
                if param.grad is None or param.grad.shape != param.shape or param.grad.dtype != param.dtype or param.grad.device != param.device:
                    param.grad = torch.empty_like(param)
                param = param.grad
            tensors.append(param.detach())
        weight, bias = tensors
        return weight.view(S, n_out, n_in), bias.view(S, 1, n_out)

    def _eager_train(self, images, labels, backward) -> None:
        self.zero_stacked_grads()
        backward(self._forward_losses(images, labels, "train").sum())

    def _forward_losses(self, images, labels, stage: str, count: bool = True) -> torch.Tensor:
        logits = self(images)
        losses = self.member_losses(logits, labels)
        self._record(stage, losses.detach(), logits.detach().argmax(dim=2), labels, count)
        return losses

    def _step(self, batch, stage: str) -> None:
        images, labels = batch
        self._forward_losses(images, labels, stage)

    def zero_stacked_grads(self) -> None:
        """Clear the gradients before a backward pass; the graph's fixed buffers are zeroed in place."""
        keep = self._graph is not None
        for param, _ in self.stacked_parameters():
            if keep and param.grad is not None:
                param.grad.zero_()
            else:
                param.grad = None

    def _graph_for(self, images: torch.Tensor) -> "GraphedTrainStep | None":
        if not (self.cuda_graphs and images.is_cuda) or self._distributed():
            return None  # under DDP the gradients' all-reduce runs in autograd hooks, outside a graph
        if self._graph is None and not self._graph_failed:
            try:
                self._graph = GraphedTrainStep(self, images.shape, images.dtype, images.device)
            except RuntimeError as exc:  # e.g. a CUDA build without graph support: train eagerly
                self._graph, self._graph_failed = None, True
                for param, _ in self.stacked_parameters():
                    param.grad = None
                note_once(f"CUDA graph not recorded ({' '.join(str(exc).split())[:200]}); training without it")
        if self._graph is not None and self._graph.fits(images):
            return self._graph
        return None

    def on_train_end(self) -> None:
        self._graph = None  # frees the graph's memory pool; gradients stay as they are

    # --- metrics -------------------------------------------------------------------------------

    def _record(self, stage: str, losses, predictions, labels, count: bool = True) -> None:
        """Add a batch's losses (times its size) and correct predictions to the stage's sums,
        in place on the device (the graph writes into the same tensors); ``count`` adds its size
        to the row count, kept on the host (a graph replay counts outside the graph)."""
        sums = self._stage_sums(stage, losses.device)
        sums[0].add_(losses, alpha=len(labels))
        sums[1].add_((predictions == labels).sum(dim=1))
        if count:
            self._rows[stage] += len(labels)

    def _stage_sums(self, stage: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        sums = self._sums.get(stage)
        if sums is None or sums[0].device != device:
            sums = (torch.zeros(self.num_members, dtype=torch.float64, device=device),
                    torch.zeros(self.num_members, dtype=torch.int64, device=device))
            self._sums[stage] = sums
            self._rows[stage] = 0
        return sums

    def epoch_metrics(self, stage: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean loss [S], accuracy [S]) over the stage's rows since the last call, on the device.

        The loss is the batch means weighted by batch size, as torchmetrics' ``MeanMetric``
        computes ``train/loss`` for ``MLPClassifier`` (summed in float64). Sums are added across
        processes under DDP. The sums start again from zero.
        """
        sums, rows = self._sums.get(stage), self._rows.get(stage, 0)
        if sums is None or rows == 0:
            return None
        loss_sums, correct = sums
        totals = torch.cat([loss_sums, correct.to(torch.float64), loss_sums.new_tensor([rows])])
        loss_sums.zero_()  # in place: a recorded graph keeps adding into these tensors
        correct.zero_()
        self._rows[stage] = 0
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            totals = trainer.strategy.reduce(totals, reduce_op="sum")
        S = self.num_members
        return totals[:S] / totals[-1], totals[S : 2 * S] / totals[-1]

    def _end_epoch(self, stage: str) -> None:
        metrics = self.epoch_metrics(stage)
        trainer = self._trainer
        if metrics is None or (trainer is not None and trainer.sanity_checking):
            return
        loss, acc = (values.tolist() for values in metrics)  # one device-to-host copy per epoch
        logged = {}
        for index, member in enumerate(self.members):
            logged[f"{member.name}/{stage}/loss"] = loss[index]
            logged[f"{member.name}/{stage}/acc"] = acc[index]
            values = {f"{stage}/loss": loss[index], f"{stage}/acc": acc[index]}
            if stage == "test":
                self.test_metrics[index] = values
            elif trainer is None or trainer.state.fn == "fit":
                epoch = (trainer.current_epoch if trainer is not None else len(self.history[index])) + 1
                rows = self.history[index]
                if not rows or rows[-1]["epoch"] != epoch:
                    rows.append({"epoch": epoch})
                rows[-1].update(values)
        if trainer is not None:
            # Already reduced across processes above; logged once per epoch.
            self.log_dict(logged, on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=True)

    def member_results(self, index: int) -> dict:
        """Member ``index``'s numbers under ``train_mlp``'s keys.

        ``history`` (rows ``{"epoch", "train/loss", "train/acc", "val/loss", "val/acc"}``),
        ``test_loss``, ``test_acc`` (None before testing), ``best_val_acc`` and ``best_epoch``
        (the first epoch with the highest validation accuracy, as ``train_mlp`` picks it).
        """
        member = self.members[index]
        rows = [dict(row) for row in self.history[index]]
        best = max(rows, key=lambda row: row.get("val/acc", float("-inf"))) if rows else {}
        return {
            "act": member.act,
            "lr": member.lr,
            "seed": member.seed,
            "name": member.name,
            "test_loss": self.test_metrics[index].get("test/loss"),
            "test_acc": self.test_metrics[index].get("test/acc"),
            "best_val_acc": best.get("val/acc"),
            "best_epoch": best.get("epoch"),
            "history": rows,
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return MemberAdam.for_model(self)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Clipping works on the optimizer's parameters' .grad, which MemberAdam's views lack;
        # and a clip by the norm over all members would couple them.
        if gradient_clip_val:
            raise ValueError("FusedMLPs does not support gradient clipping (members would not train as alone)")


class GraphedTrainStep:
    """A :class:`FusedMLPs` training batch's forward, loss, metric sums and backward, recorded
    once as a CUDA graph and replayed for every batch of the same shape.

    A GPU step of this model is ~40 kernels of a few microseconds each, so launching them from
    Python costs several times their run time; a replay is one launch. The recorded work reads
    the batch from fixed input tensors (each replay copies the batch in) and writes the
    gradients into fixed buffers, which ``param.grad`` points to afterwards; the optimizer's
    step runs after each replay, outside the graph, as in eager training. The kernels are
    those of the eager step, so the numbers are the same.

    Before recording, two warm-up passes run on a side stream (CUDA's recipe: libraries set up
    their workspaces there); they change no parameter, and their metric sums are undone.
    """

    def __init__(self, model: FusedMLPs, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> None:
        self.model = model
        self.images = torch.zeros(shape, dtype=dtype, device=device)
        self.labels = torch.zeros(shape[0], dtype=torch.long, device=device)
        self.storage = model.weight0.data_ptr()  # the graph is tied to the parameters' memory
        sums = model._stage_sums("train", device)  # made before recording: the graph adds into them
        saved = [tensor.clone() for tensor in sums]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward_backward(set_to_none=True)
        torch.cuda.current_stream(device).wait_stream(side)
        for tensor, value in zip(sums, saved):
            tensor.copy_(value)
        for param, _ in model.stacked_parameters():
            param.grad = None  # the recorded backward allocates them in the graph's memory
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._forward_backward(set_to_none=False)

    def _forward_backward(self, set_to_none: bool) -> None:
        if set_to_none:
            for param, _ in self.model.stacked_parameters():
                param.grad = None
        self.model._forward_losses(self.images, self.labels, "train", count=False).sum().backward()

    def fits(self, images: torch.Tensor) -> bool:
        return (images.shape == self.images.shape and images.dtype == self.images.dtype and images.device == self.images.device
                and self.model.weight0.data_ptr() == self.storage)

    def replay(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images.copy_(images)
        self.labels.copy_(labels)
        self.graph.replay()
        self.model._rows["train"] += len(labels)
        self.model.graph_steps += 1


@dataclass
class _Plan:
    steps: torch.Tensor  # [S * tensors per member] step counters, the states' "step" are views of it
    calls: list  # per distinct hyperparameters: (group, runs [(first, stop)], params, exp_avgs, exp_avg_sqs, steps)


class MemberAdam(torch.optim.Adam):
    """``torch.optim.Adam(eps=1e-7, fused=True)`` (``make_optimizer``) with one param group per member.

    Stacked tensors cannot be split between param groups, so each member's group holds detached
    views of the stacked parameters (leaf tensors sharing their storage) and that member's
    learning rate. State is kept as ``Adam`` keeps it (``step``, ``exp_avg``, ``exp_avg_sq`` per
    view), so ``state_dict`` round-trips; the moments are views of stacked tensors too.

    A step makes one call per learning rate to the kernel that ``torch.optim.Adam(fused=True)``
    runs, handing it slices of the stacked parameters, gradients and moments: one slice per run
    of consecutive members with that learning rate. The kernel is elementwise, so this is the
    same arithmetic as a solo ``MLPClassifier``'s optimizer, with nothing copied and without
    ``Adam.step``'s per-group bookkeeping (25 us per member per step). Few calls matter on a
    GPU (one launch each); few tensors on a CPU, where the kernel starts its threads once per
    tensor: for 30 members, the kernel once per member (180 tensors) took 2.32 ms a step, this
    step 2.10 ms (the sweep's order, 6 runs: 36 tensors) or 2.02 ms (members sorted by learning
    rate, as the sweep stores them: 18 tensors), the kernel once over the 6 stacked tensors
    1.64 ms (``benchmarks/bench_fused_step.py``).

    Adam written out on the stacked tensors with a per-member learning-rate tensor (foreach ops)
    made a whole training step 1.4x-1.6x slower (one CPU thread, 6 and 30 members): it passes over
    the weights several times where the fused kernel passes once.

    The views carry no ``.grad`` (the stacked parameters do): gradient clipping and AMP gradient
    scaling, which work on ``param.grad`` of the optimizer's parameters, are not supported.
    """

    def __init__(
        self,
        stacked: Sequence[tuple[nn.Parameter, tuple[int, ...]]],
        lrs: Sequence[float],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
    ) -> None:
        """``stacked``: (parameter, shape of one member's part), as :meth:`FusedMLPs.stacked_parameters`."""
        self._members = len(lrs)
        self._stacked = [(param, tuple(shape)) for param, shape in stacked]
        views = [param.detach().view(self._members, *shape).unbind(0) for param, shape in self._stacked]
        groups = [{"params": [v[i] for v in views], "lr": float(lr)} for i, lr in enumerate(lrs)]
        super().__init__(groups, lr=float(lrs[0]), betas=betas, eps=eps, fused=True)
        # GradScaler would look for gradients on the views, where there are none.
        self._step_supports_amp_scaling = False
        self._plan: _Plan | None = None

    @classmethod
    def for_model(cls, model: FusedMLPs, eps: float = 1e-7) -> "MemberAdam":
        """Build it after the model is on its device (the views are tied to the current storage)."""
        return cls(model.stacked_parameters(), [m.lr for m in model.members], eps=eps)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [param.grad for param, _ in self._stacked]
        if all(grad is None for grad in grads):
            return loss
        if any(grad is None for grad in grads):
            raise RuntimeError("MemberAdam needs gradients for all stacked parameters or for none")
        for (param, _), view in zip(self._stacked, self.param_groups[0]["params"]):
            if view.data_ptr() != param.data_ptr():
                raise RuntimeError("the model's parameters moved (e.g. .to(device)) after MemberAdam was built; build it again")
        S = self._members
        # Autograd makes new gradient tensors every step: their slices are cut anew.
        grads = [grad.view(S, *shape) for grad, (_, shape) in zip(grads, self._stacked)]
        plan = self._plan or self._make_plan()
        plan.steps.add_(1)  # every state's step counter is a view of this one tensor
        for group, runs, params, exp_avgs, exp_avg_sqs, steps in plan.calls:
            beta1, beta2 = group["betas"]
            torch._fused_adam_(
                params, [grad[first:stop] for first, stop in runs for grad in grads], exp_avgs, exp_avg_sqs, [], steps,
                amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                grad_scale=None, found_inf=None,
            )
        return loss

    def _make_plan(self) -> "_Plan":
        """The argument lists of the kernel calls, with the state made as Adam makes it.

        Each moment becomes one stacked tensor per stacked parameter, and each member's state a
        view of it (states loaded from a ``state_dict`` are copied in), so that a run of members
        is one slice. The step counters (one per view, as in Adam's state) become views of one
        tensor, so that counting a step is one operation (a foreach add over S x 6 scalars costs
        0.1 ms on a CPU).
        """
        S = self._members
        if len(self.param_groups) != S:
            raise ValueError(f"MemberAdam holds one param group per member ({S}), not {len(self.param_groups)}")
        moments = {name: [torch.zeros_like(param.detach()).view(S, *shape) for param, shape in self._stacked]
                   for name in ("exp_avg", "exp_avg_sq")}
        counters = []
        for member, group in enumerate(self.param_groups):
            if group["amsgrad"] or group["maximize"] or group["differentiable"]:
                raise ValueError("MemberAdam implements plain Adam only (no amsgrad, maximize, differentiable)")
            for tensor, param in enumerate(group["params"]):
                state = self.state[param]
                if not state:  # as torch.optim.Adam(fused=True) initialises it
                    state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                for name, stacked in moments.items():
                    if name in state:
                        stacked[tensor][member].copy_(state[name])
                    state[name] = stacked[tensor][member]
                counters.append(state["step"])
        packed = torch.stack([counter.detach().to(torch.float32) for counter in counters])
        views = iter(packed.unbind(0))
        for group in self.param_groups:
            for param in group["params"]:
                self.state[param]["step"] = next(views)
        per_member = packed.view(S, len(self._stacked))
        calls: dict[tuple, tuple] = {}
        first = 0
        for stop in range(1, S + 1):
            key = self._hyperparameters(first)
            if stop < S and self._hyperparameters(stop) == key:
                continue
            # A run's members share one step counter per tensor in the call.
            if not torch.equal(per_member[first:stop], per_member[first].expand(stop - first, -1)):
                raise ValueError("MemberAdam's members must have taken the same number of steps")
            group, runs, params, exp_avgs, exp_avg_sqs, steps = calls.setdefault(key, (self.param_groups[first], [], [], [], [], []))
            runs.append((first, stop))
            params.extend(param.detach().view(S, *shape)[first:stop] for param, shape in self._stacked)
            exp_avgs.extend(stacked[first:stop] for stacked in moments["exp_avg"])
            exp_avg_sqs.extend(stacked[first:stop] for stacked in moments["exp_avg_sq"])
            steps.extend(per_member[first].unbind(0))
            first = stop
        self._plan = _Plan(packed, list(calls.values()))
        return self._plan

    def _hyperparameters(self, member: int) -> tuple:
        group = self.param_groups[member]
        return group["lr"], tuple(group["betas"]), group["eps"], group["weight_decay"]

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._plan = None

    def add_param_group(self, param_group) -> None:
        super().add_param_group(param_group)
        self._plan = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param, _ in self._stacked:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()


def build_fused(
    members: Sequence[MemberSpec | dict], train_images=None, num_classes: int = 25, input_dim: int = 784, hidden=(200, 50),
    cuda_graphs: bool = True, explicit_gradients: bool = True,
) -> FusedMLPs:
    """A :class:`FusedMLPs` whose members start as solo ``MLPClassifier`` s under their seeds,
    adapted on ``train_images`` when given."""
    model = FusedMLPs(members, num_classes=num_classes, input_dim=input_dim, hidden=tuple(hidden), cuda_graphs=cuda_graphs,
                      explicit_gradients=explicit_gradients)
    return model.adapt(train_images) if train_images is not None else model


def train_fused(
    members: Sequence[MemberSpec | dict],
    *,
    data_dir=None,
    epochs: int = 100,
    batch_size: int = 32,
    data_seed: int = 22,
    limit_rows: int | None = None,
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    logger=False,
    callbacks: Sequence = (),
    test: bool = True,
    augment=None,
    batches_per_step: int = BATCHES_PER_STEP,
    cuda_graphs: bool = True,
    explicit_gradients: bool = True,
    flush_denormal: bool = True,
) -> dict:
    """Fit all members together on the Sign-MNIST splits (validation every epoch), then test.

    ``data_seed`` sets the split and the batch order (``train_mlp``'s ``seed`` sets these and the
    initialisation; here each member's own seed sets its initialisation). Returns ``model``,
    ``members`` (:meth:`FusedMLPs.member_results` for each member, in order, each with the
    fused epoch time as ``seconds_per_epoch``), ``seconds_per_epoch`` (median training epoch,
    validation excluded, all members together), ``train_seconds`` (every epoch), ``total_seconds``
    (fit and test), ``device``, ``optimizer_steps``, ``graph_steps`` (those taken by replaying a
    CUDA graph) and ``datamodule``. ``augment`` (an ``AugmentConfig``) augments
    the training batches, as ``train_mlp`` does. ``batches_per_step`` batches go into each
    Lightning step (each still gets its own optimizer step); ``cuda_graphs``, ``explicit_gradients``:
    see :class:`FusedMLPs`;
    ``flush_denormal``: see ``training.flush_denormals`` (as ``train_mlp`` does by default).
    """
    import statistics
    import time
    import warnings

    import lightning as L

    from datamodules import SignMNISTDataModule
    from lightning_modules.callbacks import EpochTimer
    from lightning_modules.training import device_description

    # Whole, data loading included: torch's worker threads take the setting when they start.
    with flush_denormals(flush_denormal):
        datamodule = SignMNISTDataModule(data_dir, batch_size=batch_size, seed=data_seed, limit_rows=limit_rows, augment=augment,
                                         batches_per_step=batches_per_step)
        datamodule.prepare_data()
        datamodule.setup("fit")
        model = build_fused(members, datamodule.train_images, num_classes=datamodule.num_classes, cuda_graphs=cuda_graphs,
                            explicit_gradients=explicit_gradients)
        timer = EpochTimer()
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            logger=logger,
            callbacks=[timer, *callbacks],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=50,
        )
        started = time.perf_counter()
        with warnings.catch_warnings():
            # As in train_mlp: batches are in-memory tensors, metrics are logged per epoch.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
            trainer.fit(model, datamodule)
            if test:
                trainer.test(model, datamodule, verbose=False)
        total_seconds = time.perf_counter() - started
        seconds_per_epoch = statistics.median(timer.train_seconds) if timer.train_seconds else None
        results = [model.member_results(i) | {"seconds_per_epoch": seconds_per_epoch} for i in range(model.num_members)]
        return {
            "model": model,
            "members": results,
            "seconds_per_epoch": seconds_per_epoch,
            "train_seconds": list(timer.train_seconds),
            "total_seconds": total_seconds,
            "device": device_description(trainer),
            "world_size": trainer.world_size,
            "optimizer_steps": trainer.global_step,
            "graph_steps": model.graph_steps,
            "datamodule": datamodule,
        }
