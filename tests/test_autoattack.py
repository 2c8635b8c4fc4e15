"""AutoAttack stages and protocols: agreement with the reference implementation (pyautoattack),
closed forms on linear classifiers, the flags, properties and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import robrep
from robrep.attacks import apgd_cascade, apgd_t, fab, fab_t, run_protocol, square
from robrep.attacks.fab import project_hyperplane_box
from robrep.attacks.flags import clean_below_robust_flag, eps_curve_flag
from robrep.errors import InputError

# reduced budgets that both implementations accept (the standard's are 100 steps, 9 targets, 5,000 queries)
STEPS, TARGETS, QUERIES = 10, 2, 100


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models here are tiny: one thread is faster than two that wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(te, n: int, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = next(iter(te.head(n).batches(n)))
    return x, y


def _reference_stages(model, x, y, norm: str, eps: float) -> dict[str, torch.Tensor]:
    """pyautoattack's attacks, cascaded over the still-robust points as its ``AutoAttack`` does,
    each seeded with 0; robust flags after each stage."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    n = {"linf": "Linf", "l2": "L2"}[norm]
    attacks = {
        "apgd-ce": APGDAttack(model, n_iter=STEPS, norm=n, eps=eps, seed=0, loss="ce", device="cpu"),
        "apgd-t": APGDAttack_targeted(model, n_iter=STEPS, norm=n, eps=eps, seed=0, n_target_classes=TARGETS, device="cpu"),
        "fab-t": FABAttack_PT(model, norm=n, n_iter=STEPS, eps=eps, seed=0, targeted=True, n_target_classes=TARGETS,
                              device="cpu"),
        "square": SquareAttack(model, norm=n, n_queries=QUERIES, eps=eps, seed=0, p_init=0.8, resc_schedule=False,
                               device="cpu"),
    }
    with torch.no_grad():
        rob = model(x).argmax(1) == y
    out = {}
    for name, atk in attacks.items():
        idx = torch.nonzero(rob).flatten()
        if len(idx):
            adv = atk.perturb(x[idx].clone(), y[idx].clone())
            with torch.no_grad():
                rob[idx[model(adv).argmax(1) != y[idx]]] = False
        out[name] = rob.clone()
    return out


def _robrep_stages(model, x, y, norm: str, eps: float) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = torch.nonzero(ok).flatten()
    r = run_protocol("autoattack-standard", model, x[idx], y[idx], robrep.threat(norm, eps), seed=0, steps=STEPS,
                     targets=TARGETS, queries=QUERIES)
    out = {}
    for name, broke in r.stages:
        rob = ok.clone()
        rob[idx] = ~broke
        out[name] = rob
    return out


@pytest.mark.parametrize("case", [("mnist", "linf", 0.3), ("fmnist", "linf", 0.1), ("fmnist", "l2", 1.5)])
def test_standard_agrees_with_pyautoattack_per_stage(request, case) -> None:
    pytest.importorskip("pyautoattack")
    name, norm, eps = case
    model, te = request.getfixturevalue(f"{name}_model")
    x, y = _images(te, 100, model)
    ref = _reference_stages(model, x, y, norm, eps)
    ours = _robrep_stages(model, x, y, norm, eps)
    accs = []
    for stage in ("apgd-ce", "apgd-t", "fab-t", "square"):
        a, b = ours[stage].float().mean().item(), ref[stage].float().mean().item()
        accs.append(a)
        assert abs(a - b) <= 0.003 + 1e-9, (stage, a, b)
        assert (ours[stage] == ref[stage]).float().mean() >= 0.98, stage
    assert accs[0] > 0.05, "the model is robust enough for the later stages to matter"


# --- closed forms on a linear classifier ----------------------------------------------------


