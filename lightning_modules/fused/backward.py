"""The fused training step's gradients written out by hand, for members with ReLU or linear activations."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lightning_modules.fused.model import FusedMLPs


@torch.no_grad()
def explicit_train(model: FusedMLPs, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One training batch's losses ``[S]``, metric sums and gradients, without autograd's graph.

    The gradients are written into the stacked parameters' ``.grad``, buffers kept from step to
    step. With ``delta`` the gradient of the summed losses at a layer's output, the layer's
    weight gradient is ``delta^T @ input``, its bias gradient the sum of ``delta`` over the
    batch, and its input's gradient ``delta @ weight`` times the activation's derivative: the
    0/1 mask of ``h > 0`` (ReLU, as ``torch.relu``'s backward) or ones (linear). At the logits,
    ``delta = (softmax - one_hot) / B``, the gradient of each member's mean cross-entropy.

    These are autograd's formulas, computed as a solo run computes them: each member's products
    are batched products of its own (the shared input broadcast, not copied), and the
    log-softmax's gradient is autograd's own. So a member follows its solo run to float
    rounding (``tests/test_fused.py``).

    Parameters
    ----------
    model
        A ``FusedMLPs`` whose members' activations are all ReLU or linear (``piecewise_linear``).
    images, labels
        One training batch, ``[B, 784]`` and ``[B]``, on the model's device.
    """
    if not model.piecewise_linear:
        raise ValueError("explicit gradients need ReLU or linear activations only")
    S, B = model.num_members, images.shape[0]
    h = model.normalization(images).expand(S, B, -1)
    inputs, derivatives = [h], []  # each layer's input; each hidden layer's activation derivative
    for k in range(model.num_layers):
        weight, bias = model.member_layer(k)
        h = torch.baddbmm(bias, h, weight.transpose(1, 2))
        if k < model.num_layers - 1:
            derivative = torch.gt(h, 0, out=torch.empty_like(h))  # 1.0 or 0.0: a float mask is cheap to apply
            if model.linear_members is not None:
                torch.maximum(derivative, model.linear_members, out=derivative)
            h = h.mul_(derivative)  # ReLU where the mask says so, the identity elsewhere
            inputs.append(h)
            derivatives.append(derivative)
    losses, delta = _cross_entropy_and_gradient(h, labels)
    model._record("train", losses, h.argmax(dim=2), labels)
    for k in reversed(range(model.num_layers)):
        weight, _ = model.member_layer(k)
        weight_grad, bias_grad = _gradient_buffers(model, k)
        torch.bmm(delta.transpose(1, 2), inputs[k], out=weight_grad)
        torch.sum(delta, dim=1, keepdim=True, out=bias_grad)
        if k > 0:
            delta = torch.bmm(delta, weight).mul_(derivatives[k - 1])
    return losses


def _cross_entropy_and_gradient(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's mean cross-entropy ``[S]`` and the gradient of their sum at the logits ``[S, B, C]``.

    The gradient comes from autograd through the log-softmax alone: its backward computes the
    softmax with its own exponential, which rounds otherwise than ``torch.exp``; a member's
    float32 run stays as close to its solo run as autograd's does only with the same rounding.
    """
    S, B, _ = logits.shape
    logits = logits.detach().requires_grad_()
    with torch.enable_grad():
        log_probs = torch.log_softmax(logits, dim=2)
    targets = labels.view(1, B, 1).expand(S, B, 1)
    losses = log_probs.gather(2, targets).squeeze(2).mean(dim=1).neg_()
    nll_grad = torch.zeros_like(log_probs).scatter_(2, targets, -1.0 / B)  # of the summed mean losses at log_probs
    (delta,) = torch.autograd.grad(log_probs, logits, nll_grad)
    return losses, delta


def _gradient_buffers(model: FusedMLPs, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``k``'s ``.grad`` tensors as per-member views ``[S, out, in]`` and ``[S, 1, out]``,
    made when missing or of another shape, dtype or device."""
    for param in model.layer_parameters(k):
        grad = param.grad
        if grad is None or grad.shape != param.shape or grad.dtype != param.dtype or grad.device != param.device:
            param.grad = torch.empty_like(param)
    weight, bias = model.layer_parameters(k)
    return model.per_member(k, weight.grad, bias.grad)
