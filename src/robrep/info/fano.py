"""Closed forms: the Fano bound on downstream adversarial accuracy, and the binary-sign Gaussian
example with exact MI.

Zhu, Zhang & Evans, ICML 2020 (docs/methods/vulnerability.md). All functions are pure; MI in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError

__all__ = ["SignGaussianCase", "accuracy_bound", "binary_entropy", "exact_sign_mi", "sign_gaussian_case"]


def accuracy_bound(mi_worst: float, num_classes: int, label_entropy: float | None = None) -> float:
    """Upper bound on the adversarial accuracy of *any* classifier on a representation.

    Fano's inequality on the Markov chain Y -> X' -> g(X') -> f(g(X')) (docs/methods/vulnerability.md):
    ``P_err >= (H(Y) - I_worst - log 2) / log |Y|``, so
    ``adv. accuracy <= 1 - (H(Y) - I_worst - log 2) / log |Y|``, which for uniform labels
    (H(Y) = log |Y|) is ``(I_worst + log 2) / log |Y|``. Clipped to [0, 1].

    Args:
        mi_worst: worst-case MI I(X'; g(X')) in nats (the bound uses max(0, mi_worst): MI >= 0).
        num_classes: |Y| >= 2.
        label_entropy: H(Y) in nats (default: uniform, log |Y|).

    Returns:
        A float in [0, 1]. Example: I = 1.034 nats, 10 classes -> 0.7501.
    """
    if num_classes < 2:
        raise InputError(f"the bound needs at least 2 classes, got {num_classes}")
    if not math.isfinite(mi_worst):
        raise InputError(f"mi_worst must be finite, got {mi_worst}")
    hy = math.log(num_classes) if label_entropy is None else float(label_entropy)
    if not 0 <= hy <= math.log(num_classes) + 1e-12:
        raise InputError(f"label_entropy must be in [0, log {num_classes}], got {hy}")
    v = 1.0 - (hy - max(0.0, mi_worst) - math.log(2)) / math.log(num_classes)
    return float(min(1.0, max(0.0, v)))


def binary_entropy(p: torch.Tensor | float) -> torch.Tensor:
    """h_b(p) = -p log p - (1-p) log(1-p) in nats (0 at p in {0, 1}); differentiable."""
    p = torch.as_tensor(p, dtype=torch.float64)
    q = 1 - p
    return -(torch.xlogy(p, p) + torch.xlogy(q, q))


def exact_sign_mi(u: torch.Tensor) -> torch.Tensor:
    """Exact I(X; sign(U)) = H(sign(U)) for a deterministic sign representation of a batch.

    Args:
        u: (N,) pre-sign values w^T x.

    Returns:
        Scalar in [0, log 2] (plug-in entropy of the empirical P(Z = 1)).
    """
    return binary_entropy((u > 0).double().mean())


@dataclass(frozen=True)
class SignGaussianCase:
    """The binary-sign Gaussian example (docs/methods/vulnerability.md), all in closed form.

    Attributes:
        m_over_s: separation m / s with m = w^T theta, s = sigma ||w||_2.
        eps_over_s: eps' / s with eps' = eps ||w||_* (dual norm).
        p_z1: P(Z' = 1) under the worst-case transport.
        mi_clean: I(X; Z) = log 2.
        mi_worst: h_b(p_z1).
        vulnerability: log 2 - h_b(p_z1).
        risk, adv_risk: natural and adversarial risk of the best downstream classifier.
        gap: adv_risk - risk.
    """

    m_over_s: float
    eps_over_s: float
    p_z1: float
    mi_clean: float
    mi_worst: float
    vulnerability: float
    risk: float
    adv_risk: float
    gap: float


def sign_gaussian_case(m_over_s: float, eps_over_s: float) -> SignGaussianCase:
    """Closed forms of docs/methods/vulnerability.md for X | Y ~ N(Y theta, sigma^2 I), g(x) = sign(w^T x).

    ``P(Z'=1) = F(eps') = Phi((eps'-m)/s)/2 + Phi((eps'+m)/s)/2`` (every U in [-eps', 0] is pushed
    across zero), ``RV = log 2 - h_b(F)``, ``Risk = Phi(-m/s)``, ``AdvRisk = Phi((eps'-m)/s)``.
    """
    if eps_over_s < 0:
        raise InputError(f"eps_over_s must be >= 0, got {eps_over_s}")
    from scipy.stats import norm

    p = 0.5 * norm.cdf(eps_over_s - m_over_s) + 0.5 * norm.cdf(eps_over_s + m_over_s)
    hw = float(binary_entropy(p))
    risk, adv = float(norm.cdf(-m_over_s)), float(norm.cdf(eps_over_s - m_over_s))
    return SignGaussianCase(m_over_s, eps_over_s, float(p), math.log(2), hw, math.log(2) - hw, risk, adv, adv - risk)