def _linear_case(norm: str, n: int = 64, d: int = 100, c: int = 5, seed: int = 0):  # type: ignore[no-untyped-def]
    """A linear classifier, points in [0.4, 0.6]^d (the box binds only beyond distance 0.4) and
    their exact minimal adversarial distance ``min_j (z_y - z_j) / ||w_y - w_j||_*``."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, c)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(c, d, generator=g))
        lin.bias.copy_(-0.5 * lin.weight.sum(1))  # all logits equal at the box centre: boundaries nearby
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = (0.4 + 0.2 * torch.rand(n, 1, 10, d // 10, generator=g))
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = lin.weight.detach()
    q = 1 if norm == "linf" else 2
    dist = torch.full((n,), float("inf"))
    for j in range(c):
        dw = (w[y] - w[j]).norm(p=q, dim=1)
        dj = (z[torch.arange(n), y] - z[:, j]) / dw
        dist = torch.where(y == j, dist, torch.minimum(dist, dj))
    return model, x, y, dist


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_finds_the_minimal_distance_of_a_linear_classifier(norm: str) -> None:
    model, x, y, dist = _linear_case(norm)
    # a radius below every minimal distance: no target class stops the search, so the smallest
    # distance FAB-T finds over all C - 1 targets is compared with the closed form
    thr = robrep.threat(norm, 0.5 * float(dist.min()))
    r = fab_t(model, x, y, thr, steps=100, targets=4, early_exit=False)
    assert not r.success.any()
    assert torch.isfinite(r.loss).all()
    assert torch.all(r.loss >= dist * (1 - 1e-4))  # nothing closer than the minimum exists
    assert torch.all(r.loss <= dist * 1.01 + 1e-6), (r.loss / dist).max()  # 1e-6: float32 resolution near 0.5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_untargeted_fab_finds_the_minimal_distance_of_a_linear_classifier(norm: str) -> None:
    """Untargeted FAB follows the nearest linearized boundary: exact on a linear model."""
    model, x, y, dist = _linear_case(norm, seed=3)
    thr = robrep.threat(norm, 0.5 * float(dist.min()))
    r = fab(model, x, y, thr, steps=100, restarts=2, early_exit=False, generator=torch.Generator().manual_seed(0))
    assert not r.success.any()
    assert torch.all(r.loss >= dist * (1 - 1e-4))
    assert torch.all(r.loss <= dist * 1.01 + 1e-6), (r.loss / dist).max()  # 1e-6: float32 resolution near 0.5


def test_autoattack_plus_is_sound_and_complete_on_a_linear_classifier() -> None:
    model, x, y, dist = _linear_case("linf", seed=4)
    eps = float(dist.median())
    thr = robrep.threat("linf", eps)
    r = run_protocol("autoattack-plus", model, x, y, thr, seed=0, steps=20, restarts=1, targets=4, queries=30)
    assert [s for s, _ in r.stages] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert r.success[dist < 0.95 * eps].all() and not r.success[dist > eps].any()
    assert thr.contains(r.x_adv, x, tol=1e-5).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["apgd-t", "fab-t", "autoattack-standard", "fast"])
def test_white_box_attacks_break_exactly_the_points_within_eps(norm: str, attack: str) -> None:
    model, x, y, dist = _linear_case(norm, seed=1)
    eps = float(dist.median())
    thr = robrep.threat(norm, eps)
    kw = {"autoattack-standard": {"queries": 50, "seed": 0}, "fast": {"seed": 0, "targets": 4},
          "apgd-t": {"targets": 4}, "fab-t": {"targets": 4}}[attack]
    r = robrep.create_attack(attack, **kw)(model, x, y, thr, generator=torch.Generator().manual_seed(0))
    assert r.success[dist < 0.95 * eps].all()
    assert not r.success[dist > eps].any()
    assert thr.contains(r.x_adv, x, tol=1e-5).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_is_sound_and_breaks_most_points_within_eps(norm: str) -> None:
    """Cross-entropy is not the margin: its maximum in the ball may stay correctly classified, so
    APGD-CE alone is not complete (the targeted stages are); it must never break a point beyond
    its minimal distance."""
    model, x, y, dist = _linear_case(norm, seed=1)
    eps = float(dist.median())
    r = apgd_cascade(model, x, y, robrep.threat(norm, eps), generator=torch.Generator().manual_seed(0))
    assert not r.success[dist > eps].any()
    assert r.success[dist < 0.95 * eps].float().mean() >= 0.75


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_never_breaks_a_point_beyond_its_minimal_distance(norm: str) -> None:
    model, x, y, dist = _linear_case(norm, seed=2)
    eps = float(dist.median())
    thr = robrep.threat(norm, eps)
    r = square(model, x, y, thr, queries=300, generator=torch.Generator().manual_seed(0))
    assert not r.success[dist > eps].any()
    assert r.success[dist < 0.5 * eps].float().mean() > 0.5  # and it does find the easy ones
    assert thr.contains(r.x_adv, x, tol=1e-5).all()


def test_square_query_plan_is_the_sequential_draws() -> None:
    """Square (linf) draws all its queries at once; the reference draws per query the row, the
    column and one sign per channel: the same generator must give the same windows and signs."""
    from robrep.attacks.square import _linf_queries, _Rng, p_selection

    c, h, w, n = 3, 28, 28, 600
    plan = _linf_queries(n, 0.8, c, h, w, _Rng(torch.Generator().manual_seed(5), torch.device("cpu")))
    rng = _Rng(torch.Generator().manual_seed(5), torch.device("cpu"))
    for i, (s, vh, vw, sg) in enumerate(plan):
        side = min(max(int(round(math.sqrt(p_selection(0.8, i) * c * h * w / c))), 1), min(h, w))
        assert (s, vh, vw) == (side, rng.randint(0, h - side), rng.randint(0, w - side)), i
        assert sg == rng.sign([c, 1, 1]).flatten().tolist(), i
    assert len({s for s, *_ in plan}) > 3  # the window schedule shrinks along the way


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hyperplane_box_projection_is_minimal_and_feasible(norm: str) -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.rand(50, 30, generator=g)
    w = torch.randn(50, 30, generator=g)
    b = (w * p).sum(1) + 0.3 * torch.randn(50, generator=g)
    d = project_hyperplane_box(p, w, b, norm)
    assert torch.allclose((w * (p + d)).sum(1), b, atol=1e-4)
    assert ((p + d) >= -1e-6).all() and ((p + d) <= 1 + 1e-6).all()
    # without the box the minimal step is |c| / ||w||_*; the box can only make it longer
    c = (b - (w * p).sum(1)).abs()
    q = 1 if norm == "linf" else 2
    free = c / w.norm(p=q, dim=1)
    nd = d.abs().max(1)[0] if norm == "linf" else d.norm(dim=1)
    assert (nd >= free - 1e-5).all()
    unbound = ((p + d) > 1e-6).all(1) & ((p + d) < 1 - 1e-6).all(1)
    assert torch.allclose(nd[unbound], free[unbound], rtol=1e-4)


def _direct_projection(p: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """The minimal-norm step to ``w . x = b`` inside [0,1], row by row in float64 from the
    definition: scan the breakpoints of ``g(lam) = w . d(lam)`` and interpolate on the segment
    that reaches ``c`` (to the box corner when none does)."""
    out = torch.zeros_like(p, dtype=torch.float64)
    for r in range(p.shape[0]):
        pr, wr = p[r].double(), w[r].double()
        c = float(b[r]) - float((wr * pr).sum())
        if c == 0:
            continue
        s = 1.0 if c > 0 else -1.0
        wr, c = wr * s, c * s
        cap = torch.where(wr > 0, 1 - pr, pr).clamp_min(0)
        aw = wr.abs()

        def step(lam: float) -> torch.Tensor:
            return torch.minimum(torch.full_like(cap, lam), cap) if norm == "linf" else torch.minimum(lam * aw, cap)

        brk = cap if norm == "linf" else torch.where(aw > 0, cap / aw.clamp_min(1e-300), torch.full_like(cap, 1e12))
        lam = math.inf
        lo = 0.0
        for hi in sorted(set(brk.tolist())):
            if float((aw * step(hi)).sum()) >= c:  # the root is in [lo, hi]: g is linear there
                g_lo = float((aw * step(lo)).sum())
                slope = float((aw if norm == "linf" else aw * aw)[brk > lo].sum())
                lam = lo + (c - g_lo) / slope
                break
            lo = hi
        out[r] = torch.sign(wr) * (cap if math.isinf(lam) else step(lam))
    return out


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hyperplane_box_projection_equals_the_direct_solution_where_the_box_binds(norm: str) -> None:
    """Rows far from the hyperplane (many coordinates at the box, some rows unable to reach it),
    images with saturated pixels and zero weights: the projection equals a float64 scan of the
    breakpoints, and the sorting solver (used for rows Newton has not settled) gives the same radius."""
    from robrep.attacks.fab import _radius_by_sorting

    g = torch.Generator().manual_seed(1)
    p = torch.rand(40, 60, generator=g)
    p[p < 0.25] = 0.0
    p[p > 0.85] = 1.0
    w = torch.randn(40, 60, generator=g)
    w[:, :5] = 0.0
    scale = torch.logspace(-2, 1.5, 40)
    b = (w * p).sum(1) + scale * torch.randn(40, generator=g).sign()
    d = project_hyperplane_box(p, w, b, norm)
    ref = _direct_projection(p, w, b, norm)
    assert torch.allclose(d.double(), ref, atol=2e-5), (d.double() - ref).abs().max()
    reached = torch.isclose((w * (p + d)).sum(1), b, atol=1e-4)
    assert 5 < int(reached.sum()) < 40  # both kinds of row are in the test
    # the sorting solver's radius reproduces the same step
    c = b - (w * p).sum(1)
    ws = w * torch.where(c >= 0, 1.0, -1.0)[:, None]
    cap = torch.where(ws > 0, 1.0 - p, p).clamp_min(0.0)
    aw = ws.abs()
    brk = cap if norm == "linf" else torch.where(aw > 0, cap / aw.clamp_min(1e-30), torch.full_like(cap, 1e12))
    lam = _radius_by_sorting(brk, aw if norm == "linf" else aw * aw, aw * cap, c.abs())
    mag = torch.minimum(lam[:, None], cap) if norm == "linf" else torch.where(aw > 0, torch.minimum(lam[:, None] * aw, cap), 0.0)
    assert torch.allclose((torch.sign(ws) * mag).double(), ref, atol=2e-5)


# --- flags ---------------------------------------------------------------------------------


class _Noisy(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + 0.5 * torch.randn(x.shape[0], 10)


class _Quantized(nn.Module):
    """Rounds the input to 8 bits first (the clean images are 8-bit already): same predictions,
    zero input gradient everywhere."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(torch.round(x * 255) / 255)


