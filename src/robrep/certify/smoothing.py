"""Randomized smoothing: PREDICT and CERTIFY (Cohen, Rosenfeld & Kolter, ICML 2019).

The smoothed classifier of a base classifier ``f`` is
``g(x) = argmax_c P_{delta ~ N(0, sigma^2 I)}(f(x + delta) = c)``. If a lower confidence bound
``p_A`` of the top-class probability is >= 1/2, ``g`` is constant on the L2 ball of radius
``R = sigma * Phi^{-1}(p_A)`` around ``x`` (Cohen et al., Theorem 1 with ``p_B = 1 - p_A``).

Noise is added in [0,1] pixel space before the model's normalization and is *not* clipped
(as in Cohen et al.'s code). Sampling is batched and seeded: each image gets its own
``torch.Generator`` derived from ``(seed, index)``, so results do not depend on which other
images are certified, or in which order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm
from torch import nn

from .._modes import eval_mode
from ..errors import InputError

__all__ = [
    "ABSTAIN",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "cohen_radius",
    "image_generator",
    "sample_counts",
    "predict",
    "predict_from_counts",
    "certify_from_counts",
    "certify",
    "SmoothPrediction",
    "Certificate",
    "certified_accuracy",
    "certified_accuracy_curve",
    "check_alpha",
    "check_n_alpha",
    "check_image",
    "noise_batches",
]

ABSTAIN = -1
"""Class index returned when the smoothed classifier abstains (Cohen et al.'s convention)."""


# --------------------------------------------------------------------------- statistics
def check_alpha(alpha: float) -> None:
    """Refuse a failure probability outside (0, 1)."""
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha}; the usual value is 0.001")


def check_n_alpha(n: int, alpha: float) -> None:
    """Refuse an ``n`` so small that even n_A = n gives p_lower = alpha**(1/n) < 1/2 (always abstains)."""
    check_alpha(alpha)
    if n >= 1 and alpha ** (1.0 / n) < 0.5:
        need = math.ceil(math.log(alpha) / math.log(0.5) - 1e-9)
        raise InputError(f"n={n} is too small for alpha={alpha:g}: even if all n samples agreed the lower bound would be "
                         f"{alpha ** (1.0 / n):.3f} < 0.5, so every image abstains; use n >= {need} (typically 100000)")


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound of a binomial proportion.

    It is the alpha-quantile of ``Beta(k, n - k + 1)`` (0 when ``k = 0``), i.e.
    ``statsmodels.proportion_confint(k, n, alpha=2*alpha, method="beta")[0]`` as used by
    Cohen et al.'s CERTIFY. Example: ``k = n = 1e5, alpha = 1e-3 -> 0.99993092``.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials, ``n >= 1``.
        alpha: failure probability in (0, 1).

    Returns:
        The bound in [0, 1).
    """
    check_alpha(alpha)
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise InputError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if k == 0:
        return 0.0
    return float(beta_dist.ppf(alpha, k, n - k + 1))


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound: the (1 - alpha)-quantile of
    ``Beta(k + 1, n - k)`` (1 when ``k = n``). Same arguments as :func:`clopper_pearson_lower`."""
    check_alpha(alpha)
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise InputError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if k == n:
        return 1.0
    return float(beta_dist.ppf(1.0 - alpha, k + 1, n - k))


def cohen_radius(p_lower: float, sigma: float) -> float:
    """Cohen et al.'s certified L2 radius ``sigma * Phi^{-1}(p_lower)`` (0 if ``p_lower <= 1/2``).

    Args:
        p_lower: lower confidence bound of the top-class probability, in [0, 1].
        sigma: noise standard deviation in [0,1] pixel units (> 0).
    """
    if sigma <= 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    if p_lower <= 0.5:
        return 0.0
    return float(sigma * norm.ppf(p_lower))


# --------------------------------------------------------------------------- sampling
def image_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, index)`` (independent streams per image)."""
    state = int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)
    g = torch.Generator(device=device)
    g.manual_seed(state)
    return g


def check_image(x: torch.Tensor, sigma: float, n: int, batch_size: int) -> None:
    """Check the arguments of a sampler: one finite float image (C, H, W), ``sigma > 0``,
    ``n >= 1`` and ``batch_size >= 1`` (else :class:`~robrep.errors.InputError`)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
        raise InputError(f"x must be one float image of shape (C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}; drop the batch dimension")
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or inf")
    if sigma <= 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    if n < 1 or batch_size < 1:
        raise InputError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")


