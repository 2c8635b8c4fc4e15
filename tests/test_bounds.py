"""IBP / CROWN bound propagation (robrep.certify.bound_propagation): closed forms, soundness, tightness."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robrep.attacks import pgd
from robrep.certify.bound_propagation import (
    BoxSet,
    LpBall,
    ThreatBall,
    ball,
    box,
    compute_bounds,
    margin_spec,
    to_sequential,
)
from robrep.errors import InputError
from robrep.models import create_model
from robrep.threats import threat


def _sample_box(lo: torch.Tensor, up: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k uniform samples (with the corners' extremes mixed in) from each box: (N, k, ...)."""
    u = torch.rand((lo.shape[0], k, *lo.shape[1:]), generator=g)
    u[:, : k // 4] = (u[:, : k // 4] > 0.5).float()  # vertices, where ReLU nets attain extremes
    return lo.unsqueeze(1) + u * (up - lo).unsqueeze(1)


def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)  # input (N, 2, 8, 8)
    bn = nn.BatchNorm2d(4)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),  # overlapping, padded
        nn.Conv2d(4, 4, 3, padding=1), bn, nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 12), nn.ReLU(), nn.Linear(12, 5),
    ).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()  # negative scales too
        bn.bias.normal_()
    return net


@pytest.mark.parametrize("p", [math.inf, 2.0, 1.0])
def test_linear_layer_closed_form(p: float) -> None:
    # bounds of Wx + b over an l_p ball are exactly Wx0 + b +- eps ||W_j||_q (q the dual norm)
    torch.manual_seed(0)
    lin = nn.Linear(7, 4)
    x0 = torch.randn(3, 7)
    eps = 0.3
    q = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[p]
    w = lin.weight.detach()
    rad = eps * (w.abs().amax(1) if q == math.inf else w.norm(p=q, dim=1))
    centre = lin(x0).detach()
    for method in ("ibp", "crown"):
        b = compute_bounds(nn.Sequential(lin), LpBall(x0, eps, p), method=method)
        torch.testing.assert_close(b.lower, centre - rad, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.upper, centre + rad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("p", [math.inf, 2.0, 1.0])
def test_threat_ball_with_box_linear_closed_form(p: float) -> None:
    # The threat model's set is ball AND [0,1] box. On a linear layer the bound over it is the
    # smaller of the dual-norm bound Wx0 + b +- eps ||W_j||_q and the bound over the clipped
    # bounding box W c + b +- |W| r (c, r: centre and half-width of clip(x0 -+ eps, 0, 1)); for
    # linf the clipped box is the set itself, so the bound is exact.
    torch.manual_seed(0)
    lin = nn.Linear(7, 4)
    x0 = torch.rand(3, 7)
    x0[:, :3] = torch.tensor([0.0, 0.02, 1.0])  # coordinates where the box binds
    eps = 0.3 if p == math.inf else 0.6
    q = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[p]
    w, b0 = lin.weight.detach(), lin.bias.detach()
    rad = eps * (w.abs().amax(1) if q == math.inf else w.norm(p=q, dim=1))
    centre = lin(x0).detach()
    lo_box, up_box = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    c, r = (lo_box + up_box) / 2, (up_box - lo_box) / 2
    box_lo, box_up = c @ w.T + b0 - r @ w.abs().T, c @ w.T + b0 + r @ w.abs().T
    norm = {math.inf: "linf", 2.0: "l2", 1.0: "l1"}[p]
    inp = ball(threat(norm, eps), x0)
    assert isinstance(inp, ThreatBall) and inp.clip and inp.eps == eps and inp.p == p
    for method in ("ibp", "crown"):
        bd = compute_bounds(nn.Sequential(lin), inp, method=method)
        torch.testing.assert_close(bd.lower, torch.maximum(centre - rad, box_lo), atol=1e-5, rtol=0)
        torch.testing.assert_close(bd.upper, torch.minimum(centre + rad, box_up), atol=1e-5, rtol=0)
    if p == math.inf:
        torch.testing.assert_close(bd.lower, box_lo, atol=1e-5, rtol=0)
    # the plain ball (the former LpBall) is never tighter
    plain = compute_bounds(nn.Sequential(lin), LpBall(x0, eps, p), method="crown")
    assert (plain.lower <= bd.lower + 1e-6).all() and (plain.upper >= bd.upper - 1e-6).all()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_one_threat_object_for_attack_and_bounds(norm: str, eps: float) -> None:
    # the same ThreatModel drives PGD and the certificate: no attack finds a margin below the
    # certified lower bound, random points of the set stay inside the bounds, and the [0,1] box
    # changes the bounds (CROWN's adaptive ReLU slopes make "tighter everywhere" no theorem for
    # nets; for a linear layer it is, see the closed form above)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 4, 4, generator=g)
    x[:, :, 0] = 0.0  # a row on the box's edge
    y = torch.tensor([0, 1, 2, 0])
    thr = threat(norm, eps)
    spec = margin_spec(3, y)
    b = compute_bounds(net, ball(thr, x), spec, "crown", crown_max_neurons=10_000)
    plain = compute_bounds(net, ball(thr, x, clip=False), spec, "crown", crown_max_neurons=10_000)
    assert not torch.allclose(b.lower, plain.lower)  # the box binds somewhere
    assert (b.lower > plain.lower + 1e-6).any() and (b.lower <= b.upper).all()

    def worst_margin(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # maximize -min margin
        m = out.gather(1, target[:, None]) - out
        m = m.masked_fill(torch.nn.functional.one_hot(target, 3).bool(), float("inf"))
        return -m.min(1).values

    adv = pgd(net, x, y, thr, steps=50, loss=worst_margin, generator=torch.Generator().manual_seed(0)).x_adv
    assert bool(thr.contains(adv, x).all())
    with torch.no_grad():
        pts = torch.cat([adv, *[thr.random_start(x, torch.Generator().manual_seed(k)) for k in range(50)]])
        val = torch.einsum("nso,no->ns", spec.repeat(51, 1, 1), net(pts)).view(51, 4, -1)
    assert (val >= b.lower.unsqueeze(0) - 1e-5).all() and (val <= b.upper.unsqueeze(0) + 1e-5).all()


def test_threat_ball_refuses_bad_input() -> None:
    with pytest.raises(InputError, match="clip=False"):
        ball(threat("l2", 0.1), torch.full((1, 3), 2.0))
    with pytest.raises(InputError, match="ThreatModel"):
        ThreatBall(0.1, torch.zeros(1, 3))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="p must be"):
        LpBall(torch.zeros(1, 3), 0.1, 3.0)


def test_relu_one_neuron_closed_form() -> None:
    # y = relu(x) - relu(x - 1) (a clip) on [-1, 2]; the exact range is [0, 1]
    lin1 = nn.Linear(1, 2)
    lin2 = nn.Linear(2, 1)
    with torch.no_grad():
        lin1.weight[:] = torch.tensor([[1.0], [1.0]])
        lin1.bias[:] = torch.tensor([0.0, -1.0])
        lin2.weight[:] = torch.tensor([[1.0, -1.0]])
        lin2.bias.zero_()
    net = nn.Sequential(lin1, nn.ReLU(), lin2)
    inp = box(torch.tensor([[-1.0]]), torch.tensor([[2.0]]))
    ib = compute_bounds(net, inp, method="ibp")
    # IBP: relu ranges [0, 2] and [0, 1]: y in [0 - 1, 2 - 0]
    assert ib.lower.item() == pytest.approx(-1.0) and ib.upper.item() == pytest.approx(2.0)
    cr = compute_bounds(net, inp, method="crown")
    # CROWN by hand: relu(x) <= 2(x+1)/3, relu(x) >= x (u >= -l), relu(x-1) in [0, (x+1)/3 ... ]
    # upper: 2(x+1)/3 - 0 at x = 2 -> 2; lower: relu(x) >= 0 (u=2 >= -l=1 -> slope 1: x) minus
    # relu(x-1) <= (x-1+2)/3 * 1 = (x+1)/3: x - (x+1)/3 = (2x - 1)/3 -> min at x=-1: -1
    assert cr.lower.item() == pytest.approx(-1.0, abs=1e-6)
    assert cr.upper.item() == pytest.approx(2.0, abs=1e-6)
    # finer input boxes never give looser bounds and always contain the true range [0, 1]
    b2 = compute_bounds(net, box(torch.tensor([[-1.0], [0.5]]), torch.tensor([[0.5], [2.0]])), method="crown")
    assert (b2.lower <= torch.tensor([[0.0], [0.5]]) + 1e-6).all() and (b2.upper >= torch.tensor([[0.5], [1.0]]) - 1e-6).all()
    assert b2.lower.min() >= cr.lower.min() - 1e-6 and b2.upper.max() <= cr.upper.max() + 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_are_sound_on_samples(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    net = _net(seed)
    x = torch.rand(3, 2, 8, 8, generator=g)
    eps = 0.05
    inp = box(x - eps, x + eps)
    spec = margin_spec(5, torch.tensor([0, 3, 4]))
    xs = _sample_box(x - eps, x + eps, 1000, g)
    with torch.no_grad():
        out = net(xs.reshape(-1, 2, 8, 8)).view(3, 1000, 5)
    val = torch.einsum("nso,nko->nks", spec, out)
    for method, kw in [("ibp", {}), ("crown", {"crown_max_neurons": 0}), ("crown", {"crown_max_neurons": 10_000})]:
        b = compute_bounds(net, inp, spec, method, **kw)
        assert (val >= b.lower.unsqueeze(1) - 1e-5).all(), (method, kw)
        assert (val <= b.upper.unsqueeze(1) + 1e-5).all(), (method, kw)


def test_crown_at_least_as_tight_as_ibp_on_random_nets() -> None:
    gaps = []
    for seed in range(6):
        g = torch.Generator().manual_seed(100 + seed)
        net = _net(100 + seed)
        x = torch.rand(2, 2, 8, 8, generator=g)
        inp = box(x - 0.02, x + 0.02)
        spec = margin_spec(5, torch.tensor([1, 2]))
        ib = compute_bounds(net, inp, spec, "ibp")
        cr = compute_bounds(net, inp, spec, "crown", crown_max_neurons=10_000)
        assert (cr.lower >= ib.lower - 1e-5).all()
        assert (cr.upper <= ib.upper + 1e-5).all()
        gaps.append(float((cr.lower - ib.lower).mean()))
    assert min(gaps) > 0  # and strictly tighter on average for every net


def test_zero_width_box_gives_exact_output() -> None:
    net = _net(5)
    x = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = net(x).detach()
    for method in ("ibp", "crown"):
        b = compute_bounds(net, box(x, x), method=method)
        torch.testing.assert_close(b.lower, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.upper, ref, atol=1e-5, rtol=0)


def test_union_of_boxes_between_per_box_and_hull_bounds() -> None:
    # implicit splitting: the bound over a union of K boxes contains every box's own bound and is
    # inside the bound over the hull of the boxes (strictly tighter for a linear first layer)
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    c = torch.rand(1, 4, 8, generator=g)
    r = 0.05 * torch.rand(1, 4, 8, generator=g)
    union = BoxSet(c - r, c + r)
    hull = box((c - r).amin(1), (c + r).amax(1))
    for method in ("ibp", "crown"):
        bu = compute_bounds(net, union, method=method)
        bh = compute_bounds(net, hull, method=method)
        assert (bu.lower >= bh.lower - 1e-6).all() and (bu.upper <= bh.upper + 1e-6).all()
        assert float((bu.upper - bu.lower).sum()) < float((bh.upper - bh.lower).sum())
        for k in range(4):
            bk = compute_bounds(net, box(c[:, k] - r[:, k], c[:, k] + r[:, k]), method=method)
            assert (bu.lower <= bk.lower + 1e-6).all() and (bu.upper >= bk.upper - 1e-6).all()
        xs = (c - r).unsqueeze(2) + torch.rand(1, 4, 250, 8, generator=g) * (2 * r).unsqueeze(2)
        out = net(xs.view(-1, 8)).detach()
        assert (out >= bu.lower - 1e-5).all() and (out <= bu.upper + 1e-5).all()


@pytest.mark.parametrize("arch", ["small-cnn", "mnist-cnn", "mlp", "linear"])
def test_to_sequential_gives_identical_logits(arch: str) -> None:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, input_shape=(1, 12, 12), mean=(0.3,), std=(0.2,)).eval()
    seq = to_sequential(model)
    x = torch.rand(4, 1, 12, 12)
    torch.testing.assert_close(seq(x), model(x), atol=0, rtol=0)
    # and the verifier accepts the RobrepModel directly
    b = compute_bounds(model, box(x, x), method="crown")
    torch.testing.assert_close(b.lower, model(x).detach(), atol=1e-4, rtol=0)


def test_bad_inputs_raise_input_error() -> None:
    with pytest.raises(InputError, match="does not support"):
        compute_bounds(nn.Sequential(nn.Tanh()), box(torch.zeros(1, 2), torch.ones(1, 2)))
    with pytest.raises(InputError, match="eval mode"):
        compute_bounds(nn.Sequential(nn.BatchNorm1d(2).train()), box(torch.zeros(1, 2), torch.ones(1, 2)))
    with pytest.raises(InputError, match="exceeds"):
        box(torch.ones(1, 2), torch.zeros(1, 2))
    with pytest.raises(InputError, match="method"):
        compute_bounds(nn.Sequential(nn.Linear(2, 2)), box(torch.zeros(1, 2), torch.ones(1, 2)), method="lp")
    with pytest.raises(InputError, match="cannot convert"):
        to_sequential(nn.LSTM(2, 2))