def test_randomized_model_is_refused_by_deterministic_protocols_and_flagged_by_rand(mnist_model) -> None:
    model, te = mnist_model
    x, y = _images(te, 40, model)
    noisy = _Noisy(model)
    with pytest.raises(InputError, match="randomized-output.*autoattack-rand"):
        robrep.evaluate(noisy, (x, y), threat=robrep.threat("linf", 0.3), attack="autoattack-standard")
    res = robrep.evaluate(noisy, (x, y), threat=robrep.threat("linf", 0.3), attack="autoattack-rand",
                          attack_kwargs={"steps": 5, "eot_iter": 2})
    assert "randomized-output" in [f["code"] for f in res.flags]


def test_quantized_model_raises_the_gradient_and_black_box_flags(mnist_model) -> None:
    model, te = mnist_model
    x, y = _images(te, 100, model)
    res = robrep.evaluate(_Quantized(model), (x, y), threat=robrep.threat("linf", 0.3), attack="autoattack-standard",
                          attack_kwargs={"steps": 5, "targets": 1, "queries": 200})
    codes = [f["code"] for f in res.flags]
    assert "zero-gradients" in codes
    assert "black-box-beats-white-box" in codes, res.stages
    assert res.stages["square"] < res.stages["fab-t"] - 0.002
    for f in res.flags:
        assert f["meaning"] and f["action"]


