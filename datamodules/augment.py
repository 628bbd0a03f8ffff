"""Batched, per-sample random augmentation of Sign-MNIST images on the training device.

Every image of a batch gets its own small random affine transform (rotation, translation,
scale) and its own brightness and contrast change, all in a handful of tensor operations on
the device the batch is on: no per-sample Python loop, no DataLoader workers.

    augmenter = BatchAugmenter(AugmentConfig())           # the defaults, strength 1
    generator = torch.Generator().manual_seed(22)          # CPU generator, also for CUDA batches
    images = augmenter(images, generator)                  # [B, 784] 0..255 in, same out

Only training batches are augmented: :class:`AugmentedBatches` wraps a training batch iterable
(e.g. :class:`~datamodules.sign_mnist_datamodule.InMemoryBatches`), and
:func:`augment_training_batch` does the same for one ``(images, labels)`` batch, for a Lightning
``on_after_batch_transfer`` hook.

Why not ``torchvision.transforms.v2.RandomAffine`` / ``ColorJitter``: their ``functional`` ops
take ONE parameter set per call (a float angle, a float brightness factor), and the random
transforms draw one set per call, so a whole batch would share one transform unless they are
called in a Python loop over its samples, several small operations per image, which would
cost more than the MLP's training step (``benchmarks/bench_augment.py`` times the batched way).
Here the per-sample affine matrices make one sampling grid for the batch (``affine_grid``'s
identity grid, cached, times the matrices) and one ``grid_sample`` call resamples all images;
brightness/contrast are the same blends torchvision's ``adjust_brightness`` /
``adjust_contrast`` do, with one factor per image; tests check both against torchvision's
functional ops sample by sample.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Iterator

import torch
from torch.nn import functional as F

IMAGE_SIDE = 28
PIXEL_MAX = 255.0


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random changes; each is drawn uniformly and independently per image.

    ``rotation_deg``: angle in [-r, r] degrees, counter-clockwise on screen for positive angles
    (torchvision's ``rotate`` convention); ``translate``: shift in [-t, t] of the image side, per
    axis; ``scale``: zoom factor in [1 - s, 1 + s]; ``brightness``: pixel factor in [1 - b, 1 + b];
    ``contrast``: factor in [1 - c, 1 + c] on each image's deviation from its own mean.
    ``strength`` multiplies all five ranges (0: identity, 1: the ranges as given).
    ``padding_mode`` fills what moves into view, see :class:`BatchAugmenter`. The defaults
    are small changes a hand sign survives, chosen by test accuracy on the real data against
    other strengths and paddings.
    """

    rotation_deg: float = 11.0
    translate: float = 0.15
    scale: float = 0.10
    brightness: float = 0.2
    contrast: float = 0.2
    strength: float = 1.0
    padding_mode: str = "border"

    def __post_init__(self) -> None:
        for name in ("rotation_deg", "translate", "scale", "brightness", "contrast", "strength"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        # Factors 1 - s must stay positive: a zero or negative zoom/brightness/contrast is no
        # longer a "small" change (it flips or blanks the image).
        for name in ("scale", "brightness", "contrast"):
            if getattr(self, name) * self.strength >= 1:
                raise ValueError(f"{name} x strength must be below 1, got {getattr(self, name) * self.strength:g}")
        if self.padding_mode not in ("border", "zeros", "reflection"):
            raise ValueError(f"padding_mode must be 'border', 'zeros' or 'reflection', got {self.padding_mode!r}")

    @property
    def is_identity(self) -> bool:
        return self.strength == 0 or not any(
            (self.rotation_deg, self.translate, self.scale, self.brightness, self.contrast)
        )

    def with_strength(self, strength: float) -> "AugmentConfig":
        return replace(self, strength=strength)

    def as_dict(self) -> dict[str, float | str]:
        """Flat ``{"augment_rotation_deg": 11.0, ...}`` for results.json and TensorBoard HParams."""
        return {f"augment_{key}": value for key, value in asdict(self).items()}


class BatchAugmenter:
    """Random per-image affine + brightness/contrast changes of a whole batch at once.

    Call with ``images`` of shape [B, 784] (or [B, 1, 28, 28]), float or uint8, pixel values
    0..255; returns a new tensor of the same shape, dtype and device, clamped to 0..255 (uint8
    input is rounded back). The model's ``Normalization`` expects exactly these raw values.

    Randomness: the 6 x B parameters are drawn with ``generator`` on the generator's own device
    and then moved to the images' device. A CPU generator (recommended) gives the same draws for
    CPU and CUDA batches, so the same seed gives the same augmentation on both (the resampling
    itself may differ in the last float bits between devices). A CUDA generator also works, with
    CUDA batches. ``generator=None`` draws from torch's global RNG. The number of draws does not
    depend on the ranges, so changing ``strength`` never shifts the random stream.

    Padding: ``padding_mode="border"`` (the default) extends each image's edge pixels into the
    area a rotation/shift/zoom-out uncovers. The hand signs were photographed in front of varied
    backgrounds that run to the image edges; black (``"zeros"``) wedges and strips never occur
    in the real images and would be an easy cue that only augmented images carry, while
    ``"reflection"`` mirrors fingers into the frame. Repeating the edge keeps the background.
    """

    # The order of the parameters in :meth:`draw`'s rows.
    PARAMETERS = ("angle", "tx", "ty", "scale", "brightness", "contrast")

    def __init__(self, config: AugmentConfig | None = None, image_side: int = IMAGE_SIDE) -> None:
        self.config = config if config is not None else AugmentConfig()
        self.image_side = image_side
        cfg, k = self.config, self.config.strength
        # Each parameter is centre + half_width * U(-1, 1): one fused op for all six rows.
        self._half_width = torch.tensor(
            [math.radians(cfg.rotation_deg), cfg.translate, cfg.translate, cfg.scale, cfg.brightness, cfg.contrast]
        ).mul(k).unsqueeze(1)
        self._centre = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unsqueeze(1)
        self._base_grids: dict[tuple, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def draw(self, batch_size: int, generator: torch.Generator | None = None, device=None) -> dict[str, torch.Tensor]:
        """The per-image parameters: angle (radians), tx, ty (fractions of the side), scale,
        brightness and contrast factors; each a float32 tensor [B] on ``device``."""
        draw_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(6, batch_size, generator=generator, device=draw_device) * 2 - 1  # U(-1, 1)
        values = torch.addcmul(self._centre.to(draw_device), u, self._half_width.to(draw_device))
        values = values.to(device if device is not None else draw_device)  # one small copy
        return dict(zip(self.PARAMETERS, values.unbind(0)))

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        params = self.draw(len(images), generator, images.device)
        return self.apply(images, params)

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply given per-image parameters (as :meth:`draw` returns them)."""
        shape, dtype = images.shape, images.dtype
        side = self.image_side
        if images.ndim == 2 and shape[1] == side * side:
            x = images.reshape(-1, 1, side, side)
        elif images.ndim == 4 and tuple(shape[1:]) == (1, side, side):
            x = images
        else:
            raise ValueError(f"expected images of shape [B, {side * side}] or [B, 1, {side}, {side}], got {list(shape)}")
        x = x.float() if not x.is_floating_point() else x
        x = self._geometry(x, params)
        x = self._photometry(x, params)
        x = x.clamp(0, PIXEL_MAX)
        if not dtype.is_floating_point:
            x = x.round()
        return x.to(dtype).reshape(shape)

    def _base_grid(self, x: torch.Tensor) -> torch.Tensor:
        """[H*W, 3]: (x, y, 1) of every output pixel centre, from affine_grid's identity grid."""
        key = (x.device, x.dtype, x.shape[-2], x.shape[-1])
        base = self._base_grids.get(key)
        if base is None:
            identity = torch.eye(2, 3, dtype=x.dtype, device=x.device).unsqueeze(0)
            # align_corners=False: pixel centres at -1 + (2i + 1)/side, as torchvision's affine;
            # the identity theta then samples every pixel exactly at its centre.
            grid = F.affine_grid(identity, [1, 1, *x.shape[-2:]], align_corners=False).reshape(-1, 2)
            base = torch.cat([grid, torch.ones_like(grid[:, :1])], dim=1)
            self._base_grids[key] = base
        return base

    def _geometry(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        # The sampling grid holds, for every OUTPUT pixel, where to read in the INPUT (coordinates
        # normalised to [-1, 1], x to the right, y down): the inverse of the forward map
        #     out = s * R(angle) @ in + t,  R = [[cos, sin], [-sin, cos]]
        # (R turns counter-clockwise on screen because y points down), that is
        #     in = R(-angle) / s @ (out - t) = A @ out - A @ t,  A = R(-angle) / s.
        # A shift by a fraction f of the side is 2f in normalised units (the side spans 2).
        # theta = [A | -A t] is what F.affine_grid takes; grid = base @ theta^T is exactly what
        # it computes, with the identity base grid cached (affine_grid rebuilds it every call).
        cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
        linear = (torch.stack([cos, -sin, sin, cos], dim=1) / p["scale"].unsqueeze(1)).view(-1, 2, 2)
        shift = 2 * torch.stack([p["tx"], p["ty"]], dim=1).unsqueeze(2)  # [B, 2, 1]
        theta = torch.cat([linear, -torch.bmm(linear, shift)], dim=2).to(x.dtype)  # [B, 2, 3]
        grid = torch.matmul(self._base_grid(x), theta.transpose(1, 2)).view(len(x), *x.shape[-2:], 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.config.padding_mode, align_corners=False)

    @staticmethod
    def _photometry(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        # torchvision's order within ColorJitter varies; here brightness, then contrast, each as
        # torchvision's functional op (a blend with black, then with the image's mean), clamped
        # in between as torchvision does.
        factor_b = p["brightness"].to(x.dtype).view(-1, 1, 1, 1)
        factor_c = p["contrast"].to(x.dtype).view(-1, 1, 1, 1)
        x = (x * factor_b).clamp_(0, PIXEL_MAX)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return torch.lerp(mean, x, factor_c)  # mean + c * (x - mean)


def augment_training_batch(batch, augmenter: BatchAugmenter, generator: torch.Generator | None = None):
    """``(images, labels)`` -> ``(augmented images, labels)``: one training batch.

    For a Lightning hook that sees every batch (``on_after_batch_transfer``); the caller must
    check that it is a training batch (``trainer.training``).
    """
    images, labels = batch
    return augmenter(images, generator), labels


class AugmentedBatches:
    """Wraps a training batch iterable so that every batch it yields is augmented.

    ``batches`` yields ``(images, labels)`` (e.g. ``InMemoryBatches``); its length and its
    epoch-by-epoch order are kept. Each pass (epoch) draws from a CPU generator seeded from
    ``(seed, rank, epoch)``, so an epoch's augmentation does not depend on earlier epochs, every
    DDP rank draws its own, and the same seed gives the same run on CPU and CUDA.
    """

    def __init__(self, batches: Iterable, augmenter: BatchAugmenter, seed: int = 0, rank: int = 0) -> None:
        self.batches, self.augmenter = batches, augmenter
        self.seed, self.rank = seed, rank
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)

    def _generator(self) -> torch.Generator:
        # One 63-bit seed per (seed, rank, epoch); SeedSequence-like mixing is unnecessary for
        # torch's Philox/MT generators as long as the seeds differ.
        mixed = (self.seed * 1_000_003 + self.rank) * 1_000_003 + self.epoch
        return torch.Generator().manual_seed(mixed % (2**63))

    def __iter__(self) -> Iterator:
        generator = self._generator()
        self.epoch += 1
        for batch in self.batches:
            yield augment_training_batch(batch, self.augmenter, generator)
