"""Batched per-sample augmentation: shapes, identity, determinism, per-sample draws, geometry."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from datamodules.augment import AugmentConfig, AugmentedBatches, BatchAugmenter, augment_training_batch

BILINEAR = TF.InterpolationMode.BILINEAR


def _images(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random images [n, 784] with values 0..255 (float32)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 7, 7, generator=generator)
    return (torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear") * 255).reshape(n, 784)


def _params(n: int = 1, angle_deg=0.0, tx=0.0, ty=0.0, scale=1.0, brightness=1.0, contrast=1.0) -> dict:
    full = lambda value: torch.full((n,), float(value))  # noqa: E731
    return {
        "angle": full(math.radians(angle_deg)),
        "tx": full(tx),
        "ty": full(ty),
        "scale": full(scale),
        "brightness": full(brightness),
        "contrast": full(contrast),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.float64])
def test_shape_dtype_and_range_are_kept(dtype):
    images = _images(32).round().to(dtype)
    out = BatchAugmenter()(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert not torch.equal(out, images)


def test_accepts_image_shaped_batches():
    images = _images(4).reshape(4, 1, 28, 28)
    out = BatchAugmenter()(images, torch.Generator().manual_seed(1))
    assert out.shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="expected images of shape"):
        BatchAugmenter()(torch.zeros(4, 783))


def test_bright_images_are_clamped():
    images = torch.full((8, 784), 250.0)
    images[:, ::2] = 5.0  # contrast and brightness push both ends out of 0..255
    config = AugmentConfig(rotation_deg=0, translate=0, scale=0, brightness=0.5, contrast=0.5)
    out = BatchAugmenter(config)(images, torch.Generator().manual_seed(0))
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert float(out.max()) == 255  # some image got brighter than 255 and was clipped


def test_strength_zero_is_identity():
    images = _images(16)
    out = BatchAugmenter(AugmentConfig(strength=0))(images, torch.Generator().manual_seed(3))
    assert AugmentConfig(strength=0).is_identity
    torch.testing.assert_close(out, images, atol=1e-3, rtol=0)


def test_same_seed_same_output_other_seed_other_output():
    images = _images(16)
    augmenter = BatchAugmenter()
    first = augmenter(images, torch.Generator().manual_seed(7))
    second = augmenter(images, torch.Generator().manual_seed(7))
    third = augmenter(images, torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.allclose(first, third)


def test_one_generator_gives_fresh_draws_each_batch():
    images = _images(8)
    augmenter, generator = BatchAugmenter(), torch.Generator().manual_seed(0)
    assert not torch.allclose(augmenter(images, generator), augmenter(images, generator))


def test_strength_does_not_shift_the_random_stream():
    # The draws are scaled, never skipped, so strength k gives the k-scaled parameters of strength 1.
    one = BatchAugmenter(AugmentConfig()).draw(5, torch.Generator().manual_seed(4))
    half = BatchAugmenter(AugmentConfig(strength=0.5)).draw(5, torch.Generator().manual_seed(4))
    torch.testing.assert_close(half["angle"], one["angle"] / 2)
    torch.testing.assert_close(half["scale"] - 1, (one["scale"] - 1) / 2)


def test_each_image_of_a_batch_gets_its_own_transform():
    # B copies of one image: one transform per batch would give B identical outputs.
    copies = _images(1).repeat(24, 1)
    out = BatchAugmenter()(copies, torch.Generator().manual_seed(0))
    distances = torch.cdist(out, out)
    off_diagonal = distances[~torch.eye(24, dtype=torch.bool)]
    assert float(off_diagonal.min()) > 1.0  # every pair differs (pixel distance, 0..255 scale)

    geometry_only = AugmentConfig(brightness=0, contrast=0)
    out = BatchAugmenter(geometry_only)(copies, torch.Generator().manual_seed(0))
    assert float(torch.cdist(out, out)[~torch.eye(24, dtype=torch.bool)].min()) > 1.0


def test_drawn_parameters_stay_in_their_ranges():
    config = AugmentConfig(rotation_deg=10, translate=0.1, scale=0.2, brightness=0.3, contrast=0.4, strength=0.5)
    params = BatchAugmenter(config).draw(4000, torch.Generator().manual_seed(0))
    bounds = {"angle": math.radians(5), "tx": 0.05, "ty": 0.05, "scale": 0.1, "brightness": 0.15, "contrast": 0.2}
    for name, bound in bounds.items():
        centred = params[name] - (0 if name in ("angle", "tx", "ty") else 1)
        assert float(centred.abs().max()) <= bound + 1e-6
        assert float(centred.abs().max()) > 0.9 * bound  # the range is actually used
        assert abs(float(centred.mean())) < 0.1 * bound  # symmetric about no change


def _bar_image() -> torch.Tensor:
    """A bright horizontal bar from the centre to the right edge, on black: [1, 1, 28, 28]."""
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 13:15, 14:26] = 255.0
    return image


def _centroid(image: torch.Tensor) -> tuple[float, float]:
    weights = image.reshape(28, 28)
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    total = weights.sum()
    return float((weights * cols).sum() / total), float((weights * rows).sum() / total)


@pytest.mark.parametrize("angle", [90.0, 30.0, -45.0])
def test_rotation_moves_a_bar_where_geometry_says(angle):
    # Positive angles turn counter-clockwise on screen (rows grow downwards): the bar pointing
    # right from the centre must point up-right after +30 degrees.
    augmenter = BatchAugmenter(AugmentConfig(padding_mode="zeros"))
    image = _bar_image()
    out = augmenter.apply(image, _params(angle_deg=angle))
    centre = 13.5  # pixel centres run 0..27
    x0, y0 = _centroid(image)
    radius = x0 - centre
    x1, y1 = _centroid(out)
    rad = math.radians(angle)
    assert x1 == pytest.approx(centre + radius * math.cos(rad), abs=0.35)
    assert y1 == pytest.approx(y0 - radius * math.sin(rad), abs=0.35)
    assert float(out.sum()) == pytest.approx(float(image.sum()), rel=0.05)  # nothing fell off


def test_translation_and_scale_move_a_bar_where_geometry_says():
    augmenter = BatchAugmenter(AugmentConfig(padding_mode="zeros"))
    image = _bar_image()
    x0, y0 = _centroid(image)
    shifted = augmenter.apply(image, _params(tx=-0.25, ty=0.125))  # 7 px left, 3.5 px down
    x1, y1 = _centroid(shifted)
    assert (x1, y1) == (pytest.approx(x0 - 7, abs=0.2), pytest.approx(y0 + 3.5, abs=0.2))
    zoomed = augmenter.apply(image, _params(scale=0.5))  # about the centre
    x2, _ = _centroid(zoomed)
    assert x2 == pytest.approx(13.5 + (x0 - 13.5) * 0.5, abs=0.3)


def test_geometry_matches_torchvision_per_sample():
    # torchvision's functional ops take one transform per call; looped over the samples they are
    # the reference for the batched version. (TF.affine's angle turns the other way than
    # TF.rotate's; ours follows TF.rotate.)
    images = _images(3).reshape(3, 1, 28, 28)
    angles, shifts, scales = [9.0, -11.0, 4.0], [(0.1, -0.05), (-0.15, 0.0), (0.0, 0.12)], [0.9, 1.1, 1.0]
    params = {
        "angle": torch.tensor([math.radians(a) for a in angles]),
        "tx": torch.tensor([s[0] for s in shifts]),
        "ty": torch.tensor([s[1] for s in shifts]),
        "scale": torch.tensor(scales),
        "brightness": torch.ones(3),
        "contrast": torch.ones(3),
    }
    ours = BatchAugmenter(AugmentConfig(padding_mode="zeros")).apply(images, params)
    for k in range(3):
        reference = TF.affine(
            images[k],
            angle=-angles[k],
            translate=[shifts[k][0] * 28, shifts[k][1] * 28],
            scale=scales[k],
            shear=[0.0, 0.0],
            interpolation=BILINEAR,
        )
        torch.testing.assert_close(ours[k], reference, atol=0.05, rtol=0)
    rotated = BatchAugmenter(AugmentConfig(padding_mode="zeros")).apply(images[:1], _params(angle_deg=9.0))
    torch.testing.assert_close(rotated[0], TF.rotate(images[0], 9.0, interpolation=BILINEAR), atol=0.05, rtol=0)


def test_brightness_and_contrast_match_torchvision_per_sample():
    images = _images(3).reshape(3, 1, 28, 28)
    brightness, contrast = [0.8, 1.2, 1.0], [1.15, 0.85, 0.9]
    params = _params(3)
    params["brightness"], params["contrast"] = torch.tensor(brightness), torch.tensor(contrast)
    ours = BatchAugmenter().apply(images, params) / 255
    for k in range(3):
        reference = TF.adjust_contrast(TF.adjust_brightness(images[k] / 255, brightness[k]), contrast[k])
        torch.testing.assert_close(ours[k], reference, atol=1e-5, rtol=0)


def test_border_padding_keeps_the_background():
    # A uniform grey background stays uniform under a shift with border padding; zeros would
    # bring a black strip into the frame.
    images = torch.full((1, 784), 120.0)
    border = BatchAugmenter().apply(images, _params(tx=0.15))
    zeros = BatchAugmenter(AugmentConfig(padding_mode="zeros")).apply(images, _params(tx=0.15))
    torch.testing.assert_close(border, images, atol=1e-3, rtol=0)
    assert float(zeros.min()) == 0


def test_config_validation_and_as_dict():
    with pytest.raises(ValueError, match="rotation_deg"):
        AugmentConfig(rotation_deg=-1)
    with pytest.raises(ValueError, match="scale x strength"):
        AugmentConfig(scale=0.5, strength=2)
    with pytest.raises(ValueError, match="padding_mode"):
        AugmentConfig(padding_mode="wrap")
    record = AugmentConfig().with_strength(0.5).as_dict()
    assert record["augment_strength"] == 0.5 and record["augment_rotation_deg"] == 11.0
    assert record["augment_padding_mode"] == "border"


def test_augmented_batches_wrap_only_what_they_are_given():
    images, labels = _images(10), torch.arange(10)
    batches = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    wrapped = AugmentedBatches(batches, BatchAugmenter(), seed=1)
    assert len(wrapped) == 2
    epoch1, epoch2 = list(wrapped), list(wrapped)
    for (raw_x, raw_y), (x1, y1), (x2, _) in zip(batches, epoch1, epoch2):
        assert torch.equal(y1, raw_y) and x1.shape == raw_x.shape
        assert not torch.allclose(x1, raw_x) and not torch.allclose(x1, x2)  # fresh each epoch
    # An epoch's draws depend on (seed, rank, epoch) only: a new wrapper replays epoch 1.
    replay = list(AugmentedBatches(batches, BatchAugmenter(), seed=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch1, replay))
    other_rank = list(AugmentedBatches(batches, BatchAugmenter(), seed=1, rank=1))
    assert not torch.allclose(other_rank[0][0], epoch1[0][0])


def test_augmented_in_memory_batches_keep_their_order_and_labels():
    from datamodules.sign_mnist_datamodule import InMemoryBatches

    images, labels = _images(20), torch.arange(20)
    plain = InMemoryBatches(images, labels, batch_size=6, shuffle=True, seed=3)
    wrapped = AugmentedBatches(InMemoryBatches(images, labels, batch_size=6, shuffle=True, seed=3), BatchAugmenter())
    for _ in range(2):  # two epochs: the wrapped iterable still advances its epochs
        for (x, y), (ax, ay) in zip(plain, wrapped):
            assert torch.equal(y, ay) and ax.shape == x.shape


def test_augment_training_batch_keeps_labels():
    images, labels = _images(4), torch.tensor([0, 1, 2, 3])
    out_images, out_labels = augment_training_batch((images, labels), BatchAugmenter(), torch.Generator().manual_seed(0))
    assert out_labels is labels and out_images.shape == images.shape


def test_cuda_draws_match_cpu_draws():
    if not torch.cuda.is_available():
        pytest.skip("requires CUDA")
    images = _images(64)
    cpu = BatchAugmenter()(images, torch.Generator().manual_seed(5))
    cuda = BatchAugmenter()(images.cuda(), torch.Generator().manual_seed(5))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=0.05, rtol=0)