@pytest.mark.parametrize("case", [("mnist", "linf", 0.3), ("fmnist", "linf", 0.1)])
def test_plain_trained_models_raise_no_flag(request, case) -> None:
    name, norm, eps = case
    model, te = request.getfixturevalue(f"{name}_model")
    x, y = _images(te, 100, model)
    res = robrep.evaluate(model, (x, y), threat=robrep.threat(norm, eps), attack="autoattack-standard",
                          attack_kwargs={"steps": STEPS, "targets": TARGETS, "queries": QUERIES})
    assert res.flags == (), res.flags
    assert list(res.stages) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    vals = list(res.stages.values())
    assert all(b <= a for a, b in zip(vals, vals[1:]))
    assert res.robust_accuracy == pytest.approx(vals[-1])
    assert eps_curve_flag([(0.0, res.clean_accuracy), (eps, res.robust_accuracy)]) is None


def test_eps_and_clean_flags_fire_on_their_patterns_only() -> None:
    f = eps_curve_flag([(0.0, 0.9), (0.1, 0.5), (0.2, 0.6)])
    assert f is not None and f.code == "robust-rises-with-eps" and f.value == pytest.approx(0.1)
    assert eps_curve_flag([(0.0, 0.9), (0.1, 0.5), (0.2, 0.5)]) is None
    f = clean_below_robust_flag({0: 0.5, 1: 0.9}, {0: 0.6, 1: 0.8})
    assert f is not None and f.code == "clean-below-robust" and f.value == pytest.approx(0.1)
    assert clean_below_robust_flag({0: 0.5}, {0: 0.5}) is None