def noise_batches(x: torch.Tensor, sigma: float, n: int, batch_size: int,
                  generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x + noise, noise)`` batches, ``noise = sigma * z`` with ``z ~ N(0, I)``, ``n`` in all."""
    left = n
    gdev = generator.device if generator is not None else x.device
    while left > 0:
        b = min(batch_size, left)
        left -= b
        noise = torch.randn((b, *x.shape), generator=generator, device=gdev, dtype=x.dtype).to(x.device) * sigma
        yield x.unsqueeze(0) + noise, noise


@torch.no_grad()
def sample_counts(model: nn.Module, x: torch.Tensor, sigma: float, n: int, *, num_classes: int | None = None,
                  batch_size: int = 1000, generator: torch.Generator | None = None) -> torch.Tensor:
    """Class counts of the base classifier under Gaussian noise, ``#{i : f(x + sigma z_i) = c}``.

    Args:
        model: base classifier mapping (B, C, H, W) [0,1]-images to (B, K) logits.
        x: one image, (C, H, W), pixels in [0,1].
        sigma: noise standard deviation (pixel units).
        n: number of noise samples.
        num_classes: K (default: inferred from the first batch of logits).
        batch_size: noisy images per forward pass.
        generator: source of the noise (its device is used for sampling).

    Returns:
        (K,) int64 counts summing to ``n``, on ``x.device``.
    """
    check_image(x, sigma, n, batch_size)
    counts: torch.Tensor | None = None
    with eval_mode(model):
        for xb, _ in noise_batches(x, sigma, n, batch_size, generator):
            logits = model(xb)
            k = num_classes or logits.shape[1]
            c = torch.bincount(logits.argmax(1), minlength=k)
            counts = c if counts is None else counts + c
    assert counts is not None
    return counts


@dataclass(frozen=True)
class SmoothPrediction:
    """Result of PREDICT.

    Attributes:
        prediction: top class, or ``ABSTAIN`` (-1).
        counts: per-class counts of the ``n`` noise samples.
        pvalue: two-sided binomial test p-value of ``n_A`` out of ``n_A + n_B`` at 1/2.
    """

    prediction: int
    counts: tuple[int, ...]
    pvalue: float


def predict_from_counts(counts: Sequence[int] | torch.Tensor, alpha: float) -> SmoothPrediction:
    """PREDICT's decision from class counts (Cohen et al., Hung & Fithian's top-2 test).

    Abstains unless the two-sided binomial test of ``n_A`` successes in ``n_A + n_B`` trials at
    p = 1/2 has p-value <= alpha (e.g. 510 vs 490 -> p = 0.548, abstain).
    """
    check_alpha(alpha)
    c = [int(v) for v in (counts.tolist() if isinstance(counts, torch.Tensor) else counts)]
    if len(c) < 2 or sum(c) < 1:
        raise InputError("counts must have >= 2 classes and at least one sample")
    order = sorted(range(len(c)), key=lambda i: (-c[i], i))
    na, nb = c[order[0]], c[order[1]]
    pval = float(binomtest(na, na + nb, 0.5).pvalue)
    return SmoothPrediction(order[0] if pval <= alpha else ABSTAIN, tuple(c), pval)


def predict(model: nn.Module, x: torch.Tensor, sigma: float, n: int, alpha: float = 1e-3, *,
            batch_size: int = 1000, generator: torch.Generator | None = None) -> SmoothPrediction:
    """PREDICT (Cohen et al. 2019): the smoothed class at ``x``, or ABSTAIN.

    With probability >= 1 - alpha the returned class (when not ABSTAIN) equals ``g(x)``.

    Args:
        model: base classifier on [0,1] images.
        x: (C, H, W) image in [0,1].
        sigma: noise level (pixel units).
        n: noise samples.
        alpha: failure probability.
        batch_size: noisy images per forward pass.
        generator: noise source.
    """
    counts = sample_counts(model, x, sigma, n, batch_size=batch_size, generator=generator)
    return predict_from_counts(counts, alpha)


@dataclass(frozen=True)
class Certificate:
    """Result of CERTIFY for one image.

    Attributes:
        prediction: certified class, or ``ABSTAIN`` (-1) when ``p_lower < 1/2``.
        radius: certified L2 radius in pixel units (0 when abstaining).
        p_lower: one-sided (1 - alpha) Clopper-Pearson lower bound of ``p_A``.
        count: ``n_A``, samples (of the ``n`` estimation samples) classified as the selected class.
        n: estimation samples; n0: selection samples.
        selected: the class chosen from the ``n0`` selection samples.
        sigma, alpha: settings.
    """

    prediction: int
    radius: float
    p_lower: float
    count: int
    n: int
    n0: int
    selected: int
    sigma: float
    alpha: float


def certify_from_counts(selected: int, count: int, n: int, n0: int, sigma: float, alpha: float) -> Certificate:
    """CERTIFY's decision from ``n_A`` of ``n`` (see :func:`certify`)."""
    p = clopper_pearson_lower(count, n, alpha)
    if p < 0.5:
        return Certificate(ABSTAIN, 0.0, p, int(count), n, n0, selected, sigma, alpha)
    return Certificate(selected, cohen_radius(p, sigma), p, int(count), n, n0, selected, sigma, alpha)


