"""TensorBoard pictures of a trained MLP, written once at the end of training.

    tags = write_pictures(tensorboard_logger.experiment, model, test_images, test_labels,
                          train_images, augment=augmenter)

writes to a ``torch.utils.tensorboard.SummaryWriter``:

- ``test/confusion_matrix``: the test confusion matrix with letter labels (``labkit.confusion``);
- ``test/misclassified``: the most confident mistakes with their true and predicted letters;
- ``train/batch_images``: training images as the network sees them (augmented if ``augment``);
- ``hidden2``: the projector (embedding) of the second hidden layer's activations of up to
  ``max_points`` test images, with a sprite of the images and their true/predicted letters.

:class:`HistogramLogger` is a Lightning callback that adds histograms of every ``Linear``'s
weight and gradient at the end of each training epoch.

Figures are drawn on ``matplotlib.figure.Figure`` objects (rendered by Agg), never through
pyplot's global state, so this works headless and leaves the caller's backend alone.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from lightning import Callback
from torch import nn
from torchvision.utils import make_grid

from datamodules.splits import letter
from labkit.confusion import confusion_figure

SIDE = 28
TAG_CONFUSION = "test/confusion_matrix"
TAG_MISCLASSIFIED = "test/misclassified"
TAG_TRAIN_IMAGES = "train/batch_images"
TAG_EMBEDDING = "hidden2"


def _as_float_tensor(images) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()


def _as_label_array(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    return np.asarray(labels).astype(np.int64)


def _to_unit_images(images: torch.Tensor) -> torch.Tensor:
    """[N, 784] 0..255 -> [N, 1, 28, 28] 0..1 on the CPU (what TensorBoard images expect)."""
    return (images.detach().float().cpu().reshape(-1, 1, SIDE, SIDE) / 255).clamp(0, 1)


@torch.no_grad()
def predict_with_hidden(model: nn.Module, images: torch.Tensor, batch_size: int = 4096):
    """Logits and the last hidden layer's activations (the 50 units of the 200-50-25 MLP).

    ``model`` is an :class:`~lightning_modules.mlp_module.MLPClassifier` (``normalization`` and
    ``layers``, the last of which is the output Linear). Runs in eval mode on the model's device
    and puts the model's mode back afterwards.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, hidden = [], []
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            h = model.layers[:-1](model.normalization(x))
            hidden.append(h.cpu())
            logits.append(model.layers[-1](h).cpu())
    finally:
        model.train(was_training)
    if not logits:
        width = model.layers[-1].in_features
        return torch.zeros(0, model.layers[-1].out_features), torch.zeros(0, width)
    return torch.cat(logits), torch.cat(hidden)