# --- properties ----------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_protocols_deterministic_under_a_seed_and_inside_the_ball(mnist_model, norm: str) -> None:
    model, te = mnist_model
    x, y = _images(te, 30, model)
    thr = robrep.threat(norm, 0.3 if norm == "linf" else 1.5)
    a = run_protocol("autoattack-standard", model, x, y, thr, seed=3, steps=5, targets=2, queries=40)
    b = run_protocol("autoattack-standard", model, x, y, thr, seed=3, steps=5, targets=2, queries=40)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert thr.contains(a.x_adv, x, tol=1e-6).all()
    assert a.x_adv.min() >= 0 and a.x_adv.max() <= 1
    with torch.no_grad():
        assert torch.equal(model(a.x_adv).argmax(1) != y, a.success)  # every success is a real misclassification


def test_robust_accuracy_non_increasing_in_eps(mnist_model) -> None:
    model, te = mnist_model
    x, y = _images(te, 60, model)
    accs = [robrep.evaluate(model, (x, y), threat=robrep.threat("linf", e), attack="autoattack-standard",
                            attack_kwargs={"steps": 5, "targets": 2, "queries": 30}).robust_accuracy
            for e in (0.05, 0.15, 0.3)]
    assert all(b <= a for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0]


def test_early_exit_keeps_every_verdict(mnist_model) -> None:
    model, te = mnist_model
    x, y = _images(te, 40, model)
    thr = robrep.threat("linf", 0.3)
    for fn in (apgd_cascade, apgd_t):
        kw = {"targets": 2} if fn is apgd_t else {}
        a = fn(model, x, y, thr, steps=10, early_exit=True, generator=torch.Generator().manual_seed(0), **kw)
        b = fn(model, x, y, thr, steps=10, early_exit=False, generator=torch.Generator().manual_seed(0), **kw)
        assert torch.equal(a.success, b.success)
    a = fab_t(model, x, y, thr, steps=10, targets=2, early_exit=True)
    b = fab_t(model, x, y, thr, steps=10, targets=2, early_exit=False)
    assert torch.equal(a.success, b.success)


