"""The fused model's optimizer: every member's own Adam, in one ``torch.optim.Adam``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.adam import adam


class MemberAdam(torch.optim.Adam):
    """Adam over stacked members, each updated as by its own solo optimizer.

    A member's update is that of ``torch.optim.Adam(lr=member's lr, eps=1e-7, fused=True)``
    (``make_optimizer``) over its own parameters: Adam works elementwise, so a slice of a
    stacked parameter updates exactly as each member's part of it would alone.

    There is one param group per learning rate. Its params are slices of the stacked
    parameters (detached views sharing their storage): one slice of each stacked parameter per
    run of consecutive members at that rate, so members sorted by learning rate give one slice
    per stacked parameter and rate. :meth:`step` sets each slice's ``.grad`` to the matching
    slice of its stacked parameter's gradient. State is Adam's (``step``, ``exp_avg``,
    ``exp_avg_sq`` per slice), so ``state_dict`` round-trips.

    :meth:`step` calls ``torch.optim.adam.adam``, the function ``Adam.step`` calls per group,
    with the fused implementation and lists kept from step to step: on a model this small,
    ``Adam.step``'s per-step device check and per-parameter bookkeeping would be a noticeable
    share of a training step.

    Gradient clipping and AMP gradient scaling are not supported (the fused model refuses both).

    Parameters
    ----------
    stacked
        (stacked parameter, shape of one member's part), as ``FusedMLPs.stacked_parameters``:
        ``param.view(S, *shape)[i]`` is member ``i``'s part.
    lrs
        Each member's learning rate, in the stacked order.
    betas, eps
        As ``torch.optim.Adam``; the default ``eps`` is Keras' (``make_optimizer``).
    """

    def __init__(
        self,
        stacked: Sequence[tuple[nn.Parameter, tuple[int, ...]]],
        lrs: Sequence[float],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
    ) -> None:
        lrs = [float(lr) for lr in lrs]
        if not lrs:
            raise ValueError("MemberAdam needs at least one member")
        self._stacked = [(param, tuple(shape)) for param, shape in stacked]
        self._storage = [param.data_ptr() for param, _ in self._stacked]
        members = len(lrs)
        groups: dict[float, dict] = {}
        cuts: dict[float, list[tuple[int, int, int]]] = {}  # per rate: (stacked index, first, stop) of each param
        first = 0
        for stop in range(1, members + 1):
            if stop < members and lrs[stop] == lrs[first]:
                continue
            lr = lrs[first]
            group = groups.setdefault(lr, {"params": [], "lr": lr})
            for index, (param, shape) in enumerate(self._stacked):
                group["params"].append(param.detach().view(members, *shape)[first:stop])
                cuts.setdefault(lr, []).append((index, first, stop))
            first = stop
        self._members = members
        self._cuts = list(cuts.values())
        self._shared: list[torch.Tensor | None] = [None] * len(self._stacked)  # the gradients the slices hold
        self._calls: list[tuple[list, ...]] | None = None  # per group: params, grads, exp_avgs, exp_avg_sqs, steps
        super().__init__(list(groups.values()), lr=lrs[0], betas=betas, eps=eps, fused=True)

    @classmethod
    def for_model(cls, model, eps: float = 1e-7) -> "MemberAdam":
        """For a ``FusedMLPs``; build it after the model is on its device (slices are tied to the storage)."""
        return cls(model.stacked_parameters(), [member.lr for member in model.members], eps=eps)

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
        if [param.data_ptr() for param, _ in self._stacked] != self._storage:
            raise RuntimeError("the model's parameters moved (e.g. .to(device)) after MemberAdam was built; build it again")
        if any(grad is not shared for grad, shared in zip(grads, self._shared)):
            self._share_gradients(grads)
        for group, arguments in zip(self.param_groups, self._calls or self._make_calls(), strict=True):
            beta1, beta2 = group["betas"]
            adam(*arguments, fused=True, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
                 weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
        return loss

    def _share_gradients(self, grads: list[torch.Tensor]) -> None:
        """Point each slice's ``.grad`` at its part of the stacked gradient (autograd makes new ones each step)."""
        self._check_groups()
        members = self._members
        per_member = [grad.view(members, *shape) for grad, (_, shape) in zip(grads, self._stacked)]
        for group, cuts in zip(self.param_groups, self._cuts, strict=True):
            for param, (index, first, stop) in zip(group["params"], cuts, strict=True):
                param.grad = per_member[index][first:stop]
        self._shared = list(grads)
        if self._calls is not None:
            for (params, slice_grads, *_) in self._calls:
                slice_grads[:] = [param.grad for param in params]

    def _make_calls(self) -> list[tuple[list, ...]]:
        """The argument lists of ``adam`` per group, with the state made as ``Adam(fused=True)`` makes it."""
        self._check_groups()
        calls = []
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"] or group["differentiable"] or group["capturable"]:
                raise ValueError("MemberAdam implements plain Adam only (no amsgrad, maximize, differentiable, capturable)")
            params = group["params"]
            for param in params:
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            states = [self.state[param] for param in params]
            calls.append((list(params), [param.grad for param in params], [state["exp_avg"] for state in states],
                          [state["exp_avg_sq"] for state in states], [], [state["step"] for state in states]))
        self._calls = calls
        return calls

    def _check_groups(self) -> None:
        if len(self.param_groups) != len(self._cuts):
            raise ValueError("MemberAdam's param groups are its learning rates; it takes no others")

    def add_param_group(self, param_group) -> None:
        super().add_param_group(param_group)
        self._calls = None  # made again, and checked, at the next step

    def load_state_dict(self, state_dict) -> None:
        # Checked before loading: torch.optim matches the groups' sizes, not their tensors' shapes.
        saved = [index for group in state_dict["param_groups"] for index in group["params"]]
        params = [param for group in self.param_groups for param in group["params"]]
        for index, param in zip(saved, params):
            state = state_dict["state"].get(index, {})
            if any(torch.is_tensor(state.get(key)) and state[key].shape != param.shape for key in ("exp_avg", "exp_avg_sq")):
                raise ValueError("the saved state is for members laid out otherwise (another learning rate in some place)")
        super().load_state_dict(state_dict)
        self._calls = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param, _ in self._stacked:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()  # the slices' gradients are views of it
        if set_to_none:
            for group in self.param_groups:
                for param in group["params"]:
                    param.grad = None
            self._shared = [None] * len(self._stacked)