def misclassified_figure(images: torch.Tensor, labels: np.ndarray, predictions: np.ndarray,
                         confidence: np.ndarray, max_images: int = 64, columns: int = 8):
    """A grid of the most confident mistakes, each titled ``true -> predicted (probability)``.

    Drawn as one image with a caption above each tile: one Axes, not one per picture, which
    would make this figure most of the end-of-training pictures' time. Returns None when there
    is no mistake.
    """
    from matplotlib.figure import Figure

    wrong = np.flatnonzero(labels != predictions)
    if wrong.size == 0:
        return None
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:max_images]
    pictures = _to_unit_images(images[torch.as_tensor(wrong)])[:, 0].numpy()  # [n, 28, 28]
    columns = min(columns, len(wrong))
    rows = -(-len(wrong) // columns)
    side = pictures.shape[-1]
    gap, caption = 3, 9  # pixels between tiles, and above each tile for its caption
    cell_w, cell_h = side + gap, side + caption
    canvas = np.ones((rows * cell_h, columns * cell_w - gap), dtype=np.float32)
    figure = Figure(figsize=(1.2 * columns, 1.35 * rows + 0.4), dpi=100)
    figure.suptitle(f"{len(np.flatnonzero(labels != predictions))} misclassified; most confident first (true -> predicted)", fontsize=8)
    ax = figure.add_subplot()
    for k, index in enumerate(wrong):
        top, left = (k // columns) * cell_h + caption, (k % columns) * cell_w
        canvas[top : top + side, left : left + side] = pictures[k]
        ax.text(left + side / 2, top - 1, f"{letter(labels[index])} -> {letter(predictions[index])} ({confidence[index]:.2f})",
                ha="center", va="bottom", fontsize=7)
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    figure.tight_layout()
    return figure


def training_grid(images: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  count: int = 64, columns: int = 8, zoom: int = 3) -> torch.Tensor:
    """[3, H, W] 0..1: the first ``count`` training images, passed through ``augment`` if given.

    Each pixel becomes ``zoom`` x ``zoom`` pixels (nearest): 28-pixel tiles are hard to see at
    TensorBoard's default size, and a figure would resample them.
    """
    batch = images[:count].float()
    if augment is not None:
        batch = augment(batch)
    grid = make_grid(_to_unit_images(batch), nrow=columns, padding=2, pad_value=1.0)
    return grid.repeat_interleave(zoom, dim=1).repeat_interleave(zoom, dim=2)


def _embedding_sample(n: int, max_points: int, seed: int) -> torch.Tensor:
    if n <= max_points:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values


def write_pictures(
    writer,
    model: nn.Module,
    test_images,
    test_labels,
    train_images,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_points: int = 2000,
    global_step: int = 0,
    seed: int = 0,
) -> list[str]:
    """Write the end-of-training pictures (see the module docstring) and return their tags.

    ``writer``: a ``SummaryWriter`` (``TensorBoardLogger.experiment``); ``model``: a trained
    ``MLPClassifier``; images ``[N, 784]`` with values 0..255 (numpy or torch, uint8 or float),
    labels ``[N]``. ``augment`` maps a float ``[B, 784]`` batch to its augmented version, e.g.
    a :class:`~datamodules.augment.BatchAugmenter` (drawing from torch's global RNG) or
    ``lambda x: augmenter(x, generator)``. ``max_points`` caps the projector's sample (a fixed
    random sample by ``seed``). ``test/misclassified`` is skipped when nothing is wrong.
    """
    test_x = _as_float_tensor(test_images)
    test_y = _as_label_array(test_labels)
    if len(test_x) != len(test_y):
        raise ValueError(f"{len(test_x)} test images but {len(test_y)} labels")
    logits, hidden = predict_with_hidden(model, test_x)
    probabilities = torch.softmax(logits, dim=1)
    confidence, predicted = (t.numpy() for t in probabilities.max(dim=1))
    predicted = predicted.astype(np.int64)
    tags: list[str] = []

    if len(test_y):
        writer.add_figure(TAG_CONFUSION, confusion_figure(test_y, predicted, letter, "test confusion matrix"), global_step=global_step)
        tags.append(TAG_CONFUSION)
        figure = misclassified_figure(test_x, test_y, predicted, confidence)
        if figure is not None:
            writer.add_figure(TAG_MISCLASSIFIED, figure, global_step=global_step)
            tags.append(TAG_MISCLASSIFIED)

    train_x = _as_float_tensor(train_images)
    if len(train_x):
        writer.add_image(TAG_TRAIN_IMAGES, training_grid(train_x, augment), global_step=global_step, dataformats="CHW")
        tags.append(TAG_TRAIN_IMAGES)

    if len(test_y):
        sample = _embedding_sample(len(test_y), max_points, seed)
        rows = sample.numpy()
        metadata = [
            [letter(test_y[k]), letter(predicted[k]), "yes" if test_y[k] == predicted[k] else "no"] for k in rows
        ]
        writer.add_embedding(
            hidden[sample],
            metadata=metadata,
            metadata_header=["true", "predicted", "correct"],
            label_img=_to_unit_images(test_x[sample]),
            global_step=global_step,
            tag=TAG_EMBEDDING,
        )
        tags.append(TAG_EMBEDDING)
    writer.flush()
    return tags


class HistogramLogger(Callback):
    """Histograms of each ``Linear``'s weight and gradient once per training epoch.

    Tags ``weights/<layer name>`` and ``gradients/<layer name>`` (e.g. ``weights/layers.0``),
    with the epoch number as step: the weights after the epoch's last optimizer step and that
    step's gradients. They are taken at the end of the epoch's last training batch, because
    Lightning zeroes the gradients before it validates (``on_validation_model_zero_grad``),
    which is before ``on_train_epoch_end``. Writes to the first TensorBoard logger of the
    trainer, or to ``writer`` when given; only on rank 0.
    """

    def __init__(self, writer=None) -> None:
        self.writer = writer
        self._written_epoch: int | None = None

    def _writer(self, trainer):
        if self.writer is not None:
            return self.writer
        from lightning.pytorch.loggers import TensorBoardLogger

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    def write(self, trainer, pl_module) -> None:
        """Add the histograms now, at step ``trainer.current_epoch``."""
        self._written_epoch = trainer.current_epoch
        if not trainer.is_global_zero:
            return
        writer = self._writer(trainer)
        if writer is None:
            return
        for name, module in pl_module.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            writer.add_histogram(f"weights/{name}", module.weight.detach().cpu(), global_step=trainer.current_epoch)
            if module.weight.grad is not None:
                grad = module.weight.grad.detach().cpu()
                writer.add_histogram(f"gradients/{name}", grad, global_step=trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == trainer.num_training_batches:  # inf for batches without a length
            self.write(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Batches of unknown number: the weights at least (gradients are gone by now).
        if self._written_epoch != trainer.current_epoch:
            self.write(trainer, pl_module)
