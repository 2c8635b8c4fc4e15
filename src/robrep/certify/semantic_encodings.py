"""Verifiable encodings of semantic perturbations (Semantify-NN, Mohapatra et al., CVPR 2020).

The *SP-layers* re-express a transform of one fixed image as a small ReLU network of theta:
``ThetaToPixels -> ReLU -> PixelMix`` (:func:`sp_layers`), so that any bound propagation method
can take the low-dimensional theta-box as its input (:mod:`robrep.certify.bound_propagation`).
Rotation has no SP encoding: :func:`rotation_boxes` gives sound per-pixel boxes over an angle
interval (implicit splitting).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError
from .semantic import (
    SEMANTIC_TRANSFORMS,
    check_transform_input,
    gather_pixels,
    safe_div,
)

__all__ = ["PixelMix", "ThetaToPixels", "hue_sector", "rotation_boxes", "sp_layers", "sp_network"]


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
    check_transform_input(x, tr.channels)
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
        s = safe_div(mx - mn, f, f == 0)
        gray = s == 0
        g = safe_div(x - lum, s.expand_as(x), gray.expand_as(x))
        w1 = torch.ones(2, 1, h, w, dtype=dt, device=dev)
        b1 = torch.stack([s, s - 1])
        w2 = torch.stack([g, -g], dim=1)
        b2 = torch.where(gray, x, lum.expand_as(x))
    elif name == "lightness":
        mx, mn = x.max(0).values, x.min(0).values
        lum = (mx + mn) / 2
        f = 1 - (2 * lum - 1).abs()
        k = safe_div(x - lum, f.expand_as(x), (f == 0).expand_as(x))
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
    hr = torch.remainder(safe_div(g - b, c, grey), 6.0)
    hg = safe_div(b - r, c, grey) + 2
    hb = safe_div(r - g, c, grey) + 4
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
                    vals.append(gather_pixels(img64.expand(k, -1, -1, -1), gidx, gj.expand(k, h, w)))  # (K, C, H, W)
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
