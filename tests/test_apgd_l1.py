"""l1-APGD and AutoAttack's standard for l1 (Croce & Hein, ICML 2021): the ball-and-box
projection against the reference's and its optimality conditions, properties of the attack, the
closed form on a linear classifier, and agreement with pyautoattack's L1 standard on a small
trained MNIST model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import robrep
from robrep.attacks import apgd_cascade, apgd_t, run_protocol
from robrep.attacks.apgd_l1 import project_l1_box
from robrep.errors import InputError

STEPS, TARGETS = 10, 2  # reduced budgets that both implementations accept (the standard: 100 steps, 5 targets)


pytestmark = pytest.mark.usefixtures("one_thread")


def _l1(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).abs().sum(1)


def _inside(x_adv: torch.Tensor, x: torch.Tensor, eps: float, tol: float = 1e-6) -> bool:
    """Inside the l1 ball and the box, up to float32 rounding."""
    return bool((_l1(x_adv - x) <= eps * (1 + 1e-5) + tol).all() and x_adv.min() >= -tol and x_adv.max() <= 1 + tol)


# --- the projection -------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.5, 3.0, 40.0])
def test_projection_is_feasible_optimal_and_idempotent(eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 6, 6, generator=g)
    x[:, :, 0] = 0.0  # coordinates on the box's faces
    x[:, :, 1] = 1.0
    v = torch.randn(16, 1, 6, 6, generator=g) * 0.8
    p = project_l1_box(v, x, eps)
    assert _inside(x + p, x, eps)
    assert torch.allclose(project_l1_box(p, x, eps), p, atol=1e-6)
    # optimality of a Euclidean projection onto a convex set C: <v - p, q - p> <= 0 for every q in C
    for _ in range(50):
        q = project_l1_box(torch.randn(16, 1, 6, 6, generator=g), x, eps)
        assert bool(((v - p).flatten(1) * (q - p).flatten(1)).sum(1).max() <= 1e-5)
    # a point already inside is its own projection
    small = project_l1_box(v, x, eps) * 0.5
    assert torch.allclose(project_l1_box(small, x, eps), small, atol=1e-7)


def test_projection_matches_the_reference_implementation() -> None:
    ref = pytest.importorskip("pyautoattack.autopgd_base")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 1, 8, 8, generator=g)
    v = torch.randn(32, 1, 8, 8, generator=g)
    for eps in (1.0, 5.0, 12.0):
        ours = project_l1_box(v, x, eps)
        theirs = v + ref.L1_projection(x, v, eps)
        assert torch.equal(ours, theirs), (eps, (ours - theirs).abs().max())  # the same arithmetic: bit for bit


# --- a linear classifier: the minimal l1 distance is known ------------------------------------


def _linear_case(n: int = 64, d: int = 100, c: int = 5, seed: int = 0):  # type: ignore[no-untyped-def]
    """A linear classifier, points in [0.4, 0.6]^d and their minimal l1 adversarial distance
    ``min_j (z_y - z_j) / ||w_y - w_j||_inf`` (one coordinate moved: the box does not bind below 0.4)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, c)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(c, d, generator=g))
        lin.bias.copy_(-0.5 * lin.weight.sum(1))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.4 + 0.2 * torch.rand(n, 1, 10, d // 10, generator=g)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = lin.weight.detach()
    dist = torch.full((n,), float("inf"))
    for j in range(c):
        dj = (z[torch.arange(n), y] - z[:, j]) / (w[y] - w[j]).abs().max(1).values
        dist = torch.where(y == j, dist, torch.minimum(dist, dj))
    return model, x, y, dist


def test_l1_standard_breaks_exactly_the_points_within_eps_of_a_linear_classifier() -> None:
    model, x, y, dist = _linear_case()
    eps = float(dist.median())
    assert float(dist.max()) < 0.4 or eps < 0.3  # the box does not bind at the radii that matter
    r = run_protocol("autoattack-standard", model, x, y, robrep.threat("l1", eps), seed=0)
    assert _inside(r.x_adv, x, eps)
    assert not bool(r.success[dist > eps].any()), "broke a point beyond its minimal l1 distance"
    assert bool(r.success[dist < 0.95 * eps].all()), dist[(dist < 0.95 * eps) & ~r.success]
    assert [s for s, _ in r.stages] == ["apgd-ce", "apgd-t"]


# --- a small trained MNIST model: conftest's ``mnist_model`` (the tiny CNN the linf/l2 agreement tests use)


def _images(te, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(te.head(n).batches(n)))


@pytest.mark.parametrize("stage", ["apgd-ce", "apgd-t"])
def test_l1_stages_inside_ball_and_box_and_deterministic(mnist_model, stage: str) -> None:
    model, te = mnist_model
    x, y = _images(te, 32)
    thr = robrep.threat("l1", 8.0)
    fn, kw = (apgd_cascade, {}) if stage == "apgd-ce" else (apgd_t, {"targets": 2})
    a = fn(model, x, y, thr, steps=STEPS, largereps=True, generator=torch.Generator().manual_seed(3), **kw)
    b = fn(model, x, y, thr, steps=STEPS, largereps=True, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a.success, b.success) and torch.equal(a.x_adv, b.x_adv)
    assert _inside(a.x_adv, x, 8.0)
    with torch.no_grad():
        assert bool((model(a.x_adv[a.success]).argmax(1) != y[a.success]).all())
    plain = fn(model, x, y, thr, steps=STEPS, generator=torch.Generator().manual_seed(3), **kw)
    assert _inside(plain.x_adv, x, 8.0)


def test_l1_robust_accuracy_non_increasing_in_eps(mnist_model) -> None:
    model, te = mnist_model
    x, y = _images(te, 40)
    accs = [robrep.evaluate(model, (x, y), threat=robrep.threat("l1", e), attack="autoattack-standard",
                            attack_kwargs={"steps": STEPS, "targets": TARGETS, "restarts": 1}).robust_accuracy
            for e in (2.0, 6.0, 12.0)]
    assert accs[0] >= accs[1] >= accs[2] and accs[0] > accs[2]


def _reference_l1(model, x, y, eps: float) -> dict[str, torch.Tensor]:
    """pyautoattack's standard for norm='L1' (APGD-CE with 5 restarts, APGD-T, both with the
    3 eps, 2 eps, eps schedule; then FAB-T and Square), each seeded with 0 and cascaded over the
    still-robust points as its ``AutoAttack`` does; robust flags after each stage."""
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm="L1", eps=eps, version="standard", seed=0, device="cpu")
    assert aa.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa.apgd.use_largereps and aa.apgd.n_restarts == 5 and aa.apgd_targeted.use_largereps
    assert aa.apgd_targeted.n_target_classes == 5
    for atk in (aa.apgd, aa.apgd_targeted):  # reduced budgets
        atk.n_iter = atk.n_iter_orig = STEPS
    aa.apgd_targeted.n_target_classes = TARGETS
    aa.fab.n_iter, aa.fab.n_target_classes, aa.square.n_queries = STEPS, TARGETS, 100
    with torch.no_grad():
        rob = model(x).argmax(1) == y
    out = {}
    for name, run in (("apgd-ce", aa.apgd.perturb), ("apgd-t", aa.apgd_targeted.perturb),
                      ("fab-t", lambda a, b: (setattr(aa.fab, "targeted", True), aa.fab.perturb(a, b))[1]),
                      ("square", aa.square.perturb)):
        idx = torch.nonzero(rob).flatten()
        if len(idx):
            adv = run(x[idx].clone(), y[idx].clone())
            with torch.no_grad():
                rob[idx[model(adv).argmax(1) != y[idx]]] = False
        out[name] = rob.clone()
    return out


