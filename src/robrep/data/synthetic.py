"""Synthetic data with known answers (Gaussian mixtures)."""

from __future__ import annotations

import torch

__all__ = ["gaussian_mixture"]


def gaussian_mixture(
    n: int,
    mean: torch.Tensor,
    *,
    sigma: float = 1.0,
    center: float = 0.0,
    prior: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary class-conditional Gaussian mixture ``x | y ~ N(center + (2y-1) mean, sigma^2 I)``.

    Args:
        n: number of samples.
        mean: the class mean offset, any shape (e.g. (C, H, W)).
        sigma: per-coordinate standard deviation.
        center: common centre (SynBench uses 0.5, mid-gray).
        prior: P(y = 1).
        generator: torch generator for reproducibility.

    Returns:
        x of shape (n, *mean.shape) and y in {0, 1} of shape (n,).
    """
    y = (torch.rand(n, generator=generator) < prior).long()
    noise = torch.randn((n, *mean.shape), generator=generator, dtype=mean.dtype)
    sign = (2 * y - 1).to(mean.dtype).view(n, *([1] * mean.ndim))
    return center + sign * mean + sigma * noise, y
