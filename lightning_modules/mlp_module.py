"""The reference study's 200-50-25 multilayer perceptron as a LightningModule."""

from __future__ import annotations

import numpy as np
import torch
from lightning import LightningModule
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

# Hidden-layer activations by name. "linear" is the identity (Keras' activation=None/"linear").
ACTIVATIONS = {
    "relu": nn.ReLU,
    "linear": nn.Identity,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


class Normalization(nn.Module):
    """Per-feature standardisation with statistics fixed before training.

    The counterpart of ``keras.layers.Normalization`` after ``adapt``: the mean and the
    (population) variance of the training images, plus the sample count, stored as buffers
    so they are saved with the model but never trained.
    """

    # Keras divides by max(sqrt(variance), epsilon) so that constant pixels (the corners of
    # some images have variance 0) do not blow up.
    epsilon = 1e-7

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("variance", torch.ones(num_features))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def adapt(self, data) -> "Normalization":
        data = torch.as_tensor(np.asarray(data), dtype=torch.float64)
        self.mean.copy_(data.mean(dim=0))
        self.variance.copy_(data.var(dim=0, unbiased=False))
        self.count.fill_(len(data))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.variance.sqrt().clamp_min(self.epsilon)


class StagedSteps(LightningModule):
    """Lightning's per-stage hooks routed to two methods, the same for every model here:
    ``_step(batch, stage)`` (a batch of "train", "val" or "test"; returns the training loss) and
    ``_end_epoch(stage)`` (the stage's epoch is over: reduce and log its metrics)."""

    def _step(self, batch, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def _end_epoch(self, stage: str) -> None:
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._end_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._end_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_epoch("test")


class MLPClassifier(StagedSteps):
    """Normalization -> Linear(784, 200) -> act -> Linear(200, 50) -> act -> Linear(50, 25).

    Trained with Adam at ``lr`` on the cross-entropy of the logits. Logs ``train/loss``,
    ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss`` and ``test/acc`` once per epoch.
    Call :meth:`adapt` with the training images before fitting.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        act: str = "relu",
        num_classes: int = 25,
        input_dim: int = 784,
        hidden: tuple[int, ...] = (200, 50),
    ) -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.save_hyperparameters()
        self.normalization = Normalization(input_dim)
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[act]()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)
        # One metric object per stage, so that epochs and stages never mix their counts.
        # validate_args=False: the labels are checked once when the data is loaded, not per batch.
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes, average="micro", validate_args=False))
            setattr(self, f"{stage}_loss", MeanMetric())
        self._epoch_outputs: dict[str, list] = {"train": [], "val": [], "test": []}
        self.example_input_array = torch.zeros(2, input_dim)

    def adapt(self, train_images) -> "MLPClassifier":
        """Fix the normalisation statistics from the training images (uint8 or float, [N, 784])."""
        self.normalization.adapt(train_images)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.normalization(x))

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        # A torchmetrics update per step would cost a good share of this small model's step;
        # the step's outputs are kept instead, and the metrics updated once per epoch.
        self._epoch_outputs[stage].append((loss.detach(), logits.detach().argmax(dim=1), labels))
        return loss

    def _end_epoch(self, stage: str) -> None:
        outputs = self._epoch_outputs[stage]
        if not outputs:
            return
        losses, predictions, labels = zip(*outputs)
        sizes = torch.tensor([len(batch) for batch in labels], device=losses[0].device)
        outputs.clear()
        getattr(self, f"{stage}_loss").update(torch.stack(losses), sizes)
        getattr(self, f"{stage}_acc").update(torch.cat(predictions), torch.cat(labels))
        # Logging the metric objects once per epoch (not every step) keeps Lightning's per-step
        # bookkeeping out of the hot loop; torchmetrics syncs the counts across DDP ranks.
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_step=False, on_epoch=True, prog_bar=stage != "train")
        self.log(f"{stage}/acc", getattr(self, f"{stage}_acc"), on_step=False, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.parameters(), self.hparams.lr)


def make_optimizer(parameters, lr: float) -> torch.optim.Optimizer:
    """Adam with Keras' defaults (eps 1e-7), shared with the benchmark's plain-PyTorch loop.

    The fused implementation runs one kernel for all parameters (on CPU and CUDA) instead of a
    loop over them, a clear gain for a model this small (``benchmarks/RESULTS.md``).
    """
    return torch.optim.Adam(parameters, lr=lr, eps=1e-7, fused=True)


def parameter_report(model: MLPClassifier) -> dict[str, int]:
    """Parameter counts in the reference's (Keras') terms.

    Keras counts the normalisation layer's mean, variance and count as non-trainable
    parameters: 784 + 784 + 1 = 1,569. Trainable: 168,325, of which 275 are biases.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bias = sum(p.numel() for name, p in model.named_parameters() if name.endswith("bias"))
    non_trainable = sum(b.numel() for b in model.normalization.buffers())
    non_trainable += sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {
        "total": trainable + non_trainable,
        "trainable": trainable,
        "non_trainable": non_trainable,
        "bias": bias,
    }