# --- mixed precision: bf16 stages, float32 verdicts ------------------------------------------

BF16 = robrep.runtime.bf16_supported("cpu")
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no native bf16 (AVX512-BF16/AMX): auto runs fp32")


@needs_bf16
@pytest.mark.parametrize("proto", ["autoattack-standard", "fast"])
def test_auto_precision_verdicts_are_float32_and_as_strong_as_fp32(mnist_model, proto: str) -> None:
    """On a trained MNIST CNN (linf 0.3, 100 images): every point the bf16 protocol calls broken is
    misclassified by the float32 model inside the ball, and its robust accuracy is within 0.3 points of
    float32's (with 100 images: no image more robust)."""
    model, te = mnist_model
    x, y = _images(te, 100, model)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = torch.nonzero(ok).flatten()
    thr = robrep.threat("linf", 0.3)
    kw = dict(seed=0, steps=STEPS, targets=TARGETS, queries=QUERIES)
    f32 = run_protocol(proto, model, x[idx], y[idx], thr, **kw)
    auto = run_protocol(proto, model, x[idx], y[idx], thr, precision="auto", **kw)
    assert f32.precision == "fp32" and auto.precision == "bf16"
    assert auto.passes["fp32_recheck_grad"] > 0  # the float32 re-check ran
    with torch.no_grad():
        pred = model(auto.x_adv).argmax(1)  # the float32 model itself, outside the protocol
    assert torch.equal(auto.success, pred != y[idx])
    assert bool(thr.contains(auto.x_adv, x[idx], tol=1e-6).all()) and auto.x_adv.min() >= 0 and auto.x_adv.max() <= 1
    n = len(x)
    rob32, rob_auto = (int(ok.sum() - r.success.sum()) / n for r in (f32, auto))
    assert 0.05 < rob32 < 0.9  # the comparison discriminates
    assert rob_auto <= rob32 + 0.003, (rob_auto, rob32)
    for (_, b32), (_, ba) in zip(f32.stages, auto.stages):  # and after every stage, within a few images
        assert int(b32.sum()) - int(ba.sum()) <= 3


