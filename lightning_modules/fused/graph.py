"""The fused model's CUDA training step, recorded once as a CUDA graph and replayed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from labkit.progress import note_once

if TYPE_CHECKING:
    from lightning_modules.fused.model import FusedMLPs


class GraphedTraining:
    """The ``"graph"`` training path of a ``FusedMLPs``: a callable ``(images, labels, backward)``.

    The first batch records the step (:class:`GraphedTrainStep`); every batch of that shape
    replays it, and others (a short last batch) train eagerly. If recording fails (e.g. a CUDA
    build without graph support), every batch trains eagerly, and a note says so once.
    """

    def __init__(self, model: FusedMLPs) -> None:
        self.model = model
        self.graph: GraphedTrainStep | None = None
        self.failed = False

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, backward: Callable) -> None:
        if self.graph is not None and self.graph.storage != self.model.weight0.data_ptr():
            self.graph = None  # the parameters moved since recording: record again
        if self.graph is None and not self.failed:
            try:
                self.graph = GraphedTrainStep(self.model, images.shape, images.dtype, images.device)
            except RuntimeError as exc:
                self.failed = True
                for param, _ in self.model.stacked_parameters():
                    param.grad = None
                note_once(f"CUDA graph not recorded ({' '.join(str(exc).split())[:200]}); training without it")
        if self.graph is None:
            self.model._eager_train(images, labels, backward)
        elif self.graph.fits(images):
            self.graph.replay(images, labels)
        else:
            self._eager_into_graph_buffers(images, labels, backward)

    def _eager_into_graph_buffers(self, images, labels, backward) -> None:
        """Train one batch eagerly, its gradients copied into the graph's gradient buffers, which
        ``.grad`` must keep pointing to for later replays."""
        params = [param for param, _ in self.model.stacked_parameters()]
        buffers = [param.grad for param in params]
        self.model._eager_train(images, labels, backward)
        for param, buffer in zip(params, buffers, strict=True):
            buffer.copy_(param.grad)
            param.grad = buffer


class GraphedTrainStep:
    """A ``FusedMLPs`` training batch's forward, loss, metric sums and backward, recorded once as
    a CUDA graph and replayed for every batch of the same shape.

    A GPU step of this small model is dozens of short kernels, whose launches from Python take
    longer than they run; a replay is one launch. The recorded work reads the batch from fixed
    input tensors (each replay copies the batch in) and writes the gradients into fixed
    buffers, which ``param.grad`` points to afterwards; the optimizer's step runs after each
    replay, outside the graph, as in eager training. The kernels are those of the eager step,
    so the numbers are the same.

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
        """Whether a replay can train this batch: the recorded shape, dtype and device."""
        return images.shape == self.images.shape and images.dtype == self.images.dtype and images.device == self.images.device

    def replay(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images.copy_(images)
        self.labels.copy_(labels)
        self.graph.replay()
        self.model._count_rows("train", len(labels))
        self.model.graph_steps += 1
