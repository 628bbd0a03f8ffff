"""The fused sweep's model: many independent MLPs stacked into one LightningModule.

Training the 200-50-25 MLP for each (activation, learning rate, seed) one after another pays
Lightning's per-step cost once per member and runs matrix products too small to keep a device
busy. :class:`FusedMLPs` stacks the weights of S members so that one step trains all of them:

* the first layer of every member is one matrix product, ``x [B, 784] @ W0.T`` with the
  members' first-layer weights stacked as ``W0 [S*200, 784]`` (they share the input batch);
* later layers are batched products on ``[S, B, width]`` (``torch.baddbmm``);
* the loss is the sum of the members' mean cross-entropies, so each member's gradient is
  exactly the gradient it would get alone;
* each member has its own Adam state and learning rate (:class:`~lightning_modules.fused.adam.MemberAdam`),
  its own initial weights (those ``MLPClassifier(lr, act)`` gets after ``torch.manual_seed(seed)``)
  and its own activation.

All members see the same batches in the same order, so member ``i`` follows, up to float
rounding, the training run of a plain ``MLPClassifier`` with the same initial weights and
batches (``tests/test_fused.py`` checks that step by step). A member's ``seed`` sets only its
initialisation; the batch order is the data module's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.fused.adam import MemberAdam
from lightning_modules.fused.backward import ExplicitTraining
from lightning_modules.fused.graph import GraphedTraining, GraphedTrainStep
from lightning_modules.mlp_module import ACTIVATIONS, MLPClassifier, Normalization, StagedSteps
from lightning_modules.training import best_epoch, run_name


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

    Every member starts from the weights a solo ``MLPClassifier`` gets under its seed
    (:func:`solo_initial_state`). Call :meth:`adapt` with the training images before fitting
    (one normalisation for all: every member would adapt on the same images).

    ``forward`` returns logits ``[S, B, num_classes]``. Metrics are kept per member and per epoch
    (:attr:`history`, :attr:`test_metrics`, :meth:`member_results`) and logged once per epoch as
    ``<member name>/<stage>/loss`` and ``.../acc``, at the step ``train_mlp`` logs them at.

    Training uses manual optimization: a Lightning step may carry a list of batches (the data
    module's ``batches_per_step``), each trained with its own optimizer step, so that Lightning's
    per-step cost is paid once per group. How a batch's gradients are computed, the training
    path, is chosen once at fit start (:meth:`select_training_path`); none changes a number
    beyond float rounding, and none runs Lightning's ``on_before_backward``/``on_after_backward``
    hooks.

    Parameters
    ----------
    members
        :class:`MemberSpec` (or dicts of its fields), one per MLP; their names must differ.
    num_classes, input_dim, hidden
        The layer widths, as ``MLPClassifier``'s.
    cuda_graphs
        On CUDA in one process, record the training step as a CUDA graph and replay it
        (:mod:`lightning_modules.fused.graph`).
    explicit_gradients
        On the CPU in one process, when every activation is ReLU or linear, compute the
        gradients by hand (:mod:`lightning_modules.fused.backward`) instead of with autograd.
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
        self.training_path: str | None = None  # "graph", "explicit" or "autograd": the last one chosen
        self._train_batch: Callable[[torch.Tensor, torch.Tensor, Callable], object] | None = None
        self._explicit: ExplicitTraining | None = None  # the explicit path, kept with its views
        self.graph_steps = 0  # training steps taken by replaying a CUDA graph
        self._sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per stage: loss sums, correct counts
        self._rows: dict[str, int] = {}
        self.history: list[list[dict[str, float]]] = [[] for _ in members]
        self.test_metrics: list[dict[str, float]] = [{} for _ in members]

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
        # For the explicit gradients: whether every activation's derivative is a 0/1 mask, and a
        # float mask [S, 1, 1] of the members whose derivative is all ones (None if there are none).
        self.piecewise_linear = set(acts) <= {"relu", "linear"}
        linear = torch.tensor([float(a == "linear") for a in acts]).view(-1, 1, 1)
        self.register_buffer("linear_members", linear if linear.any() else None, persistent=False)

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

    # --- the stacked parameters ----------------------------------------------------------------

    def stacked_parameters(self) -> list[tuple[nn.Parameter, tuple[int, ...]]]:
        """(stacked parameter, shape of one member's part) in ``MLPClassifier.state_dict`` order.

        ``param.view(S, *shape)[i]`` is member ``i``'s nn.Linear weight or bias (a view).
        """
        out = []
        for k, (n_in, n_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            out += [(getattr(self, f"weight{k}"), (n_out, n_in)), (getattr(self, f"bias{k}"), (n_out,))]
        return out

    def layer_parameters(self, k: int) -> tuple[nn.Parameter, nn.Parameter]:
        """Layer ``k``'s stacked weight and bias."""
        return getattr(self, f"weight{k}"), getattr(self, f"bias{k}")

    def per_member(self, k: int, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``k``'s stacked weight and bias (or tensors shaped like them, e.g. their gradients)
        as per-member views, ``[S, out, in]`` and ``[S, 1, out]``."""
        S, n_in, n_out = self.num_members, self.widths[k], self.widths[k + 1]
        return weight.view(S, n_out, n_in), bias.view(S, 1, n_out)

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

    def on_fit_start(self) -> None:
        if "mixed" in str(self.trainer.precision):
            # AMP would scale the gradients that MemberAdam reads, and autocast the autograd path only.
            raise ValueError(f"FusedMLPs trains in one precision; mixed precision ({self.trainer.precision}) is not supported")
        self.select_training_path()

    def select_training_path(self) -> str:
        """Choose how training batches get their gradients, for the model's device; returns the path's name.

        ``"graph"``: with ``cuda_graphs``, on CUDA in one process, the step is recorded as a
        CUDA graph and replayed (:class:`~lightning_modules.fused.graph.GraphedTraining`).
        ``"explicit"``: with ``explicit_gradients``, on the CPU in one process, when every
        activation is ReLU or linear, the gradients are written out by hand
        (:class:`~lightning_modules.fused.backward.ExplicitTraining`). ``"autograd"`` otherwise,
        and always under DDP, whose gradient exchange runs in autograd's hooks.

        Called at fit start; outside a Trainer, by the first :meth:`train_closure`. Call it again
        after moving the model to another device.
        """
        trainer = self._attached_trainer()
        one_process = trainer is None or trainer.world_size == 1
        device = self.weight0.device
        if self.cuda_graphs and device.type == "cuda" and one_process:
            self.training_path, self._train_batch = "graph", GraphedTraining(self)
        elif self.explicit_gradients and self.piecewise_linear and device.type == "cpu" and one_process:
            self.training_path, self._train_batch = "explicit", self._explicit_training()
        else:
            self.training_path, self._train_batch = "autograd", self._eager_train
        return self.training_path

    @property
    def cuda_graph(self) -> GraphedTrainStep | None:
        """The recorded CUDA-graph step of the current training path, if it recorded one."""
        return self._train_batch.graph if isinstance(self._train_batch, GraphedTraining) else None

    def training_step(self, batch, batch_idx: int) -> None:
        optimizer = self.optimizers()
        for images, labels in batch if isinstance(batch, list) else [batch]:
            optimizer.step(closure=self.train_closure(images, labels, self.manual_backward))

    def train_closure(self, images: torch.Tensor, labels: torch.Tensor, backward=None) -> Callable[[], object]:
        """The gradients of one training batch, as a closure for ``optimizer.step(closure=...)``.

        Calling it runs the members' forward pass, adds their losses and correct predictions to
        the epoch's sums, and leaves the gradients in the stacked parameters' ``.grad``, by the
        training path (:meth:`select_training_path`). The autograd path back-propagates the
        summed loss through ``backward`` (default ``Tensor.backward``; Lightning's
        ``manual_backward`` in ``training_step``).
        """
        if self._train_batch is None:
            self.select_training_path()
        return partial(self._train_batch, images, labels, backward or torch.Tensor.backward)

    def explicit_train(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One training batch with the gradients written out by hand; returns the losses ``[S]``
        (:meth:`~lightning_modules.fused.backward.ExplicitTraining.train`)."""
        return self._explicit_training().train(images, labels)

    def _explicit_training(self) -> ExplicitTraining:
        if self._explicit is None:
            self._explicit = ExplicitTraining(self)
        return self._explicit

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
        """Drop the stacked parameters' gradients before a backward pass."""
        for param, _ in self.stacked_parameters():
            param.grad = None

    def on_train_end(self) -> None:
        self._train_batch = None  # frees a CUDA graph's memory pool; gradients stay as they are

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return MemberAdam.for_model(self)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # A clip by the norm over all members would couple them.
        if gradient_clip_val:
            raise ValueError("FusedMLPs does not support gradient clipping (members would not train as alone)")

    def _attached_trainer(self) -> L.Trainer | None:
        try:
            return self.trainer
        except RuntimeError:  # not attached to a Trainer: used on its own
            return None

    # --- metrics -------------------------------------------------------------------------------

    def _record(self, stage: str, losses, predictions, labels, count: bool = True) -> None:
        """Add a batch's losses (times its size) and correct predictions to the stage's sums,
        in place on the device (a CUDA graph writes into the same tensors); ``count`` adds its
        size to the row count, kept on the host (a graph replay counts outside the graph)."""
        sums = self._stage_sums(stage, losses.device)
        sums[0].add_(losses, alpha=len(labels))
        sums[1].add_((predictions == labels).sum(dim=1))
        if count:
            self._count_rows(stage, len(labels))

    def _count_rows(self, stage: str, rows: int) -> None:
        self._rows[stage] += rows

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
        trainer = self._attached_trainer()
        if trainer is not None and trainer.world_size > 1:
            totals = trainer.strategy.reduce(totals, reduce_op="sum")
        S = self.num_members
        return totals[:S] / totals[-1], totals[S : 2 * S] / totals[-1]

    def _end_epoch(self, stage: str) -> None:
        metrics = self.epoch_metrics(stage)
        trainer = self._attached_trainer()
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
            # Lightning logs at its count of Lightning steps, which carry several batches here; a
            # logged "step" sets the x-axis instead: optimizer steps, one per batch, as in
            # train_mlp. There, Lightning logs the epoch-end metrics of a fit one step before the
            # batches' count. With a "step", Lightning adds no "epoch" of its own.
            step = self.global_step - (trainer.state.fn == "fit")
            logged |= {"step": float(step), "epoch": float(self.current_epoch)}
            # Already reduced across processes above.
            self.log_dict(logged, on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=True)

    def member_results(self, index: int) -> dict:
        """Member ``index``'s numbers under ``train_mlp``'s keys.

        ``history`` (rows ``{"epoch", "train/loss", "train/acc", "val/loss", "val/acc"}``),
        ``test_loss``, ``test_acc`` (None before testing), ``best_val_acc`` and ``best_epoch``
        (the first epoch with the highest validation accuracy, as ``train_mlp`` picks it).
        """
        member = self.members[index]
        rows = [dict(row) for row in self.history[index]]
        best = best_epoch(rows)
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
