"""Semantic perturbations (Semantify-NN): the transforms and their registry.

Mohapatra, Weng, Chen, Liu, Daniel, *Towards Verifying Robustness of Neural Networks Against A
Family of Semantic Perturbations*, CVPR 2020 (arXiv 1912.09533); official code
``JeetMo/Semantify-NN`` (``utils/attacks.py``, ``threat_models/``).

Every transform maps images in [0,1] (robrep's range; the reference code stores pixels in
[-0.5, 0.5] and adds 0.5 where needed, which we fold in) and a semantic parameter ``theta`` to
images in [0,1]. Parameter units follow the reference code:

- ``hue``: HSV hue shift in *sector units* (1 = 60 degrees); SP-layer exact for |theta| <= 3.
- ``saturation``: HSL saturation shift, s' = clip(s + theta, 0, 1).
- ``lightness``: HSL lightness shift, l' = clip(l + theta, 0, 1).
- ``brightness``: x' = clip(x + theta, 0, 1)            (reference ``bandc_img`` with contrast 0).
- ``contrast``: x' = clip((1 + theta)(x - 1/2) + 1/2, 0, 1)  (contrast about mid-grey, as in the
  reference, whose pixel 0 is mid-grey).
- ``rotation``: rotation by theta *degrees* about ((H-1)//2, (W-1)//2) with the reference's
  interpolation weights max(0, 1 - euclidean distance), normalised (not bilinear), border pixels
  replicated. No SP encoding: the verifier uses per-pixel boxes (:func:`rotation_boxes`).

Their verifiable encodings (SP-layers, rotation boxes) are in
:mod:`robrep.certify.semantic_encodings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._registry import Registry
from ..errors import InputError

__all__ = [
    "SEMANTIC_TRANSFORMS",
    "SemanticTransform",
    "apply_transform",
    "brightness",
    "brightness_contrast",
    "check_transform_input",
    "contrast",
    "gather_pixels",
    "hue",
    "lightness",
    "list_transforms",
    "rotation",
    "safe_div",
    "saturation",
]


def check_transform_input(x: torch.Tensor, channels: int | None = None) -> None:
    """Refuse anything but (N, C, H, W) images (with ``channels`` channels when given)."""
    if x.dim() != 4:
        raise InputError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise InputError(
            f"this transform needs {channels}-channel (RGB) images, got {x.shape[1]} channel(s); "
            "use brightness, contrast or rotation for grayscale data"
        )


def _theta(theta: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """theta as a (N, 1, 1, 1) tensor on x's device (a float applies to every image)."""
    t = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise InputError(f"theta must be a number or a ({x.shape[0]},) tensor, got shape {tuple(t.shape)}")
    return t.view(-1, 1, 1, 1)


