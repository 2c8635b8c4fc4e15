"""First-order certificates (Mohapatra et al., NeurIPS 2020).

References: the first-order L2 table of docs/methods/certification.md; a brute-force linear program over a
2-D grid (scipy linprog) for the worst-case mass; half-space closed forms (exact smoothed
probability, gradient phi(Phi^-1 p) u, exact L1/Linf radii margin/||u||_inf and margin/||u||_1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from scipy.stats import norm
from torch import nn

from robrep.certify import (
    band_radius,
    certify_first_order,
    clopper_pearson_lower,
    cohen_radius,
    numerical_radius,
)
from robrep.certify.first_order import (
    SUBGAUSSIAN_C,
    GradientBounds,
    first_order_radii,
    gradient_bounds,
    sample_gradient,
    worst_case_mass,
)
from robrep.certify.smoothing import image_generator

TABLE = {  # p: (Cohen, m = 0, 0.25, 0.5, 0.75, 0.99 of phi(Phi^-1 p)) -- docs/methods/certification.md
    0.70: (0.5244, 0.9818, 0.8219, 0.6962, 0.5980, 0.5266),
    0.90: (1.2816, 1.6436, 1.5265, 1.4292, 1.3474, 1.2836),
    0.99: (2.3263, 2.5758, 2.4954, 2.4289, 2.3729, 2.3279),
}


class HalfSpace(nn.Module):
    """Class 1 iff u . x >= t (u unit vector)."""

    def __init__(self, u: torch.Tensor, t: float) -> None:
        super().__init__()
        self.u, self.t = u.flatten().double(), t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).double() @ self.u - self.t
        return torch.stack([torch.zeros_like(s), s], 1)


def test_subgaussian_constant() -> None:
    # the authors' code: 0.25 + 3 / sqrt(8 pi e) = 0.6130 (docs/methods/certification.md prints ~0.4920, which is not this value)
    assert SUBGAUSSIAN_C == pytest.approx(0.25 + 3 / math.sqrt(8 * math.pi * math.exp(1)), rel=1e-15)
    assert SUBGAUSSIAN_C == pytest.approx(0.61296, abs=1e-5)


@pytest.mark.parametrize("p", sorted(TABLE))
def test_band_radius_table(p: float) -> None:
    cohen, *rest = TABLE[p]
    pmax = norm.pdf(norm.ppf(p))
    assert band_radius(p, pmax) == pytest.approx(cohen, abs=1e-4)
    assert band_radius(p, 2 * pmax) == pytest.approx(norm.ppf(p), abs=1e-12)  # m beyond the max: Cohen
    for k, want in zip((0.0, 0.25, 0.5, 0.75, 0.99), rest):
        assert band_radius(p, k * pmax) == pytest.approx(want, abs=1e-4)


def test_band_radius_closed_forms_and_monotonicity() -> None:
    assert band_radius(0.9, 0.0) == pytest.approx(1.6436, abs=1e-4)
    assert band_radius(0.7, 0.1738) == pytest.approx(0.6962, abs=1e-4)
    # m = 0: symmetric band z1 = -z2 = Phi^-1((1 + p)/2); the radius solves the shifted mass = 1/2
    p = 0.8
    z1 = norm.ppf((1 + p) / 2)
    r = band_radius(p, 0.0)
    assert norm.cdf(z1 - r) - norm.cdf(-z1 - r) == pytest.approx(0.5, abs=1e-9)
    ms = np.linspace(-0.99, 0.99, 25) * norm.pdf(norm.ppf(p))
    radii = [band_radius(p, m) for m in ms]
    assert all(a > b for a, b in zip(radii, radii[1:]))  # strictly decreasing in m
    assert band_radius(p, -norm.pdf(norm.ppf(p))) == math.inf
    assert band_radius(0.5, 0.0) == 0.0


def _lp_worst_mass(p: float, m_perp: float, m_par: float, r: float, step: float = 0.08) -> float:
    """Brute-force reference: the linear program over h in [0,1] on a 2-D grid (cell-centre rule)."""
    g = np.arange(-6.5, 6.5 + 1e-9, step)
    z1, z2 = np.meshgrid(g, g, indexing="ij")
    z1, z2 = z1.ravel(), z2.ravel()
    w = norm.pdf(z1) * norm.pdf(z2) * step * step
    cost = w * np.exp(r * z1 - r * r / 2)
    a_eq = np.stack([w, w * z1, w * z2])
    res = linprog(cost, A_eq=a_eq, b_eq=[p, m_par, m_perp], bounds=(0, 1), method="highs")
    assert res.status == 0
    return float(res.fun)


@pytest.mark.parametrize("p,m_perp,m_par,r", [(0.8, 0.15, -0.10, 1.0), (0.9, 0.10, -0.05, 1.5), (0.7, 0.2, 0.1, 0.8)])
def test_worst_case_mass_matches_linear_program(p: float, m_perp: float, m_par: float, r: float) -> None:
    v, lam = worst_case_mass(p, m_perp, m_par, r)
    assert lam[2] > 0
    assert v == pytest.approx(_lp_worst_mass(p, m_perp, m_par, r), abs=2e-3)


def test_numerical_radius_properties() -> None:
    p = 0.9
    pmax = norm.pdf(norm.ppf(p))
    cohen = norm.ppf(p)
    # tiny orthogonal part: the 1-D band with m = |m_par|
    assert numerical_radius(p, 1e-6, -0.05) == pytest.approx(band_radius(p, 0.05), abs=2e-3)
    # increasing in the orthogonal lower bound, decreasing in the adverse parallel bound, >= Cohen
    perp = [numerical_radius(p, v * pmax, -0.3 * pmax) for v in (0.05, 0.3, 0.6, 0.9)]
    assert all(a < b for a, b in zip(perp, perp[1:])) and perp[0] >= cohen - 1e-3
    par = [numerical_radius(p, 0.3 * pmax, -v * pmax) for v in (0.0, 0.3, 0.6, 0.9)]
    assert all(a > b for a, b in zip(par, par[1:])) and par[-1] >= cohen - 1e-3
    # the worst-case mass at the returned radius is ~1/2 (the definition of the radius)
    r = numerical_radius(0.8, 0.12, -0.08)
    v, _ = worst_case_mass(0.8 * (1 - 1e-4), 0.12 * (1 - 1e-4), -0.08 * (1 + 1e-4), r)
    assert v == pytest.approx(0.5, abs=1e-3)
    assert numerical_radius(0.4, 0.1, -0.1) == 0.0


def test_half_space_radii_are_sound_and_beat_cohen_for_l1() -> None:
    # Exact smoothed half-space with unit normal u spread over d pixels: p = Phi(t), y = phi(t) u.
    # Exact radii (units of sigma): L2 = t, L1 = t / ||u||_inf = t sqrt(d), Linf = t / ||u||_1 = t / sqrt(d).
    d, t = 16, norm.ppf(0.9)
    p, g = 0.9, norm.pdf(t)
    u = np.full(d, 1 / math.sqrt(d))
    y = g * u
    b = GradientBounds(float(y @ y), g, g, float(np.abs(y).max()), float(np.abs(y).sum() / math.sqrt(d)),
                       (float(y @ y),), (g,), (0.0,), d, 1e-3)
    r = first_order_radii(p, b)
    assert r["l2"] == pytest.approx(t, abs=1e-9)  # ||y|| = phi(Phi^-1 p): first order equals Cohen
    assert t < r["l1"] <= t * math.sqrt(d) + 1e-6
    assert r["l1"] > 1.5 * t
    assert r["linf"] <= t / math.sqrt(d) + 1e-9


def test_gradient_estimator_on_half_space() -> None:
    # f(x) = 1[u.x >= thr]: p_A(x) = Phi((u.x - thr)/sigma), y = sigma grad p_A = phi(.) u exactly.
    d, sigma = 16, 0.5
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(d, generator=gen, dtype=torch.float64)
    u /= u.norm()
    x = torch.full((1, 4, 4), 0.5)
    thr = float(x.flatten().double() @ u) - 0.3  # margin 0.3 -> t' = 0.6
    model = HalfSpace(u, thr)
    y_true = norm.pdf(0.3 / sigma) * u.numpy()
    n = 120_000
    smp = sample_gradient(model, x, sigma, 1, n, batch_size=4000, generator=image_generator(0, 0))
    assert smp.n1 + smp.n2 == n and smp.n1 == smp.n2
    assert abs(smp.count / n - norm.cdf(0.6)) < 5 * math.sqrt(0.25 / n)
    pooled = ((smp.v1 * smp.n1 + smp.v2 * smp.n2) / n / sigma).flatten().numpy()
    assert np.abs(pooled - y_true).max() < 5 * 0.5 / math.sqrt(n)
    est = float((smp.v1 * smp.v2).sum()) / sigma ** 2
    assert est == pytest.approx(float(y_true @ y_true), abs=0.01)
    b = gradient_bounds(smp, 5e-4)
    nrm = float(np.linalg.norm(y_true))
    assert b.l2_lower <= nrm <= b.l2_upper
    assert b.linf_upper >= np.abs(y_true).max()
    assert b.l1_upper >= np.abs(y_true).sum() / math.sqrt(d)
    assert b.l2_sq == pytest.approx(est)


def test_gradient_estimator_is_unbiased_for_the_norm() -> None:
    # v1 . v2 / sigma^2 is unbiased for ||y||^2: average over seeds with a small n per run.
    u = torch.zeros(4, dtype=torch.float64)
    u[0] = 1.0
    model = HalfSpace(u, 0.0)
    x = torch.tensor([[[0.1, 0.0], [0.0, 0.0]]])
    sigma = 0.25
    truth = norm.pdf(0.4) ** 2
    ests = []
    for s in range(40):
        smp = sample_gradient(model, x, sigma, 1, 2000, batch_size=500, generator=image_generator(s, 0))
        ests.append(float((smp.v1 * smp.v2).sum()) / sigma ** 2)
    assert np.mean(ests) == pytest.approx(truth, abs=4 * np.std(ests) / math.sqrt(len(ests)))


def test_certify_first_order_linear() -> None:
    d, sigma = 16, 0.25
    u = torch.full((d,), 1 / math.sqrt(d), dtype=torch.float64)
    x = torch.full((1, 4, 4), 0.5)
    model = HalfSpace(u, float(x.flatten().double() @ u) - 0.25)  # margin 0.25 -> p = Phi(1) = 0.841
    c = certify_first_order(model, x, sigma, 100, 60_000, 1e-3, batch_size=3000, generator=image_generator(1, 0))
    assert c.prediction == 1 and c.n == 60_000
    assert c.p_lower == pytest.approx(clopper_pearson_lower(c.count, 60_000, 5e-4))
    assert c.radius_cohen == pytest.approx(cohen_radius(clopper_pearson_lower(c.count, 60_000, 1e-3), sigma))
    assert c.radius_l2 <= c.radius_cohen + 1e-9  # same samples, smaller alpha and ||y|| = max: no gain in L2
    exact = 0.25
    assert c.radius_cohen < exact and c.radius_l2 < exact
    assert c.radius_l1 < exact * math.sqrt(d)  # sound: below the exact L1 radius margin / ||u||_inf
    assert c.radius_l1 > 1.2 * c.radius_cohen  # and a real gain over the L2 radius
    assert c.radius_linf < exact / math.sqrt(d)
    best = c.best()
    assert best["l1"] == c.radius_l1 and best["l2"] == c.radius_cohen
    again = certify_first_order(model, x, sigma, 100, 60_000, 1e-3, batch_size=3000, generator=image_generator(1, 0))
    assert again.radius_l1 == c.radius_l1 and again.count == c.count  # deterministic under the seed


def test_channel_radii_for_colour_images() -> None:
    # gradient entirely in the red channel: attacking the green channel is orthogonal to it.
    u = torch.zeros(3, 2, 2, dtype=torch.float64)
    u[0] = 0.5
    x = torch.full((3, 2, 2), 0.5)
    model = HalfSpace(u, float(x.flatten().double() @ u.flatten()) - 0.2)
    c = certify_first_order(model, x, 0.25, 100, 60_000, 1e-3, batch_size=3000, generator=image_generator(2, 0))
    r_red, r_green, r_blue = c.radius_channel
    assert r_red <= c.radius_cohen + 1e-9
    assert r_green > 1.3 * c.radius_cohen and r_blue > 1.3 * c.radius_cohen