class _NearTie(nn.Module):
    """Four logits ``(100, 100 + d(x), 0, 0)``, ``d(x) = c (mean(x) - m0)``: class 1 wins in float32 iff
    ``mean(x) > m0``; bf16 rounds 100 and 100 + d to one value (spacing 0.5 there) and argmax reads 0."""

    def __init__(self, m0: float, c: float = 0.4) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 4)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[1].fill_(c / (28 * 28))
            self.fc.bias.copy_(torch.tensor([100.0, 100.0 - c * m0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@needs_bf16
def test_bf16_stage_success_refuted_in_float32_is_not_counted() -> None:
    from robrep.attacks.precision import _Bf16Copy

    x = torch.full((4, 1, 28, 28), 0.5)
    y = torch.ones(4, dtype=torch.long)  # float32: class 1 everywhere in the ball (mean(x) >= 0.45 > m0)
    m = _NearTie(m0=0.2).eval()
    thr = robrep.threat("linf", 0.05)
    kw = dict(seed=0, steps=3, targets=2, queries=20)
    assert run_protocol("autoattack-standard", _Bf16Copy(m), x, y, thr, **kw).success.all()  # bf16 verdicts: all "broken"
    res = run_protocol("autoattack-standard", m, x, y, thr, precision="bf16", **kw)
    assert not res.success.any() and res.precision == "bf16"
    assert not run_protocol("autoattack-standard", m, x, y, thr, **kw).success.any()  # float32 agrees


@needs_bf16
def test_bf16_stage_miss_is_caught_by_the_float32_recheck() -> None:
    from robrep.attacks.precision import _Bf16Copy

    x = torch.full((4, 1, 28, 28), 0.5)
    y = torch.zeros(4, dtype=torch.long)  # float32: broken iff mean(x_adv) > 0.52, within eps 0.1 of x
    m = _NearTie(m0=0.52).eval()
    thr = robrep.threat("linf", 0.1)
    from robrep.attacks.protocols import Protocol, get_protocol

    kw = dict(seed=0, steps=3, targets=2)
    grad = Protocol("fast-gradient-stages", "1", get_protocol("fast").stages[:2])  # APGD-CE, APGD-T: argmax verdicts
    assert run_protocol(grad, m, x, y, thr, **kw).success.all()
    assert not run_protocol(grad, _Bf16Copy(m), x, y, thr, **kw).success.any()  # bf16 ties hide every success
    res = run_protocol(grad, m, x, y, thr, precision="bf16", **kw)
    assert res.success.all() and dict(res.stages)["apgd-ce"].all()  # caught at the first stage
    with torch.no_grad():
        assert (m(res.x_adv).argmax(1) != y).all()
    assert bool(thr.contains(res.x_adv, x, tol=1e-6).all())
    assert not run_protocol(grad, m, x, y, thr, precision="bf16", recheck_steps=0, **kw).success.any()


def test_precision_fp32_is_the_protocol_and_auto_keeps_the_stages(mnist_model, monkeypatch) -> None:
    model, te = mnist_model
    x, y = _images(te, 30, model)
    thr = robrep.threat("linf", 0.3)
    kw = dict(steps=5, targets=2, queries=40)
    a = run_protocol("autoattack-standard", model, x, y, thr, seed=1, **kw)
    b = robrep.create_attack("autoattack-standard", precision="fp32")(model, x, y, thr, seed=1, **kw)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success) and a.passes == b.passes
    monkeypatch.setattr(robrep.runtime, "bf16_supported", lambda device="cpu": False)  # auto: fp32 on such hardware
    c = robrep.create_attack("autoattack-standard", precision="auto")(model, x, y, thr, seed=1, **kw)
    assert torch.equal(a.x_adv, c.x_adv) and c.precision == "fp32" and [s for s, _ in c.stages] == [s for s, _ in a.stages]
    res = robrep.evaluate(model, (x, y), threat=thr, attack="fast", attack_kwargs={"steps": 5, "precision": "auto"})
    assert res.attack["precision"] == "auto" and res.attack["precision_ran"] == "fp32"
    assert list(res.stages) == ["clean", "apgd-ce", "apgd-t", "square"]
    with pytest.raises(InputError, match="recheck_steps"):
        run_protocol("fast", model, x, y, thr, precision="auto", recheck_steps=-1)


def test_selecting_stage_runs_on_the_points_closest_to_the_boundary(monkeypatch) -> None:
    """A stage with ``select`` attacks only that share of the points still robust, those with the
    largest margin (other logit minus true logit) reached so far; here the earlier stage cannot move
    the points (eps tiny), so the order is the clean margins' order, known in closed form."""
    from robrep.attacks import protocols
    from robrep.attacks.pgd import AttackResult

    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).eval()
    n = 12
    x = torch.zeros(n, 1, 2, 2)
    x.view(n, 4)[:, 0] = 0.9  # class 0 everywhere, margin x1 - 0.9: spread apart by 0.05
    x.view(n, 4)[:, 1] = torch.randperm(n).float() * 0.05 + 0.1
    y = torch.zeros(n, dtype=torch.long)
    seen = []

    def recorder(model, x, target, threat, **kw):
        seen.append(x.clone())
        return AttackResult(x.clone(), torch.zeros(len(x)), torch.zeros(len(x), dtype=torch.bool), 0)

    monkeypatch.setitem(protocols.STAGE_ATTACKS, "recorder", recorder)
    proto = protocols.Protocol("select-test", "1", (("apgd-ce", "apgd-ce", {"steps": 3}),
                                                    ("bb", "recorder", {"select": 0.25})))
    r = run_protocol(proto, model, x, y, robrep.threat("linf", 1e-4), seed=0)
    assert not r.success.any()
    (got,) = seen
    want = x[x.view(n, 4)[:, 1].argsort(descending=True)[:3]]  # ceil(0.25 * 12) = 3 largest margins
    assert sorted(got.view(3, 4)[:, 1].tolist()) == sorted(want.view(3, 4)[:, 1].tolist())
    assert any("ran only on the 25 % of the points still robust" in note for note in r.notes)


# --- bad input -----------------------------------------------------------------------------


def test_target_count_above_classes_is_clipped_with_a_note(mnist_model) -> None:
    model, te = mnist_model
    x, y = _images(te, 20, model)
    r = run_protocol("autoattack-standard", model, x, y, robrep.threat("linf", 0.3), seed=0, steps=3, targets=15,
                     queries=10)
    assert any("15 target classes" in n and "used 9" in n for n in r.notes)


def test_bad_budgets_and_non_finite_logits_raise(mnist_model) -> None:
    model, te = mnist_model
    x, y = _images(te, 10, model)
    thr = robrep.threat("linf", 0.3)
    with pytest.raises(InputError, match="query budget"):
        square(model, x, y, thr, queries=0)
    with pytest.raises(InputError, match="query budget"):
        run_protocol("autoattack-standard", model, x, y, thr, queries=-5)

    class NaNModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = model

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.base(t) * float("nan")

    with pytest.raises(InputError, match="non-finite logits"):
        robrep.evaluate(NaNModel(), (x, y), threat=thr, attack="autoattack-standard")
    with pytest.raises(InputError, match="linf and l2"):
        run_protocol("fast", model, x, y, robrep.threat("l1", 5.0))


def test_cli_bad_input_is_one_line_exit_2(tmp_path, mnist_model, capsys) -> None:
    from robrep.cli import main

    model, _ = mnist_model
    ck = tmp_path / "m.safetensors"
    rm = robrep.create_model("linear", num_classes=10, input_shape=(1, 28, 28))
    robrep.save_model(ck, rm, {"dataset": "mnist"})
    for argv in (["eval", "--checkpoint", str(ck), "--eps", "8", "--attack", "autoattack-standard", "--n", "5"],
                 ["eval", "--checkpoint", str(ck), "--eps", "0.3", "--attack", "autoattack-standard", "--queries", "0",
                  "--n", "5"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0], err


def test_cli_eval_protocol_records_its_precision(tmp_path, capsys, mnist_test) -> None:
    import json

    from robrep.cli import main

    torch.manual_seed(0)
    ck = tmp_path / "m.safetensors"
    robrep.save_model(ck, robrep.create_model("linear", num_classes=10, input_shape=(1, 28, 28)), {"dataset": "mnist"})
    for prec in ("auto", "fp32"):
        assert main(["eval", "--checkpoint", str(ck), "--eps", "0.1", "--attack", "fast", "--steps", "2", "--n", "8",
                     "--precision", prec, "--threads", "1", "--quiet", "--json"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        if prec == "auto":
            assert out["attack"]["precision"] == "auto" and out["attack"]["precision_ran"] == ("bf16" if BF16 else "fp32")
        else:  # fp32: the protocol as it always ran, nothing added to its record
            assert out["attack"] == {"name": "fast", "steps": 2, "protocol_version": "2"}
        assert list(out["stages"]) == ["clean", "apgd-ce", "apgd-t", "square"]
