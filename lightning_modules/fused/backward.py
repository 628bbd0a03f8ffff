"""The fused training step's gradients written out by hand, for members with ReLU or linear activations."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lightning_modules.fused.model import FusedMLPs


class ExplicitTraining:
    """The ``"explicit"`` training path of a ``FusedMLPs``: a callable ``(images, labels, backward)``
    that trains one batch with the gradients written out by hand (:meth:`train`; ``backward`` is
    not used).

    The per-member views of the weights and of the gradient buffers are kept from step to step
    (a step of this small model is short enough for making them anew to show), and made again
    when the parameters or their gradient buffers change.

    Parameters
    ----------
    model
        A ``FusedMLPs`` whose members' activations are all ReLU or linear (``piecewise_linear``).
    """

    def __init__(self, model: FusedMLPs) -> None:
        if not model.piecewise_linear:
            raise ValueError("explicit gradients need ReLU or linear activations only")
        self.model = model
        self._storage: list[int] = []  # the parameters' storage and gradients the views below were made for
        self._grad_tensors: list[torch.Tensor | None] = []
        self._layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # weight, its transpose, bias
        self._grads: list[tuple[torch.Tensor, torch.Tensor]] = []  # weight and bias gradient buffers

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, backward=None) -> torch.Tensor:
        return self.train(images, labels)

    @torch.no_grad()
    def train(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One training batch's losses ``[S]``, metric sums and gradients, without autograd's graph.

        The gradients are written into the stacked parameters' ``.grad``, buffers kept from step
        to step. With ``delta`` the gradient of the summed losses at a layer's output, the layer's
        weight gradient is ``delta^T @ input``, its bias gradient the sum of ``delta`` over the
        batch, and its input's gradient ``delta @ weight`` times the activation's derivative: the
        0/1 mask of ``h > 0`` (ReLU, as ``torch.relu``'s backward) or ones (linear). At the
        logits, ``delta = (softmax - one_hot) / B``, the gradient of each member's mean
        cross-entropy.

        These are autograd's formulas, computed as a solo run computes them: each member's
        products are batched products of its own (the shared input broadcast, not copied), and
        the log-softmax's gradient is autograd's own. So a member follows its solo run to float
        rounding (``tests/test_fused.py``).

        Parameters
        ----------
        images, labels
            One training batch, ``[B, 784]`` and ``[B]``, on the model's device.
        """
        model = self.model
        layers, grads = self._views()
        S, B = model.num_members, images.shape[0]
        h = model.normalization(images).expand(S, B, -1)
        inputs, derivatives = [h], []  # each layer's input; each hidden layer's activation derivative
        for k, (_, weight_t, bias) in enumerate(layers):
            h = torch.baddbmm(bias, h, weight_t)
            if k < len(layers) - 1:
                derivative = torch.gt(h, 0, out=torch.empty_like(h))  # 1.0 or 0.0: a float mask is cheap to apply
                if model.linear_members is not None:
                    torch.maximum(derivative, model.linear_members, out=derivative)
                h = h.mul_(derivative)  # ReLU where the mask says so, the identity elsewhere
                inputs.append(h)
                derivatives.append(derivative)
        losses, delta = _cross_entropy_and_gradient(h, labels)
        model._record("train", losses, h.argmax(dim=2), labels)
        for k in reversed(range(len(layers))):
            weight_grad, bias_grad = grads[k]
            torch.bmm(delta.transpose(1, 2), inputs[k], out=weight_grad)
            torch.sum(delta, dim=1, keepdim=True, out=bias_grad)
            if k > 0:
                delta = torch.bmm(delta, layers[k][0]).mul_(derivatives[k - 1])
        return losses

    def _views(self):
        """Per layer, the weights ``[S, out, in]`` (and transposed) and biases ``[S, 1, out]``, and
        the gradient buffers likewise; gradients are made where missing or of another kind."""
        model = self.model
        params = [param for param, _ in model.stacked_parameters()]
        storage = [param.data_ptr() for param in params]
        grad_tensors = [param.grad for param in params]
        if storage == self._storage and all(grad is kept for grad, kept in zip(grad_tensors, self._grad_tensors, strict=True)):
            return self._layers, self._grads
        for param in params:
            grad = param.grad
            if grad is None or grad.shape != param.shape or grad.dtype != param.dtype or grad.device != param.device:
                param.grad = torch.empty_like(param)
        self._layers, self._grads = [], []
        for k in range(model.num_layers):
            weight, bias = model.layer_parameters(k)
            weight_view, bias_view = model.per_member(k, weight.detach(), bias.detach())
            self._layers.append((weight_view, weight_view.transpose(1, 2), bias_view))
            self._grads.append(model.per_member(k, weight.grad, bias.grad))
        self._storage, self._grad_tensors = storage, [param.grad for param in params]
        return self._layers, self._grads


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
