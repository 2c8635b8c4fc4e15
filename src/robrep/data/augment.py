"""Batched, seeded data augmentations for contrastive learning on small images in [0,1].

Every function maps a batch ``x`` of shape (B, C, H, W) with values in [0,1] to a batch of the
same shape and range, draws its randomness from a ``torch.Generator`` (on the generator's
device, then moved to ``x.device``), and never touches the global RNG. They follow the SimCLR
recipe (Chen et al., ICML 2020, "A Simple Framework for Contrastive Learning of Visual
Representations": random resized crop, horizontal flip, colour distortion) scaled to 28x28
grayscale images: crops are milder, colour jitter becomes brightness/contrast jitter, and small
translations and Gaussian noise are added.

:class:`Augment` bundles the settings (a frozen dataclass, JSON-serializable) and
:func:`augment_preset` gives sensible ones per dataset (no flip for digits).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = [
    "AUGMENT_PRESETS",
    "Augment",
    "augment_preset",
    "brightness_contrast",
    "gaussian_noise",
    "random_flip",
    "random_resized_crop",
    "random_translate",
]


def _check(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise InputError(f"augmentations take float image batches (B, C, H, W) in [0,1], got {getattr(x, 'shape', type(x))}")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, x: torch.Tensor) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.rand(shape, generator=generator, device=dev).to(device=x.device, dtype=x.dtype)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, x: torch.Tensor) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.randn(shape, generator=generator, device=dev).to(device=x.device, dtype=x.dtype)


def _affine_sample(x: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` on the grid ``(u, v) -> (sx u + tx, sy v + ty)`` in normalized coordinates
    ([-1, 1], ``align_corners=False``), bilinear, zeros outside the image."""
    b = x.shape[0]
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0.0, 1.0)


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random box of area ``s * H * W`` (``s ~ U(scale)``) and aspect ratio
    ``r ~ logU(ratio)``, at a uniformly random position inside the image, and resize it back to
    (H, W) with bilinear interpolation (SimCLR's ``RandomResizedCrop``, batched).

    Args:
        x: (B, C, H, W) images in [0,1].
        generator: random source.
        scale: range of the crop's area as a fraction of the image, within (0, 1].
        ratio: range of the crop's width/height ratio (sampled log-uniformly).

    Returns:
        (B, C, H, W) in [0,1]. ``scale=(1, 1), ratio=(1, 1)`` is the identity.
    """
    _check(x)
    if not (0 < scale[0] <= scale[1] <= 1):
        raise InputError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise InputError(f"crop ratio must satisfy 0 < lo <= hi, got {ratio}")
    b = x.shape[0]
    u = _rand((b, 4), generator, x)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(logr)
    # box side lengths as fractions of the image (clipped to the image)
    w = torch.sqrt(s * r).clamp(max=1.0)
    h = torch.sqrt(s / r).clamp(max=1.0)
    # centre in normalized coordinates so that the box stays inside [-1, 1]
    cx = (1 - w) * (2 * u[:, 2] - 1)
    cy = (1 - h) * (2 * u[:, 3] - 1)
    return _affine_sample(x, w, h, cx, cy)


def random_translate(x: torch.Tensor, generator: torch.Generator | None = None, *, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by an integer number of pixels ``(dx, dy)``, each uniform in
    ``{-max_shift, ..., max_shift}``; vacated pixels are 0 (black background).

    Args:
        x: (B, C, H, W) images in [0,1].
        generator: random source.
        max_shift: largest shift in pixels (>= 0).

    Returns:
        (B, C, H, W); ``out[b, :, i, j] = x[b, :, i - dy, j - dx]`` (0 outside the image).
    """
    _check(x)
    if max_shift < 0:
        raise InputError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return x.clone()
    b, _, hgt, wid = x.shape
    k = 2 * max_shift + 1
    d = (_rand((b, 2), generator, x) * k).floor().clamp(max=k - 1) - max_shift  # integers in [-m, m]
    one = torch.ones(b, device=x.device, dtype=x.dtype)
    # output pixel (i, j) reads input (i - dy, j - dx): normalized offset -2 d / size
    return _affine_sample(x, one, one, -2 * d[:, 0] / wid, -2 * d[:, 1] / hgt)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, *, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (sensible for clothes, not digits).

    Returns:
        (B, C, H, W): ``x[b].flip(-1)`` for the chosen images, ``x[b]`` for the others.
    """
    _check(x)
    if not 0 <= p <= 1:
        raise InputError(f"flip probability must be in [0,1], got {p}")
    m = _rand((x.shape[0],), generator, x) < p
    return torch.where(m[:, None, None, None], x.flip(-1), x)


def brightness_contrast(
    x: torch.Tensor, generator: torch.Generator | None = None, *, brightness: float = 0.2, contrast: float = 0.2
) -> torch.Tensor:
    """Grayscale "colour" jitter: ``clip(c * (x - mean) + mean + b)`` per image with
    ``c ~ U(1 - contrast, 1 + contrast)``, ``b ~ U(-brightness, brightness)`` and ``mean`` the
    image's mean intensity.

    Returns:
        (B, C, H, W) in [0,1].
    """
    _check(x)
    if brightness < 0 or not 0 <= contrast < 1:
        raise InputError(f"brightness must be >= 0 and contrast in [0,1), got {brightness}, {contrast}")
    b = x.shape[0]
    u = _rand((b, 2), generator, x)
    c = (1 - contrast + 2 * contrast * u[:, 0])[:, None, None, None]
    off = (brightness * (2 * u[:, 1] - 1))[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (c * (x - mean) + mean + off).clamp(0.0, 1.0)


def gaussian_noise(x: torch.Tensor, generator: torch.Generator | None = None, *, std: float = 0.05) -> torch.Tensor:
    """``clip(x + std * N(0, I), 0, 1)``.

    Returns:
        (B, C, H, W) in [0,1].
    """
    _check(x)
    if std < 0:
        raise InputError(f"noise std must be >= 0, got {std}")
    if std == 0:
        return x.clone()
    return (x + std * _randn(tuple(x.shape), generator, x)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Augment:
    """A random view ``t(x)`` for contrastive learning: crop, translate, flip, jitter, noise
    (applied in this order; a zero/None setting skips that step).

    Attributes:
        crop_scale: area range of :func:`random_resized_crop` (``None``: no crop).
        crop_ratio: aspect-ratio range of the crop.
        max_shift: :func:`random_translate` shift in pixels (0: none).
        flip: probability of :func:`random_flip` (0 for digits).
        brightness, contrast: :func:`brightness_contrast` ranges (0: none).
        noise_std: :func:`gaussian_noise` standard deviation (0: none).
    """

    crop_scale: tuple[float, float] | None = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    max_shift: int = 2
    flip: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    noise_std: float = 0.03

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random view of each image of ``x`` (B, C, H, W) in [0,1]; same shape and range."""
        _check(x)
        out = x
        if self.crop_scale is not None:
            out = random_resized_crop(out, generator, scale=self.crop_scale, ratio=self.crop_ratio)
        if self.max_shift > 0:
            out = random_translate(out, generator, max_shift=self.max_shift)
        if self.flip > 0:
            out = random_flip(out, generator, p=self.flip)
        if self.brightness > 0 or self.contrast > 0:
            out = brightness_contrast(out, generator, brightness=self.brightness, contrast=self.contrast)
        if self.noise_std > 0:
            out = gaussian_noise(out, generator, std=self.noise_std)
        return out if out is not x else x.clone()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_scale"] = list(self.crop_scale) if self.crop_scale is not None else None
        d["crop_ratio"] = list(self.crop_ratio)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Augment:
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) - names:
            raise InputError(f"unknown augmentation options {sorted(set(d) - names)}; known: {sorted(names)}")
        d = dict(d)
        if d.get("crop_scale") is not None:
            d["crop_scale"] = tuple(float(v) for v in d["crop_scale"])
        if "crop_ratio" in d:
            d["crop_ratio"] = tuple(float(v) for v in d["crop_ratio"])
        return cls(**d)