def test_l1_standard_agrees_with_pyautoattack(mnist_model) -> None:
    pytest.importorskip("pyautoattack")
    model, te = mnist_model
    x, y = _images(te, 100)
    eps = 8.0
    ref = _reference_l1(model, x, y, eps)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = torch.nonzero(ok).flatten()
    r = run_protocol("autoattack-standard", model, x[idx], y[idx], robrep.threat("l1", eps), seed=0, steps=STEPS,
                     targets=TARGETS)
    ours = {}
    for name, broke in r.stages:
        rob = ok.clone()
        rob[idx] = ~broke
        ours[name] = rob
    for stage in ("apgd-ce", "apgd-t"):
        a, b = ours[stage].float().mean().item(), ref[stage].float().mean().item()
        assert abs(a - b) <= 0.003 + 1e-9, (stage, a, b)
        assert (ours[stage] == ref[stage]).float().mean() >= 0.98, stage
    # the reference's later stages (FAB-T and Square for l1, not in robrep's l1 standard) add nothing here
    final = ref["square"].float().mean().item()
    assert abs(ours["apgd-t"].float().mean().item() - final) <= 0.003 + 1e-9
    assert 0.1 < final < 0.9, "eps leaves both robust and broken points"


def test_protocols_without_l1_name_the_one_with_it(mnist_model) -> None:
    model, te = mnist_model
    x, y = _images(te, 4)
    for name in ("fast", "autoattack-plus"):
        with pytest.raises(InputError, match="linf and l2 .* for l1 use autoattack-standard"):
            run_protocol(name, model, x, y, robrep.threat("l1", 5.0))
