"""Semantic perturbations and their exact SP-layer encodings (Semantify-NN).

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

The *SP-layers* re-express a transform of one fixed image as a small ReLU network of theta:
``ThetaToPixels -> ReLU -> PixelMix`` (:func:`sp_layers`), so that any bound propagation method
can take the low-dimensional theta-box as its input (:mod:`robrep.certify.bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._registry import Registry
from ..errors import InputError

__all__ = [
    "SEMANTIC_TRANSFORMS",
    "SemanticTransform",
    "ThetaToPixels",
    "PixelMix",
    "apply_transform",
    "brightness",
    "brightness_contrast",
    "contrast",
    "hue",
    "lightness",
    "list_transforms",
    "rotation",
    "rotation_boxes",
    "saturation",
    "sp_layers",
    "sp_network",
]


def _check(x: torch.Tensor, channels: int | None = None) -> None:
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


def _safe_div(a: torch.Tensor, b: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
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
    _check(x, 3)
    t = _theta(theta, x)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    mx, mn, _, _ = _hsl(x)
    c = mx - mn
    grey = c == 0
    arg = x.argmax(dim=1, keepdim=True)
    hr = torch.remainder(_safe_div(g - b, c, grey), 6.0)
    hg = _safe_div(b - r, c, grey) + 2
    hb = _safe_div(r - g, c, grey) + 4
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
    _check(x, 3)
    t = _theta(theta, x)
    mx, mn, lum, f = _hsl(x)
    s = _safe_div(mx - mn, f, f == 0)
    sn = (s + t).clamp(0, 1)
    gray = s == 0
    return torch.where(gray, x, lum + (x - lum) * _safe_div(sn, s, gray))


def lightness(x: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """HSL lightness shift (Semantify-NN ``lighten_img``): l' = clip(l + theta, 0, 1).

    c' = l' + (c - l) f(l')/f(l), or c' = c + (l' - l) where f(l) = 0 (black or white pixels).

    Args:
        x: (N, 3, H, W) RGB images in [0, 1].
        theta: a number or a (N,) tensor.

    Returns:
        (N, 3, H, W) images in [0, 1].
    """
    _check(x, 3)
    t = _theta(theta, x)
    _, _, lum, f = _hsl(x)
    ln = (lum + t).clamp(0, 1)
    fn = 1 - (2 * ln - 1).abs()
    flat = f == 0
    return torch.where(flat, x + ln - lum, ln + (x - lum) * _safe_div(fn, f, flat))


def brightness_contrast(x: torch.Tensor, b: float | torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Brightness/contrast (Semantify-NN ``bandc_img``): x' = clip((1 + c)(x - 1/2) + 1/2 + b, 0, 1).

    Args:
        x: (N, C, H, W) images in [0, 1] (any number of channels).
        b: brightness shift (pixel units), number or (N,) tensor.
        c: contrast change (the slope is 1 + c), number or (N,) tensor.

    Returns:
        (N, C, H, W) images in [0, 1].
    """
    _check(x)
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


def _gather(x: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
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
    _check(x)
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
            num = num + wt * _gather(x, gi, gj)
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


# ---------------------------------------------------------------------------------------------
# SP-layers


class ThetaToPixels(nn.Module):
    """First SP-layer: theta (N, d) -> (N, J, H, W), ``y[n,j] = sum_k W[j,k] theta[n,k] + b[j]``.

    Weights are per pixel: ``weight`` (J, d, H, W), ``bias`` (J, H, W) (buffers, no training).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.einsum("jdhw,nd->njhw", self.weight, theta) + self.bias


class PixelMix(nn.Module):
    """Second SP-layer: (N, J, H, W) -> (N, C, H, W), ``y[n,c] = sum_j W[c,j] rho[n,j] + b[c]`` per pixel.

    ``weight`` (C, J, H, W), ``bias`` (C, H, W) (buffers).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, rho: torch.Tensor) -> torch.Tensor:
        return torch.einsum("cjhw,njhw->nchw", self.weight, rho) + self.bias


# hue: rows R, G, B over rho_0..rho_12 (docs/methods/semantic.md) and the constant term (times C)
_HUE_K = torch.zeros(3, 13)
for _i in (1, 5, 7, 11):
    _HUE_K[0, _i] = 1.0
for _i in (2, 4, 8, 10):
    _HUE_K[0, _i] = -1.0
for _i in (1, 3, 7, 9):
    _HUE_K[1, _i] = 1.0
for _i in (0, 4, 6, 10):
    _HUE_K[1, _i] = -1.0
for _i in (3, 5, 9, 11):
    _HUE_K[2, _i] = 1.0
for _i in (2, 6, 8, 12):
    _HUE_K[2, _i] = -1.0
_HUE_K0 = torch.tensor([0.0, 1.0, 1.0])


def sp_layers(name: str, image: torch.Tensor) -> tuple[ThetaToPixels, nn.ReLU, PixelMix]:
    """The SP-layers of transform ``name`` for one image: theta (N, 1) -> perturbed image.

    ``PixelMix(ReLU(ThetaToPixels(theta)))`` equals ``apply_transform(name, image, theta)``
    (Semantify-NN Sec. 3; official ``threat_models/*.py``):

    - hue: rho_i = ReLU(theta + h - i + 3), i = 0..12, then R, G, B = m + C * (+-rho sums)
      (exact for |theta| <= 3);
    - saturation: s' = ReLU(s + theta) - ReLU(s + theta - 1), c' = l + (c - l) s'/s (both signs
      in one network; exact for all theta);
    - lightness: with u = l + theta, l' = ReLU(u) - ReLU(u - 1) and
      f(l') = ReLU(2u) - 2 ReLU(2u - 1) + ReLU(2u - 2), c' = l' + (c - l) f(l')/f(l) (5 ReLUs,
      as in the reference CNN encoding; exact for all theta);
    - brightness / contrast: c' = ReLU(u) - ReLU(u - 1) with u affine in theta.

    Args:
        name: ``hue``, ``saturation``, ``lightness``, ``brightness`` or ``contrast``.
        image: (C, H, W) or (1, C, H, W) in [0, 1].

    Returns:
        The three layers (buffers on the image's device and dtype).
    """
    tr = SEMANTIC_TRANSFORMS.get(name)
    if tr.encoding != "sp":
        raise InputError(f"transform {name!r} has no SP encoding; verify it with per-pixel boxes (rotation_boxes)")
    x = image.unsqueeze(0) if image.dim() == 3 else image
    _check(x, tr.channels)
    if x.shape[0] != 1:
        raise InputError("sp_layers takes a single image (C, H, W)")
    x = x[0]
    ch, h, w = x.shape
    dt, dev = x.dtype, x.device
    if name in ("brightness", "contrast"):
        slope = torch.ones_like(x) if name == "brightness" else x - 0.5
        w1 = torch.stack([slope, slope], dim=1).reshape(2 * ch, 1, h, w)  # hidden (c, k) -> 2c + k
        b1 = torch.stack([x, x - 1], dim=1).reshape(2 * ch, h, w)
        w2 = torch.zeros(ch, 2 * ch, h, w, dtype=dt, device=dev)
        for c in range(ch):
            w2[c, 2 * c] = 1.0
            w2[c, 2 * c + 1] = -1.0
        b2 = torch.zeros(ch, h, w, dtype=dt, device=dev)
    elif name == "hue":
        mx, mn = x.max(0).values, x.min(0).values
        cc = mx - mn
        hh = hue_sector(x)
        idx = torch.arange(13, dtype=dt, device=dev).view(13, 1, 1)
        w1 = torch.ones(13, 1, h, w, dtype=dt, device=dev)
        b1 = hh.unsqueeze(0) - idx + 3
        w2 = _HUE_K.to(dev, dt).view(3, 13, 1, 1) * cc
        b2 = mn + _HUE_K0.to(dev, dt).view(3, 1, 1) * cc
    elif name == "saturation":
        mx, mn = x.max(0).values, x.min(0).values
        lum = (mx + mn) / 2
        f = 1 - (2 * lum - 1).abs()
        s = _safe_div(mx - mn, f, f == 0)
        gray = s == 0
        g = _safe_div(x - lum, s.expand_as(x), gray.expand_as(x))
        w1 = torch.ones(2, 1, h, w, dtype=dt, device=dev)
        b1 = torch.stack([s, s - 1])
        w2 = torch.stack([g, -g], dim=1)
        b2 = torch.where(gray, x, lum.expand_as(x))
    elif name == "lightness":
        mx, mn = x.max(0).values, x.min(0).values
        lum = (mx + mn) / 2
        f = 1 - (2 * lum - 1).abs()
        k = _safe_div(x - lum, f.expand_as(x), (f == 0).expand_as(x))
        w1 = torch.tensor([1.0, 1.0, 2.0, 2.0, 2.0], dtype=dt, device=dev).view(5, 1, 1, 1).expand(5, 1, h, w).clone()
        b1 = torch.stack([lum, lum - 1, 2 * lum, 2 * lum - 1, 2 * lum - 2])
        one = torch.ones_like(k)
        w2 = torch.stack([one, -one, k, -2 * k, k], dim=1)
        b2 = torch.zeros_like(x)
    else:  # pragma: no cover - registry and encodings are kept in sync
        raise InputError(f"no SP encoding for {name!r}")
    return ThetaToPixels(w1, b1), nn.ReLU(), PixelMix(w2, b2)


def hue_sector(x: torch.Tensor) -> torch.Tensor:
    """HSV hue in sectors [0, 6) of a (3, H, W) image (0 for grey pixels), as in the reference."""
    r, g, b = x[0], x[1], x[2]
    mx, mn = x.max(0).values, x.min(0).values
    c = mx - mn
    grey = c == 0
    arg = x.argmax(0)
    hr = torch.remainder(_safe_div(g - b, c, grey), 6.0)
    hg = _safe_div(b - r, c, grey) + 2
    hb = _safe_div(r - g, c, grey) + 4
    hh = torch.where(arg == 0, hr, torch.where(arg == 1, hg, hb))
    return torch.where(grey, torch.zeros_like(hh), hh)


def sp_network(name: str, image: torch.Tensor) -> nn.Sequential:
    """``nn.Sequential(*sp_layers(name, image))``: theta (N, 1) -> (N, C, H, W) perturbed images."""
    return nn.Sequential(*sp_layers(name, image))


# ---------------------------------------------------------------------------------------------
# Rotation: sound per-pixel boxes over an angle interval


def _angle_range_contains(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """Whether [a, b] (radians, a <= b) contains c + 2 pi k for some integer k."""
    two_pi = 2 * math.pi
    return torch.ceil((a - c) / two_pi) <= torch.floor((b - c) / two_pi)


def rotation_boxes(image: torch.Tensor, theta_lo: float, theta_hi: float, subdiv: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel boxes containing every rotation of ``image`` by an angle in each of ``subdiv`` pieces.

    Semantify-NN's rotation verification (official ``utils/get_epsilon.py``): [theta_lo, theta_hi]
    is cut into ``subdiv`` equal pieces (implicit splitting); for each piece and output pixel, the
    source point sweeps an arc, whose bounding box is split at integer cell boundaries; on each
    cell the four interpolation weights lie in [max(0, 1 - d_max), max(0, 1 - d_min)] and the
    interpolated value sum w v / sum w is bounded over that weight box by enumerating its 16
    vertices (a linear-fractional function attains its extremes at vertices). This is sound for
    any image; it is our own derivation of a bound in the spirit of the reference (which bounds
    the ratio with max/min weight sums).

    Args:
        image: (C, H, W) in [0, 1].
        theta_lo, theta_hi: angle interval in degrees (theta_lo <= theta_hi).
        subdiv: number of sub-intervals K.

    Returns:
        (lower, upper), each (K, C, H, W) in [0, 1]: ``rotation(image, t)`` lies in box k for every
        t in sub-interval k.
    """
    if image.dim() != 3:
        raise InputError(f"rotation_boxes takes one (C, H, W) image, got shape {tuple(image.shape)}")
    if not theta_lo <= theta_hi:
        raise InputError(f"need theta_lo <= theta_hi, got {theta_lo} > {theta_hi}")
    if subdiv < 1:
        raise InputError(f"subdiv must be >= 1, got {subdiv}")
    ch, h, w = image.shape
    dt, dev = image.dtype, image.device
    edges = torch.linspace(theta_lo, theta_hi, subdiv + 1, dtype=torch.float64, device=dev) * (math.pi / 180.0)
    a, b = edges[:-1].view(-1, 1, 1), edges[1:].view(-1, 1, 1)
    cr, cc = (h - 1) // 2, (w - 1) // 2
    x = (torch.arange(h, dtype=torch.float64, device=dev) - cr).view(1, h, 1).expand(1, h, w)
    y = (torch.arange(w, dtype=torch.float64, device=dev) - cc).view(1, 1, w).expand(1, h, w)
    rad = torch.sqrt(x**2 + y**2)
    phi = torch.atan2(y, x)
    lo_a, hi_a = phi + a, phi + b  # (K, H, W)
    cos_end = torch.stack([torch.cos(lo_a), torch.cos(hi_a)])
    sin_end = torch.stack([torch.sin(lo_a), torch.sin(hi_a)])
    cmax = torch.where(_angle_range_contains(lo_a, hi_a, 0.0), torch.ones_like(lo_a), cos_end.max(0).values)
    cmin = torch.where(_angle_range_contains(lo_a, hi_a, math.pi), -torch.ones_like(lo_a), cos_end.min(0).values)
    smax = torch.where(_angle_range_contains(lo_a, hi_a, math.pi / 2), torch.ones_like(lo_a), sin_end.max(0).values)
    smin = torch.where(_angle_range_contains(lo_a, hi_a, -math.pi / 2), -torch.ones_like(lo_a), sin_end.min(0).values)
    pad = 1e-9  # guard against rounding in the trigonometry
    xl, xh = cr + rad * cmin - pad, cr + rad * cmax + pad
    yl, yh = cc + rad * smin - pad, cc + rad * smax + pad
    fx0, fy0 = torch.floor(xl), torch.floor(yl)
    nx = int((torch.floor(xh) - fx0).max().item()) + 1
    ny = int((torch.floor(yh) - fy0).max().item()) + 1
    img64 = image.to(torch.float64).unsqueeze(0)  # (1, C, H, W)
    k = a.shape[0]
    lower = torch.full((k, ch, h, w), math.inf, dtype=torch.float64, device=dev)
    upper = torch.full((k, ch, h, w), -math.inf, dtype=torch.float64, device=dev)
    # the 16 vertices of a 4-dim weight box
    verts = torch.tensor([[(v >> q) & 1 for q in range(4)] for v in range(16)], dtype=torch.bool, device=dev)
    for ox in range(nx):
        for oy in range(ny):
            ca, cb = fx0 + ox, fy0 + oy  # cell [ca, ca+1] x [cb, cb+1]
            valid = (ca <= xh) & (cb <= yh)
            bx0, bx1 = torch.maximum(xl, ca), torch.minimum(xh, ca + 1)
            by0, by1 = torch.maximum(yl, cb), torch.minimum(yh, cb + 1)
            wmin, wmax, vals = [], [], []
            for di in (0, 1):
                for dj in (0, 1):
                    gi, gj = ca + di, cb + dj
                    dxn = (gi - gi.clamp(bx0, bx1)).abs()
                    dyn = (gj - gj.clamp(by0, by1)).abs()
                    dxf = torch.maximum((gi - bx0).abs(), (gi - bx1).abs())
                    dyf = torch.maximum((gj - by0).abs(), (gj - by1).abs())
                    wmax.append((1 - torch.sqrt(dxn**2 + dyn**2)).clamp(min=0))
                    wmin.append((1 - torch.sqrt(dxf**2 + dyf**2)).clamp(min=0))
                    gidx = gi.expand(k, h, w)
                    vals.append(_gather(img64.expand(k, -1, -1, -1), gidx, gj.expand(k, h, w)))  # (K, C, H, W)
            wmin_t = torch.stack(wmin)  # (4, K, H, W)
            wmax_t = torch.stack(wmax)
            v_t = torch.stack(vals)  # (4, K, C, H, W)
            wv = torch.where(verts.view(16, 4, 1, 1, 1), wmax_t.unsqueeze(0), wmin_t.unsqueeze(0))  # (16, 4, K, H, W)
            den = wv.sum(1)  # (16, K, H, W)
            num = (wv.unsqueeze(3) * v_t.unsqueeze(0)).sum(1)  # (16, K, C, H, W)
            ok = (den > 0).unsqueeze(2)
            ratio = num / torch.where(ok, den.unsqueeze(2), torch.ones_like(den.unsqueeze(2)))
            rmax = torch.where(ok, ratio, torch.full_like(ratio, -math.inf)).max(0).values
            rmin = torch.where(ok, ratio, torch.full_like(ratio, math.inf)).min(0).values
            vmask = valid.unsqueeze(1)
            upper = torch.where(vmask, torch.maximum(upper, rmax), upper)
            lower = torch.where(vmask, torch.minimum(lower, rmin), lower)
    slack = 1e-6  # float32 rounding of the transform itself
    return (lower - slack).clamp(0, 1).to(dt), (upper + slack).clamp(0, 1).to(dt)
