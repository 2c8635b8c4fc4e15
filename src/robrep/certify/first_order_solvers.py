"""Worst-case radii of the first-order certificate (Mohapatra et al., NeurIPS 2020, arXiv 2010.06651).

Pure numerics in units of sigma: given ``p = E[h]`` and gradient information of the smoothed
classifier, the smallest radius at which the worst-case ``E[h(z + r e_1)]`` can drop to 1/2.

* :func:`band_radius` -- one constraint ``E[z_1 h] = -m`` (only ``||y||_2 <= m`` is known; the worst
  gradient is anti-aligned): the worst set is a band ``[z_2, z_1]`` with
  ``Phi(z_1) - Phi(z_2) = p``, ``phi(z_1) - phi(z_2) = m``; R solves
  ``Phi(z_1 - R) - Phi(z_2 - R) = 1/2`` (authors' ``calculate_radius``).
* :func:`numerical_radius` -- both components (authors' ``numerical_radius``). The worst set is
  ``{exp(r z_1) <= a z_1 + b z_2 + c}`` (generalized Neyman-Pearson). Instead of the authors'
  nested bisections over (a, b, c) we solve the concave Lagrange dual in 3 variables by Newton's
  method (the z_2 integral is in closed form, the z_1 integral by quadrature); strong duality
  makes its optimum the minimum above.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri
from scipy.stats import norm

from ..errors import InputError

__all__ = ["band_radius", "numerical_radius", "worst_case_mass"]

_SLACK = 1e-4  # conservative shrink of (p, m_perp, |m_par|), as in the authors' numerical_radius


def _phi(z: float) -> float:
    return float(norm.pdf(z))


# --------------------------------------------------------------------------- 1-D band
def _band(p: float, m: float) -> tuple[float, float]:
    """Band ``[z2, z1]`` with ``Phi(z1) - Phi(z2) = p`` and ``phi(z1) - phi(z2) = m``."""
    lo = float(ndtri(p))

    def g(z1: float) -> float:
        return _phi(z1) - _phi(float(ndtri(max(ndtr(z1) - p, 0.0))))

    hi = 40.0
    if m >= g(lo):
        return -math.inf, lo
    z1 = brentq(lambda t: g(t) - m, lo, hi, xtol=1e-13, rtol=1e-13, maxiter=500)
    return float(ndtri(max(ndtr(z1) - p, 0.0))), float(z1)


def band_radius(p: float, m: float) -> float:
    """First-order L2 radius (units of sigma) knowing ``p`` and ``||y||_2 <= m``.

    Mohapatra et al. 2020, Sec. "first-order certified regions" (L2 ball): the adversary aligns
    the gradient against the perturbation, so the problem is 1-D. ``m >= phi(Phi^-1(p))`` gives
    Cohen's ``Phi^-1(p)``; ``m = 0`` gives the symmetric band (p = 0.9 -> 1.6436); a negative
    ``m`` (the gradient is known to point favourably) gives ``inf`` once ``m <= -phi(Phi^-1(p))``.

    Args:
        p: lower bound of p_A in (0, 1); ``p <= 1/2`` gives 0.
        m: upper bound of the gradient component against the perturbation (``||y||_2``).

    Returns:
        Radius in units of sigma, >= Cohen's ``Phi^-1(p)``; decreasing in ``m``.
    """
    if not 0.0 <= p <= 1.0 or math.isnan(m):
        raise InputError(f"need p in [0,1] and a finite m, got p={p}, m={m}")
    if p <= 0.5:
        return 0.0
    if p >= 1.0:
        return math.inf
    zp = float(ndtri(p))
    pmax = _phi(zp)
    if m >= pmax:
        return zp
    if m <= -pmax:
        return math.inf
    z2, z1 = _band(p, m)

    def mass(r: float) -> float:
        return float(ndtr(z1 - r) - ndtr(z2 - r)) - 0.5

    # mass is unimodal in r with mass(0) = p - 1/2 > 0: the crossing lies beyond the mode
    if mass(zp) <= 0:  # m within rounding of phi(Phi^-1 p): Cohen's radius
        return zp
    hi = max(z1, zp) + 1.0
    while mass(hi) > 0:
        hi *= 2.0
    lo = max(zp, 0.5 * (z1 + z2)) if math.isfinite(z2) else zp
    lo = min(lo, hi)
    if mass(lo) <= 0:
        lo = zp
    return float(brentq(mass, lo, hi, xtol=1e-12, rtol=1e-12, maxiter=500))


# --------------------------------------------------------------------------- 2-D dual
def _nodes(r: float, n: int = 4001) -> tuple[np.ndarray, np.ndarray]:
    z = np.linspace(-12.0, r + 12.0, n)
    w = np.full(n, z[1] - z[0])
    w[0] = w[-1] = 0.5 * (z[1] - z[0])
    return z, w * norm.pdf(z)


def _dual(lam: np.ndarray, r: float, z: np.ndarray, wq: np.ndarray, m: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Convex function ``F(lam) - lam . m`` (minimise it), its gradient and Hessian.

    ``F(lam) = E_{z1}[ s * psi(A / s) ]`` with ``A = lam0 + lam1 z1 - exp(r z1 - r^2/2)``,
    ``s = lam2 > 0`` and ``psi(u) = u Phi(u) + phi(u)`` (= E[(A + s z2)_+] / s).
    """
    l0, l1, s = lam
    wr = np.exp(np.minimum(r * z - 0.5 * r * r, 700.0))
    a = l0 + l1 * z - wr
    u = a / s
    cdf, pdf = ndtr(u), norm.pdf(u)
    psi = u * cdf + pdf
    f = float(np.dot(wq, s * psi)) - float(lam @ m)
    grad = np.array([np.dot(wq, cdf), np.dot(wq, z * cdf), np.dot(wq, pdf)]) - m
    gvec = np.stack([np.ones_like(z), z, -u])
    hess = (gvec * (wq * pdf / s)) @ gvec.T
    return f, grad, hess