AUGMENT_PRESETS: dict[str, Augment] = {
    # digits: no flip (a mirrored 2 is not a 2), mild crops
    "digits": Augment(crop_scale=(0.6, 1.0), max_shift=2, flip=0.0),
    # clothes: left-right symmetric classes, flips are label-preserving
    "clothes": Augment(crop_scale=(0.5, 1.0), max_shift=2, flip=0.5),
    # natural images (SimCLR-like, without hue jitter)
    "natural": Augment(crop_scale=(0.2, 1.0), max_shift=0, flip=0.5, brightness=0.4, contrast=0.4, noise_std=0.0),
    "none": Augment(crop_scale=None, max_shift=0, flip=0.0, brightness=0.0, contrast=0.0, noise_std=0.0),
}
_DATASET_PRESET = {"mnist": "digits", "fashion-mnist": "clothes", "demo": "clothes", "cifar10": "natural",
                   "cifar100": "natural", "svhn": "digits"}


def augment_preset(name: str) -> Augment:
    """The :class:`Augment` for a preset (``digits``, ``clothes``, ``natural``, ``none``) or a
    dataset name (``mnist`` -> digits, ``fashion-mnist``/``demo`` -> clothes, ``cifar10`` ->
    natural, ...)."""
    key = _DATASET_PRESET.get(name, name)
    if key not in AUGMENT_PRESETS:
        raise InputError(f"unknown augmentation preset {name!r}; choose one of {sorted(AUGMENT_PRESETS)} or a dataset name "
                         f"({', '.join(sorted(_DATASET_PRESET))})")
    return AUGMENT_PRESETS[key]