def certify(model: nn.Module, x: torch.Tensor, sigma: float, n0: int = 100, n: int = 100_000, alpha: float = 1e-3, *,
            batch_size: int = 1000, generator: torch.Generator | None = None) -> Certificate:
    """CERTIFY (Cohen et al. 2019, Algorithm "certify").

    1. ``n0`` noise samples select ``c_A`` (argmax count);
    2. ``n`` fresh samples count ``n_A = #{f(x + delta) = c_A}``;
    3. ``p_lower`` = one-sided (1 - alpha) Clopper-Pearson lower bound of ``n_A / n``;
    4. abstain if ``p_lower < 1/2``, else return ``(c_A, sigma * Phi^{-1}(p_lower))``.

    With probability >= 1 - alpha the class is ``g(x)`` and ``g`` is constant on the L2 ball of
    that radius. With ``n`` samples the radius can never exceed
    ``sigma * Phi^{-1}(alpha^(1/n))`` (3.8115 sigma for n = 1e5, alpha = 1e-3).

    Args:
        model: base classifier on [0,1] images, (B, C, H, W) -> (B, K).
        x: one image (C, H, W) in [0,1].
        sigma: noise level (pixel units).
        n0: selection samples; n: estimation samples.
        alpha: failure probability.
        batch_size: noisy images per forward pass.
        generator: noise source (seeded for reproducibility).
    """
    check_n_alpha(n, alpha)
    sel = sample_counts(model, x, sigma, n0, batch_size=batch_size, generator=generator)
    c_a = int(sel.argmax())
    counts = sample_counts(model, x, sigma, n, num_classes=sel.numel(), batch_size=batch_size, generator=generator)
    return certify_from_counts(c_a, int(counts[c_a]), n, n0, sigma, alpha)


# --------------------------------------------------------------------------- aggregation
def certified_accuracy(radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, r: float) -> float:
    """Fraction of images certified correct with radius >= r.

    An image counts at radius r when it is correct (certified class == label) and its radius is
    >= r; at r = 0 this is the smoothed classifier's clean accuracy (abstentions count as wrong).
    """
    rad, cor = np.asarray(radii, dtype=float), np.asarray(correct, dtype=bool)
    if rad.shape != cor.shape or rad.size == 0:
        raise InputError(f"radii and correct must be non-empty and of equal length, got {rad.shape} and {cor.shape}")
    return float(np.mean(cor & (rad >= r)))


def certified_accuracy_curve(radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                             grid: Sequence[float] | np.ndarray) -> list[list[float]]:
    """``[[r, certified_accuracy(r)], ...]`` over ``grid`` (the format of the HTML report's curves)."""
    return [[float(r), certified_accuracy(radii, correct, float(r))] for r in grid]
