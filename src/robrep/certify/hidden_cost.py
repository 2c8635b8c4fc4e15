"""The hidden cost of randomized smoothing (Mohapatra, Ko, Weng, Chen, Liu, Daniel, AISTATS 2021,
arXiv 2003.01249): smoothing shrinks decision regions and creates class-wise disparity.

Closed forms (binary case: a class region ``A`` survives at ``x`` iff ``P(x + sigma z in A) > 1/2``):

* a ball of radius ``R`` in ``R^d`` vanishes entirely iff ``R / sigma < sqrt(median chi^2_d)``
  (d = 1: 0.6745; d = 3072: 55.420);
* a surviving ball shrinks to the radius ``rho`` solving
  ``F_{chi'^2(d, rho^2/sigma^2)}(R^2/sigma^2) = 1/2`` (interval half-width 1 sigma -> 0.9333 sigma);
* the orthant ``{x_1 > 0, ..., x_k > 0}`` survives where ``prod_i Phi(x_i / sigma) > 1/2``: on the
  diagonal its boundary moves to ``Phi^-1(2^(-1/k)) sigma`` (k = 2: 0.5450 sigma); a half-space
  does not shrink.

Empirical diagnostics (:func:`hidden_cost`): per class, the base classifier's clean accuracy, its
accuracy under noise ``E_z[1[f(x + sigma z) = y]]``, and the smoothed classifier's accuracy
(majority vote and PREDICT with abstention), with the spread across classes, per sigma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.stats import chi2, ncx2, norm
from torch import nn

from .._modes import eval_mode
from ..errors import InputError
from .smoothing import ABSTAIN, image_generator, predict_from_counts, sample_counts

__all__ = [
    "ball_vanishing_threshold",
    "smoothed_ball_radius",
    "orthant_diagonal_boundary",
    "smoothed_boundary",
    "ClassDisparity",
    "HiddenCostResult",
    "hidden_cost",
]


def ball_vanishing_threshold(d: int) -> float:
    """``sqrt(median chi^2_d)``: a ball of radius ``R < threshold * sigma`` in ``R^d`` has no point
    where the smoothed classifier keeps its class (Mohapatra et al. 2021, bounded regions vanish)."""
    if d < 1:
        raise InputError(f"d must be >= 1, got {d}")
    return float(math.sqrt(chi2.median(d)))


def smoothed_ball_radius(radius: float, d: int) -> float:
    """Radius (units of sigma) of the smoothed region of a ball of radius ``radius`` (units of sigma).

    Solves ``P(||rho e_1 + z||^2 <= radius^2) = F_{chi'^2(d, rho^2)}(radius^2) = 1/2`` for ``rho``;
    0 when the ball vanishes (``radius < ball_vanishing_threshold(d)``). Example: d = 1,
    radius 1 -> 0.9333; d = 2, radius 3 -> 2.8247.
    """
    if radius < 0 or d < 1:
        raise InputError(f"need radius >= 0 and d >= 1, got {radius}, {d}")
    if radius <= ball_vanishing_threshold(d):
        return 0.0

    def f(rho: float) -> float:
        return float(ncx2.cdf(radius * radius, d, rho * rho)) - 0.5 if rho > 0 else float(chi2.cdf(radius * radius, d)) - 0.5

    return float(brentq(f, 0.0, radius + 10.0, xtol=1e-12))


def orthant_diagonal_boundary(k: int = 2) -> float:
    """Diagonal boundary (units of sigma) of the smoothed orthant ``{x_1..x_k > 0}``: ``Phi^-1(2^(-1/k))``."""
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    return float(norm.ppf(2.0 ** (-1.0 / k)))


def smoothed_boundary(model: nn.Module, origin: torch.Tensor, direction: torch.Tensor, target: int, sigma: float,
                      ts: Sequence[float], n: int = 100_000, *, batch_size: int = 10_000, seed: int = 0) -> float:
    """Where the Monte-Carlo smoothed classifier's class-``target`` probability crosses 1/2 along a ray.

    Estimates ``p(t) = P(f(origin + t * direction + sigma z) = target)`` with :func:`sample_counts`
    at each ``t`` in ``ts`` (increasing) and returns the first crossing of 1/2 by linear
    interpolation (``nan`` if none). Used to reproduce the vanishing / shrinking values of
    Mohapatra et al. (2021) with the same smoothing code that certifies images.

    Args:
        model: base classifier taking (B, *origin.shape).
        origin, direction: points of the base classifier's input space (any shape, e.g. (1, 1, d)).
        target: class whose smoothed region is traced.
        sigma: noise level; ts: positions along the ray; n: samples per position.
        batch_size: samples per forward pass; seed: noise seed.
    """
    ts = [float(t) for t in ts]
    if len(ts) < 2 or any(b <= a for a, b in zip(ts, ts[1:])):
        raise InputError("ts must be increasing with >= 2 points")
    ps = []
    for i, t in enumerate(ts):
        x = origin + t * direction
        c = sample_counts(model, x, sigma, n, batch_size=batch_size, generator=image_generator(seed, i, x.device))
        ps.append(float(c[target]) / n)
    d = np.asarray(ps) - 0.5
    for i in range(len(ts) - 1):
        if d[i] == 0:
            return ts[i]
        if d[i] * d[i + 1] < 0:
            return ts[i] + (ts[i + 1] - ts[i]) * d[i] / (d[i] - d[i + 1])
    return math.nan


@dataclass(frozen=True)
class ClassDisparity:
    """Per-class accuracies at one sigma (lists indexed by class; ``nan`` for classes without images).

    Attributes:
        sigma: noise level.
        counts: images per class.
        clean: base classifier on clean inputs.
        noisy: base classifier under noise, ``E_z[1[f(x + sigma z) = y]]``.
        smoothed: smoothed classifier by majority vote of the samples.
        predict: PREDICT (abstain counts as wrong).
        overall: the four overall accuracies (keys clean, noisy, smoothed, predict).
        spread: per measure, ``max - min`` over classes; std: per measure, std over classes;
            drop_spread: ``max - min`` over classes of (clean - smoothed).
    """

    sigma: float
    counts: tuple[int, ...]
    clean: tuple[float, ...]
    noisy: tuple[float, ...]
    smoothed: tuple[float, ...]
    predict: tuple[float, ...]
    overall: dict[str, float]
    spread: dict[str, float]
    std: dict[str, float]
    drop_spread: float


@dataclass(frozen=True)
class HiddenCostResult:
    """Per-class accuracies for each sigma (Mohapatra et al. 2021's class-wise disparity).

    Attributes:
        per_sigma: one :class:`ClassDisparity` per sigma, in input order.
        n: noise samples per image; alpha: PREDICT's alpha; num_images: images used.
    """

    per_sigma: tuple[ClassDisparity, ...]
    n: int
    alpha: float
    num_images: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"n": self.n, "alpha": self.alpha, "num_images": self.num_images,
                "per_sigma": [asdict(c) for c in self.per_sigma]}


def _per_class(values: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, ...]:
    return tuple(float(values[labels == c].mean()) if (labels == c).any() else math.nan for c in range(k))


def hidden_cost(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigmas: Sequence[float], n: int = 1000, *,
                alpha: float = 1e-3, batch_size: int = 1000, seed: int = 0,
                num_classes: int | None = None) -> HiddenCostResult:
    """Per-class clean, noisy and smoothed accuracy vs sigma (Mohapatra et al. 2021, class-wise disparity).

    Args:
        model: base classifier on [0,1] images, (B, C, H, W) -> (B, K).
        x: (N, C, H, W) images in [0,1]; y: (N,) labels.
        sigmas: noise levels (pixel units, > 0).
        n: noise samples per image and sigma.
        alpha: PREDICT's failure probability.
        batch_size: forward-pass batch size; seed: noise seed (image i, sigma j use stream (seed, j, i)).
        num_classes: K (default: the model's output size).

    Returns:
        :class:`HiddenCostResult`; the paper predicts the class spread of the smoothed accuracy
        grows with sigma, also for noise-trained models.
    """
    if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InputError(f"need x (N, C, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    with eval_mode(model), torch.no_grad():
        clean_pred = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])
        k = num_classes or int(model(x[:1]).shape[1])
    labels = y.cpu().numpy()
    clean = (clean_pred.cpu().numpy() == labels).astype(float)
    out = []
    for j, s in enumerate(sigmas):
        noisy, smooth, pred = np.zeros(len(labels)), np.zeros(len(labels)), np.zeros(len(labels))
        for i in range(len(labels)):
            g = image_generator(seed * 1000 + j, i, x.device)
            c = sample_counts(model, x[i], float(s), n, num_classes=k, batch_size=batch_size, generator=g)
            noisy[i] = float(c[labels[i]]) / n
            smooth[i] = float(int(c.argmax()) == labels[i])
            pr = predict_from_counts(c, alpha).prediction
            pred[i] = float(pr != ABSTAIN and pr == labels[i])
        per = {m: _per_class(v, labels, k) for m, v in
               (("clean", clean), ("noisy", noisy), ("smoothed", smooth), ("predict", pred))}
        overall = {m: float(v.mean()) for m, v in (("clean", clean), ("noisy", noisy), ("smoothed", smooth), ("predict", pred))}
        spread = {m: float(np.nanmax(v) - np.nanmin(v)) for m, v in per.items()}
        std = {m: float(np.nanstd(v)) for m, v in per.items()}
        drop = np.asarray(per["clean"]) - np.asarray(per["smoothed"])
        out.append(ClassDisparity(float(s), tuple(int((labels == c).sum()) for c in range(k)), per["clean"], per["noisy"],
                                  per["smoothed"], per["predict"], overall, spread, std,
                                  float(np.nanmax(drop) - np.nanmin(drop))))
    return HiddenCostResult(tuple(out), n, alpha, len(labels))