def worst_case_mass(p: float, m_perp: float, m_par: float, r: float, *, lam0: np.ndarray | None = None,
                    nodes: int = 4001) -> tuple[float, np.ndarray]:
    """``min E[h(z + r e1)]`` over ``h: R^2 -> [0,1]`` with ``E[h] = p``, ``E[z1 h] = m_par``, ``E[z2 h] = m_perp``.

    Solved through the Lagrange dual ``max_lam lam . (p, m_par, m_perp) - E[(lam . (1, z1, z2) -
    exp(r z1 - r^2/2))_+]`` (Newton with backtracking); requires ``m_perp > 0`` and
    ``m_par^2 + m_perp^2 < phi(Phi^-1(p))^2`` (strictly feasible moments).

    Returns:
        (minimum shifted mass in [0, 1], optimal multipliers ``(lam0, lam1, lam2)``).
    """
    if m_perp <= 0:
        raise InputError("m_perp must be > 0 for the 2-D problem (use band_radius when it is 0)")
    z, wq = _nodes(r, nodes)
    m = np.array([p, m_par, m_perp])
    lam = np.array([1.0, 0.0, 1.0]) if lam0 is None else np.array(lam0, dtype=float)
    f, g, h = _dual(lam, r, z, wq, m)
    for _ in range(200):
        try:
            step = -np.linalg.solve(h + 1e-12 * np.eye(3), g)
        except np.linalg.LinAlgError:
            step = -g
        t = 1.0
        while lam[2] + t * step[2] <= 0:
            t *= 0.5
        while True:
            new = lam + t * step
            fn, gn, hn = _dual(new, r, z, wq, m)
            if fn <= f + 1e-4 * t * float(g @ step) or t < 1e-10:
                break
            t *= 0.5
        done = abs(f - fn) < 1e-13 and np.max(np.abs(gn)) < 1e-9
        lam, f, g, h = new, fn, gn, hn
        if done or np.max(np.abs(g)) < 1e-11:
            break
    return float(min(max(-f, 0.0), 1.0)), lam


def numerical_radius(p: float, m_perp: float, m_par: float, *, tol: float = 1e-4) -> float:
    """First-order L2 radius (units of sigma) along a direction with known gradient components.

    Mohapatra et al. 2020: certify ``||delta||_2 < R sigma`` along a direction where the gradient
    component is ``m_par`` (negative: against the perturbation; pass minus an upper bound) and the
    orthogonal part has norm ``m_perp >= 0`` (pass a lower bound). Used for the L2-in-one-colour-
    channel, L1 and Linf certificates. ``m_perp`` ~ 0 reduces to :func:`band_radius` with
    ``m = |m_par|`` (as in the authors' code). Inconsistent bounds
    (``m_par^2 + m_perp^2 >= phi(Phi^-1 p)^2``) are made feasible conservatively: ``m_perp`` is
    reduced first, then an adverse ``m_par`` is capped at the half-space value (Cohen's radius).

    Args:
        p: lower bound of p_A; ``p <= 1/2`` gives 0.
        m_perp: orthogonal gradient norm (>= 0).
        m_par: gradient component along the perturbation.
        tol: absolute tolerance of the radius.

    Returns:
        Radius in units of sigma (>= Cohen's ``Phi^-1(p)``, possibly ``inf``).
    """
    if p <= 0.5:
        return 0.0
    if p >= 1.0:
        return math.inf
    p = p * (1.0 - _SLACK)
    m_perp = max(m_perp, 0.0) * (1.0 - _SLACK)
    m_par = m_par - _SLACK * abs(m_par)
    zp = float(ndtri(p))
    cap = _phi(zp) * (1.0 - 1e-3)
    if m_par <= -cap:
        return band_radius(p, -m_par)
    if m_par >= cap:
        m_par = cap * (1.0 - 1e-3)
    if m_par * m_par + m_perp * m_perp > cap * cap:
        m_perp = math.sqrt(max(cap * cap - m_par * m_par, 0.0))
    if m_perp <= 1e-4:
        return band_radius(p, -m_par)
    lam: np.ndarray | None = None
    lo = zp  # certified: the first-order problem is more constrained than Cohen's
    hi = max(2.0 * zp, zp + 0.5)
    for _ in range(12):
        v, lam = worst_case_mass(p, m_perp, m_par, hi, lam0=lam)
        if v <= 0.5:
            break
        lo, hi = hi, 2.0 * hi
    else:
        return math.inf
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        v, lam = worst_case_mass(p, m_perp, m_par, mid, lam0=lam)
        if v > 0.5:
            lo = mid
        else:
            hi = mid
    return float(lo)
