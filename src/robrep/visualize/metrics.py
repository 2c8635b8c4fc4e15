"""Image-fidelity metrics for inversions: SSIM (Wang et al. 2004), l2, and intervals of means.

Engstrom et al. (2019) show inversions qualitatively; docs/methods/visualization.md suggests the relative
representation error and an image-space distance. These functions make the comparison
quantitative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["ssim", "gaussian_window", "image_l2", "MeanInterval", "mean_interval"]


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(size, size) normalized Gaussian window (Wang et al. 2004: 11 x 11, sigma 1.5)."""
    if size < 1 or size % 2 == 0 or sigma <= 0:
        raise InputError(f"window size must be odd and positive and sigma > 0, got {size}, {sigma}")
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004), per image.

    ``SSIM = mean over windows of (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)
    (s_x^2 + s_y^2 + C2))`` with Gaussian-weighted local statistics (population form),
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``; windows lie fully inside the image ("valid"), and the
    mean is over windows and channels. This equals scikit-image's ``structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L)``.

    Args:
        x, y: (B, C, H, W) images with values in a range of width ``data_range``; H, W >= window.
        data_range: L (1 for [0, 1] images).
        window, sigma: Gaussian window size (odd) and width.
        k1, k2: stabilizing constants.

    Returns:
        (B,) SSIM in [-1, 1] (1 iff x == y up to rounding).
    """
    if x.shape != y.shape or x.ndim != 4:
        raise InputError(f"x and y must be (B, C, H, W) of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[2:]) < window:
        raise InputError(f"images of size {tuple(x.shape[2:])} are smaller than the {window}x{window} window")
    c = x.shape[1]
    w = gaussian_window(window, sigma).to(x.device)[None, None].repeat(c, 1, 1, 1)
    xd, yd = x.double(), y.double()

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mx, my = filt(xd), filt(yd)
    sxx = filt(xd * xd) - mx * mx
    syy = filt(yd * yd) - my * my
    sxy = filt(xd * yd) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.flatten(1).mean(1).to(x.dtype if x.is_floating_point() else torch.float64)


def image_l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) ``||x - y||_2`` over all pixels of each image."""
    if x.shape != y.shape:
        raise InputError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    return (x.double() - y.double()).flatten(1).norm(dim=1)


@dataclass(frozen=True)
class MeanInterval:
    """A mean with a two-sided confidence interval.

    Attributes:
        mean: sample mean.
        low, high: interval bounds.
        n: sample size.
        level: confidence level.
        method: ``t`` (Student t) or ``bootstrap`` (percentile).
    """

    mean: float
    low: float
    high: float
    n: int
    level: float
    method: str

    def to_dict(self) -> dict[str, float | int | str]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "level": self.level, "method": self.method}


def mean_interval(values: torch.Tensor, *, level: float = 0.95, method: str = "t", resamples: int = 10_000,
                  seed: int = 0) -> MeanInterval:
    """Confidence interval of the mean of ``values`` (1-D, n >= 2).

    ``t``: ``mean +- t_{(1+level)/2, n-1} s / sqrt(n)``; ``bootstrap``: percentile interval of
    ``resamples`` bootstrap means drawn with ``seed``.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    n = v.numel()
    if n < 2:
        raise InputError(f"need at least 2 values for an interval, got {n}")
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    m = float(v.mean())
    if method == "t":
        from scipy.stats import t as student_t

        half = float(student_t.ppf((1 + level) / 2, n - 1)) * float(v.std(unbiased=True)) / math.sqrt(n)
        return MeanInterval(m, m - half, m + half, n, level, "t")
    if method == "bootstrap":
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, n, (resamples, n), generator=g)
        means = v[idx].mean(1)
        a = (1 - level) / 2
        lo, hi = torch.quantile(means, torch.tensor([a, 1 - a], dtype=torch.float64)).tolist()
        return MeanInterval(m, lo, hi, n, level, "bootstrap")
    raise InputError(f"method must be 't' or 'bootstrap', got {method!r}")
