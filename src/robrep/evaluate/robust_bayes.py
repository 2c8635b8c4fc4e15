"""The eps-robust Bayes-optimal linear classifier of a two-class Gaussian mixture (SynBench's
scoring classifier, Ko et al. 2022), in closed form up to a scalar found by bisection.

With the eigenbasis ``Sigma = F diag(d) F^T`` (eigenvalues below ``eig_tol`` dropped: a
pseudo-inverse), the minimizer of ``(mu - z)^T D^-1 (mu - z)`` over ``||z||_2 <= eps ||mu||_2`` is
``z* = gamma mu / (gamma + d)``, so ``w = D^-1 (mu - z*)`` is proportional to
``(D + gamma I)^-1 mu``, with ``gamma >= 0`` the root of ``||z*(gamma)|| = eps ||mu||``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError

__all__ = ["ClassStats", "class_stats", "robust_bayes_direction", "robust_bayes_gamma", "robust_bayes_metrics"]

_DT = torch.float64


def _as64(x: torch.Tensor | float | Sequence[float]) -> torch.Tensor:
    return torch.as_tensor(x, dtype=_DT)


def _check_eps(eps: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(e) for e in eps)
    if len(out) == 0 or any(not (0.0 <= e < 1.0) or not math.isfinite(e) for e in out):
        raise InputError(f"SynBench eps are relative radii in [0, 1) (eps * ||mu||), got {list(eps)}")
    return out


def robust_bayes_gamma(mu: torch.Tensor, d: torch.Tensor, eps: float | Sequence[float], iters: int = 200) -> torch.Tensor:
    """Regularizer ``gamma >= 0`` of the eps-robust Bayes direction ``(D + gamma I)^-1 mu``.

    Root of ``||gamma mu / (gamma + d)||_2 = eps ||mu||_2`` (increasing in gamma from 0 to
    ``||mu||``), bracketed in ``[eps d_min / (1 - eps), eps d_max / (1 - eps)]`` and found by
    bisection on ``log gamma``. ``eps = 0`` gives ``gamma = 0`` (Fisher LDA).

    Args:
        mu: (k,) half the class-mean difference in the covariance eigenbasis.
        d: (k,) positive covariance eigenvalues.
        eps: relative radius or radii in [0, 1).
        iters: bisection steps.

    Returns:
        (E,) float64 gamma per eps.
    """
    mu, d = _as64(mu), _as64(d)
    e = _as64([eps] if isinstance(eps, (int, float)) else list(eps))
    if mu.ndim != 1 or d.shape != mu.shape:
        raise InputError(f"mu and d must be (k,) vectors of the same length, got {tuple(mu.shape)} and {tuple(d.shape)}")
    if (d <= 0).any():
        raise InputError("covariance eigenvalues must be positive (drop the null space first)")
    if ((e < 0) | (e >= 1)).any():
        raise InputError(f"eps must be in [0, 1), got {e.tolist()}")
    mnorm = mu.norm()
    pos = e > 0
    e1 = torch.where(pos, e, torch.ones_like(e))
    lo = torch.log(e1 * d.min() / (1 - e1))
    hi = torch.log(e1 * d.max() / (1 - e1))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        g = torch.exp(mid).unsqueeze(1)
        r = (g * mu / (g + d)).norm(dim=1)  # ||z*(gamma)||
        big = r > e1 * mnorm
        hi = torch.where(big, mid, hi)
        lo = torch.where(big, lo, mid)
    return torch.where(pos, torch.exp(0.5 * (lo + hi)), torch.zeros_like(e))


def _eig(cov: torch.Tensor, eig_tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    d, f = torch.linalg.eigh(_as64(cov))
    keep = d > eig_tol
    return f[:, keep], d[keep]


def robust_bayes_direction(mu: torch.Tensor, cov: torch.Tensor, eps: float, eig_tol: float = 1e-6) -> torch.Tensor:
    """The eps-robust Bayes-optimal linear direction of ``N(+-mu, cov)`` (Ko et al., docs/methods/synbench.md).

    ``w = F D^-1 (mu~ - z*)`` with ``z* = argmin_{||z|| <= eps ||mu~||} (mu~ - z)^T D^-1 (mu~ - z)``
    and ``mu~ = F^T mu`` in the eigenbasis ``cov = F D F^T`` restricted to eigenvalues above
    ``eig_tol``; in closed form ``w`` is proportional to ``F (D + gamma I)^-1 mu~``.

    Args:
        mu: (D,) half the difference of the class means.
        cov: (D, D) symmetric positive semi-definite (pooled) covariance.
        eps: relative radius in [0, 1).
        eig_tol: eigenvalues at or below it are dropped (the official code's 1e-6).

    Returns:
        (D,) float64 direction (scaled exactly as the official ``W_0``).
    """
    mu = _as64(mu)
    f, d = _eig(cov, eig_tol)
    mt = f.T @ mu
    g = robust_bayes_gamma(mt, d, float(eps))[0]
    return f @ (mt / (g + d))  # = D^-1 (mu~ - z*), without the cancellation as eps -> 1


@dataclass(frozen=True)
class ClassStats:
    """Class means and pooled covariance of two-class features (float64).

    Attributes:
        mean1, mean0: (D,) class means (y = 1, y = 0).
        cov: (D, D) pooled covariance ``[(n1 - 1) S1 + (n0 - 1) S0] / (n - 2)``.
        n1, n0: class counts.
    """

    mean1: torch.Tensor
    mean0: torch.Tensor
    cov: torch.Tensor
    n1: int
    n0: int


def class_stats(features: torch.Tensor, labels: torch.Tensor) -> ClassStats:
    """Class means and pooled covariance of (N, D) features with labels in {0, 1} (each class >= 2)."""
    h = _as64(features)
    y = labels.to(h.device).long()
    if h.ndim != 2 or y.shape != (h.shape[0],):
        raise InputError(f"features must be (N, D) with labels (N,), got {tuple(h.shape)} and {tuple(y.shape)}")
    h1, h0 = h[y == 1], h[y == 0]
    if len(h1) < 2 or len(h0) < 2:
        raise InputError(f"each class needs at least 2 samples, got {len(h1)} and {len(h0)}; draw more realizations")
    m1, m0 = h1.mean(0), h0.mean(0)
    c1, c0 = h1 - m1, h0 - m0
    cov = (c1.T @ c1 + c0.T @ c0) / (len(h) - 2)
    return ClassStats(m1, m0, cov, len(h1), len(h0))


def robust_bayes_metrics(stats: ClassStats, features: torch.Tensor, labels: torch.Tensor, eps: Sequence[float],
                         eig_tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Test accuracy and mean bound of the eps-robust Bayes classifiers fitted on ``stats``.

    For each eps: margin ``m = (h - c)^T F w`` with ``c`` the midpoint of the class means,
    prediction ``y = 1[m > 0]`` (``m = 0`` counts as wrong, as in the official code), and bound
    ``|m| / |mu~^T w|``, averaged over correctly classified points (the official code averages
    per-batch means; equal up to batch-size effects).

    Args:
        stats: training-feature :class:`ClassStats`.
        features: (N, D) test features; labels: (N,) in {0, 1}.
        eps: relative radii in [0, 1).
        eig_tol: eigenvalue cut of the covariance pseudo-inverse.

    Returns:
        accuracy (E,) in [0, 1] and bound (E,) >= 0, float64. A degenerate representation
        (no variance or equal class means) gets accuracy 0 and bound 0.
    """
    eps = _check_eps(eps)
    h, y = _as64(features), labels.to(features.device).long()
    f, d = _eig(stats.cov, eig_tol)
    mt = f.T @ (stats.mean1 - stats.mean0) / 2
    n_e = len(eps)
    if d.numel() == 0 or float(mt.norm()) == 0.0:
        return torch.zeros(n_e, dtype=_DT), torch.zeros(n_e, dtype=_DT)
    g = robust_bayes_gamma(mt, d, eps)  # (E,)
    gz = g.unsqueeze(1)
    w = mt / (gz + d)  # (E, k): D^-1 (mu~ - z*) with z* = gamma mu~ / (gamma + d), simplified
    denom = (w @ mt).abs()  # (E,)
    proj = (h - (stats.mean1 + stats.mean0) / 2) @ f  # (N, k)
    margin = proj @ w.T  # (N, E)
    correct = ((margin > 0) & (y == 1).unsqueeze(1)) | ((margin < 0) & (y == 0).unsqueeze(1))
    acc = correct.to(_DT).mean(0)
    b = margin.abs() / denom
    cnt = correct.sum(0)
    mean_b = torch.where(cnt > 0, (b * correct).sum(0) / cnt.clamp_min(1), torch.zeros_like(denom))
    return acc.cpu(), mean_b.cpu()
