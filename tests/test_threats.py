"""Threat models: exact projections (vs an independent solver), step geometry, feasibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import robrep
from robrep.errors import InputError, UnknownNameError
from robrep.threats import project_l1_ball


def _l1_projection_reference(v: np.ndarray, r: float) -> np.ndarray:
    """Independent: min ||p - n - v||^2 s.t. p, n >= 0, sum(p + n) <= r (a smooth QP), SLSQP."""
    d = len(v)
    x0 = np.zeros(2 * d)
    res = minimize(
        lambda z: np.sum((z[:d] - z[d:] - v) ** 2),
        x0,
        jac=lambda z: np.concatenate([2 * (z[:d] - z[d:] - v), -2 * (z[:d] - z[d:] - v)]),
        bounds=[(0, None)] * (2 * d),
        constraints=[{"type": "ineq", "fun": lambda z: r - z.sum(), "jac": lambda z: -np.ones(2 * d)}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return res.x[:d] - res.x[d:]


@pytest.mark.parametrize("seed", range(6))
def test_l1_projection_matches_qp_solver(seed: int) -> None:
    g = np.random.default_rng(seed)
    v = g.normal(size=7) * 2
    r = float(g.uniform(0.1, 3.0))
    ours = project_l1_ball(torch.tensor(v)[None], r)[0].numpy()
    ref = _l1_projection_reference(v, r)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert np.abs(ours).sum() <= r + 1e-9


def test_projections_closed_forms() -> None:
    x = torch.full((2, 1, 2, 2), 0.5)
    d = torch.tensor([[0.3, -0.2, 0.05, 0.0], [0.01, 0.02, -0.01, 0.0]]).view(2, 1, 2, 2)
    # linf: clamp per coordinate
    p = robrep.threat("linf", 0.1).project(x + d, x) - x
    assert torch.allclose(p, d.clamp(-0.1, 0.1))
    # l2: radial rescaling of the long one only
    p = robrep.threat("l2", 0.1).project(x + d, x) - x
    n0 = d[0].norm()
    assert torch.allclose(p[0], d[0] * 0.1 / n0, atol=1e-7) and torch.allclose(p[1], d[1])
    # l1 projection of (3, 1) onto radius 2: soft threshold at 1 -> (2, 0)
    assert torch.allclose(project_l1_ball(torch.tensor([[3.0, 1.0]]), 2.0), torch.tensor([[2.0, 0.0]]))


@settings(max_examples=40, deadline=None)
@given(norm=st.sampled_from(["linf", "l2", "l1"]), eps=st.floats(0.0, 3.0), seed=st.integers(0, 10_000))
def test_random_start_and_projection_feasible(norm: str, eps: float, seed: int) -> None:
    thr = robrep.threat(norm, eps)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 3, 5, 5, generator=g)
    xs = thr.random_start(x, g)
    assert thr.contains(xs, x).all()
    far = x + 5 * torch.randn(x.shape, generator=g)
    xp = thr.project(far, x)
    assert thr.contains(xp, x).all()
    assert (xp >= 0).all() and (xp <= 1).all()


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_ascent_step_has_its_length_in_its_norm(norm: str) -> None:
    thr = robrep.threat(norm, 1.0)
    grad = torch.randn(5, 1, 8, 8)
    s = thr.ascent(grad, 0.37)
    assert torch.allclose(thr.norm_of(s), torch.full((5,), 0.37), atol=1e-6)
    # and it is an ascent direction
    assert ((s * grad).flatten(1).sum(1) > 0).all()


def test_l2_random_start_is_uniform_in_ball_radius_law() -> None:
    # radius of a uniform point in a d-ball: P(r <= t eps) = t^d; at d=2 the median is eps/sqrt(2)
    thr = robrep.threat("l2", 0.2)
    x = torch.full((20000, 1, 1, 2), 0.5)
    r = thr.norm_of(thr.random_delta(x, torch.Generator().manual_seed(0)))
    assert abs(float(r.median()) - 0.2 / math.sqrt(2)) < 0.003


def test_dual_norms() -> None:
    w = torch.tensor([3.0, -4.0])
    assert float(robrep.threat("linf", 1).dual_norm(w)) == pytest.approx(7.0)
    assert float(robrep.threat("l2", 1).dual_norm(w)) == pytest.approx(5.0)
    assert float(robrep.threat("l1", 1).dual_norm(w)) == pytest.approx(4.0)


@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_eps(eps: float) -> None:
    with pytest.raises(InputError, match="eps"):
        robrep.threat("linf", eps)


def test_unknown_norm() -> None:
    with pytest.raises(UnknownNameError, match="linf"):
        robrep.threat("l3", 0.1)


def test_l2_attack_start_has_radius_uniform_in_0_eps_and_linf_uses_random_start():
    import robrep

    x = torch.full((4000, 1, 8, 8), 0.5)
    t = robrep.threat("l2", 1.0)  # d = 64: a volume-uniform radius would be >= 0.9 eps for 99.9 % of draws
    s = t.attack_start(x, torch.Generator().manual_seed(0))
    r = (s - x).flatten(1).norm(dim=1) / t.eps
    assert bool(t.contains(s, x).all())
    assert abs(float(r.mean()) - 0.5) < 0.02 and abs(float((r < 0.5).float().mean()) - 0.5) < 0.03
    assert abs(float((r < 0.1).float().mean()) - 0.1) < 0.02  # P(r < 0.1 eps) = 0.1, not 0.1**64
    v = t.random_start(x, torch.Generator().manual_seed(0))
    assert float(((v - x).flatten(1).norm(dim=1) / t.eps).min()) > 0.85  # the ball's volume sits at its surface
    li = robrep.threat("linf", 0.1)
    assert torch.equal(li.attack_start(x, torch.Generator().manual_seed(1)), li.random_start(x, torch.Generator().manual_seed(1)))