def _hsl(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(max, min, lightness l, chroma factor f(l) = 1 - |2l - 1|), each (N, 1, H, W)."""
    mx = x.max(dim=1, keepdim=True).values
    mn = x.min(dim=1, keepdim=True).values
    lum = (mx + mn) / 2
    f = 1 - (2 * lum - 1).abs()
    return mx, mn, lum, f


def safe_div(a: torch.Tensor, b: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """a / b where ``zero`` is False, 0 where it is True (no NaN in values or gradients)."""
    return torch.where(zero, torch.zeros_like(a), a / torch.where(zero, torch.ones_like(b), b))


def hue(x: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """HSV hue rotation by ``theta`` sectors (Semantify-NN ``hue_img``; 1 sector = 60 degrees).

    Chroma C = max - min and m = min are kept; the hue h in [0, 6) (argmax rule, first maximal
    channel on ties, h = 0 for grey pixels) becomes (h + theta) mod 6.

    Args:
        x: (N, 3, H, W) RGB images in [0, 1].
        theta: a number or a (N,) tensor (differentiable).

    Returns:
        (N, 3, H, W) images in [0, 1].
    """
    check_transform_input(x, 3)
    t = _theta(theta, x)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    mx, mn, _, _ = _hsl(x)
    c = mx - mn
    grey = c == 0
    arg = x.argmax(dim=1, keepdim=True)
    hr = torch.remainder(safe_div(g - b, c, grey), 6.0)
    hg = safe_div(b - r, c, grey) + 2
    hb = safe_div(r - g, c, grey) + 4
    h = torch.where(arg == 0, hr, torch.where(arg == 1, hg, hb))
    h = torch.where(grey, torch.zeros_like(h), h)
    hn = torch.remainder(h + t, 6.0)
    k = 1 - (torch.remainder(hn, 2.0) - 1).abs()
    sector = torch.floor(hn).clamp(0, 5)
    big, mid, zero = c + mn, c * k + mn, mn.expand_as(hn)
    table = [  # (R, G, B) per sector, as in the reference
        (big, mid, zero), (mid, big, zero), (zero, big, mid),
        (zero, mid, big), (mid, zero, big), (big, zero, mid),
    ]
    out = []
    for ch in range(3):
        v = table[5][ch]
        for s in range(4, -1, -1):
            v = torch.where(sector == s, table[s][ch], v)
        out.append(v)
    return torch.cat(out, dim=1)


def saturation(x: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """HSL saturation shift (Semantify-NN ``saturate_img``): s' = clip(s + theta, 0, 1).

    s = (max - min) / f(l); each channel c' = l + (c - l) s'/s; pixels with s = 0 are unchanged.

    Args:
        x: (N, 3, H, W) RGB images in [0, 1].
        theta: a number or a (N,) tensor.

    Returns:
        (N, 3, H, W) images in [0, 1].
    """
    check_transform_input(x, 3)
    t = _theta(theta, x)
    mx, mn, lum, f = _hsl(x)
    s = safe_div(mx - mn, f, f == 0)
    sn = (s + t).clamp(0, 1)
    gray = s == 0
    return torch.where(gray, x, lum + (x - lum) * safe_div(sn, s, gray))


def lightness(x: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """HSL lightness shift (Semantify-NN ``lighten_img``): l' = clip(l + theta, 0, 1).

    c' = l' + (c - l) f(l')/f(l), or c' = c + (l' - l) where f(l) = 0 (black or white pixels).

    Args:
        x: (N, 3, H, W) RGB images in [0, 1].
        theta: a number or a (N,) tensor.

    Returns:
        (N, 3, H, W) images in [0, 1].
    """
    check_transform_input(x, 3)
    t = _theta(theta, x)
    _, _, lum, f = _hsl(x)
    ln = (lum + t).clamp(0, 1)
    fn = 1 - (2 * ln - 1).abs()
    flat = f == 0
    return torch.where(flat, x + ln - lum, ln + (x - lum) * safe_div(fn, f, flat))


def brightness_contrast(x: torch.Tensor, b: float | torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Brightness/contrast (Semantify-NN ``bandc_img``): x' = clip((1 + c)(x - 1/2) + 1/2 + b, 0, 1).

    Args:
        x: (N, C, H, W) images in [0, 1] (any number of channels).
        b: brightness shift (pixel units), number or (N,) tensor.
        c: contrast change (the slope is 1 + c), number or (N,) tensor.

    Returns:
        (N, C, H, W) images in [0, 1].
    """
    check_transform_input(x)
    return ((1 + _theta(c, x)) * (x - 0.5) + 0.5 + _theta(b, x)).clamp(0, 1)


def brightness(x: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """Brightness shift with contrast fixed at 0: ``brightness_contrast(x, theta, 0)``."""
    return brightness_contrast(x, theta, 0.0)


def contrast(x: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """Contrast change with brightness fixed at 0: ``brightness_contrast(x, 0, theta)``."""
    return brightness_contrast(x, 0.0, theta)


def _rotation_source(h: int, w: int, theta_rad: torch.Tensor, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinates (N, H, W) that output pixel (r, c) samples under rotation by theta."""
    cr, cc = (h - 1) // 2, (w - 1) // 2
    rr = torch.arange(h, device=device, dtype=dtype).view(1, h, 1) - cr
    cc_ = torch.arange(w, device=device, dtype=dtype).view(1, 1, w) - cc
    t = theta_rad.view(-1, 1, 1)
    cos, sin = torch.cos(t), torch.sin(t)
    return cr + rr * cos - cc_ * sin, cc + rr * sin + cc_ * cos


def gather_pixels(x: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """x[n, :, clamp(i), clamp(j)] for integer index maps i, j of shape (N, ...) -> (N, C, ...)."""
    n, ch, h, w = x.shape
    ii = i.long().clamp(0, h - 1)
    jj = j.long().clamp(0, w - 1)
    flat = (ii * w + jj).view(n, 1, -1).expand(n, ch, -1)
    return x.reshape(n, ch, h * w).gather(2, flat).view(n, ch, *i.shape[1:])


def rotation(x: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` degrees with Semantify-NN's interpolation (``rotate_img``).

    Output pixel (r, c) inverse-maps to the source point p = centre + R(theta)(r - cr, c - cc),
    centre = ((H-1)//2, (W-1)//2), and takes sum_g w_g x[g] / sum_g w_g over grid points g with
    w_g = max(0, 1 - |g - p|_2) (not bilinear); indices outside the image are clamped to the
    border. (The reference clamps the column index with the row count; identical for square
    images.)

    Args:
        x: (N, C, H, W) images in [0, 1].
        theta: degrees, a number or a (N,) tensor (differentiable).

    Returns:
        (N, C, H, W) images in [0, 1].
    """
    check_transform_input(x)
    n, _, h, w = x.shape
    t = _theta(theta, x).view(-1) * (math.pi / 180.0)
    sr, sc = _rotation_source(h, w, t, x.device, x.dtype)
    i0, j0 = torch.floor(sr), torch.floor(sc)
    num = torch.zeros_like(x)
    den = torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)
    for di in (0, 1):
        for dj in (0, 1):
            gi, gj = i0 + di, j0 + dj
            wt = (1 - torch.sqrt((gi - sr) ** 2 + (gj - sc) ** 2 + 1e-30)).clamp(min=0).unsqueeze(1)
            num = num + wt * gather_pixels(x, gi, gj)
            den = den + wt
    return num / den


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class SemanticTransform:
    """A named one-parameter semantic perturbation.

    Attributes:
        name: registry name.
        fn: ``fn(x (N,C,H,W) in [0,1], theta number or (N,)) -> (N,C,H,W) in [0,1]``.
        channels: required channel count (3 for colour transforms) or None for any.
        unit: unit of theta.
        max_eps: largest |theta| the SP encoding / verifier supports.
        encoding: ``"sp"`` (exact SP-layers, explicit splitting) or ``"box"`` (per-pixel boxes,
            implicit splitting).
    """

    name: str
    fn: Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor]
    channels: int | None
    unit: str
    max_eps: float
    encoding: str

    def __call__(self, x: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
        return self.fn(x, theta)


SEMANTIC_TRANSFORMS: Registry[SemanticTransform] = Registry("semantic transform")
for _t in (
    SemanticTransform("hue", hue, 3, "hue sectors (1 = 60 deg)", 3.0, "sp"),
    SemanticTransform("saturation", saturation, 3, "saturation shift", 1.0, "sp"),
    SemanticTransform("lightness", lightness, 3, "lightness shift", 1.0, "sp"),
    SemanticTransform("brightness", brightness, None, "pixel units ([0,1] range)", 1.0, "sp"),
    SemanticTransform("contrast", contrast, None, "slope change (x' = (1+theta)(x-1/2)+1/2)", 1.0, "sp"),
    SemanticTransform("rotation", rotation, None, "degrees", 180.0, "box"),
):
    SEMANTIC_TRANSFORMS.add(_t.name, _t, help=f"{_t.name} ({_t.unit})")


def list_transforms() -> list[str]:
    return SEMANTIC_TRANSFORMS.names()


def apply_transform(name: str, x: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """Apply the registered transform ``name`` (see :data:`SEMANTIC_TRANSFORMS`)."""
    return SEMANTIC_TRANSFORMS.get(name)(x, theta)
