"""Tests of robrep.visualize (Engstrom et al. 2019): closed forms on linear / identity
representations, independent references (literal SSIM loop, scikit-image, scipy), properties."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robrep
from robrep.errors import InputError
from robrep.visualize import (
    FakeReLU,
    add_feature,
    brittleness,
    explain_misclassification,
    feature_addition_loss,
    gaussian_window,
    image_l2,
    input_gradient,
    interpolate,
    invert,
    mean_interval,
    noise_seed,
    optimize_inputs,
    saliency,
    smoothgrad,
    ssim,
    top_activating,
    visualize_features,
)

torch.set_num_threads(1)


class Flat(nn.Module):
    """Identity representation: R(x) = x (flattened)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class LinearRep(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


class TwoRelu(nn.Module):
    """net: relu(W2 relu(W1 x)) -> fc; penultimate = relu(W2 relu(W1 x))."""

    def __init__(self, d: int, h1: int, h2: int, inplace: bool = False) -> None:
        super().__init__()
        self.l1 = nn.Linear(d, h1)
        self.l2 = nn.Linear(h1, h2)
        self.act = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(h2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.l1(x.flatten(1)))
        return self.fc(self.act(self.l2(h)))


def _tiny_model(seed: int = 0, inplace: bool = False, std: float = 0.5) -> robrep.RobrepModel:
    torch.manual_seed(seed)
    net = TwoRelu(1 * 4 * 4, 8, 6, inplace=inplace)
    return robrep.wrap(net, num_classes=3, input_shape=(1, 4, 4), mean=(0.5,), std=(std,)).eval()


def _interior(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(shape, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------- the optimizer


def test_step_is_exactly_eta_and_along_the_normalized_gradient() -> None:
    # linear objective w.x: gradient w; targeted steps go along -w/||w||, untargeted along +w/||w||
    x0 = _interior((3, 1, 6, 6))
    w = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for targeted, sgn in ((True, -1.0), (False, 1.0)):
        res = optimize_inputs(lambda x: (x * w).flatten(1).sum(1), x0, steps=1, step_size=0.05, targeted=targeted)
        d = res.x - x0
        assert torch.allclose(d.flatten(1).norm(dim=1), torch.full((3,), 0.05, dtype=torch.float64), atol=1e-12)
        expect = sgn * 0.05 * w / w.flatten(1).norm(dim=1).view(3, 1, 1, 1)
        assert torch.allclose(d, expect, atol=1e-12)


def test_step_length_on_a_network_and_box_and_ball() -> None:
    m = _tiny_model()
    rep = robrep.representation(m)
    x0 = _interior((4, 1, 4, 4), dtype=torch.float32)
    res = optimize_inputs(lambda x: rep(x)[:, 0] + rep(x)[:, 1], x0, steps=1, step_size=0.01, targeted=False)
    assert torch.allclose((res.x - x0).flatten(1).norm(dim=1), torch.full((4,), 0.01), atol=1e-6)
    # huge steps: every iterate in [0,1]; small eps: inside the ball around the start
    big = optimize_inputs(lambda x: rep(x).sum(1), x0, steps=15, step_size=5.0, targeted=False)
    assert big.x.min() >= 0 and big.x.max() <= 1
    small = optimize_inputs(lambda x: rep(x).sum(1), x0, steps=15, step_size=0.3, eps=0.2, targeted=False)
    assert ((small.x - x0).flatten(1).norm(dim=1) <= 0.2 + 1e-5).all()
    assert small.history.shape == (16,)


def test_use_best_returns_the_best_iterate() -> None:
    # identity inversion with a large step oscillates; use_best returns the smallest error seen
    xt = _interior((2, 1, 5, 5), seed=3)
    x0 = _interior((2, 1, 5, 5), seed=4)
    obj = lambda x: (x - xt).flatten(1).norm(dim=1)  # noqa: E731
    last = optimize_inputs(obj, x0, steps=7, step_size=0.37)
    best = optimize_inputs(obj, x0, steps=7, step_size=0.37, use_best=True)
    assert (best.loss <= last.loss + 1e-12).all()
    assert torch.allclose(best.loss, obj(best.x))
    # reference: the per-example minimum over the trajectory, iterate by iterate
    traj = torch.stack([optimize_inputs(obj, x0, steps=k, step_size=0.37).loss for k in range(8)])
    assert torch.allclose(best.loss, traj.min(0).values, atol=1e-12)
    assert (best.loss < last.loss - 1e-3).any()  # the oscillation makes the final iterate worse


def test_identity_inversion_closed_form_and_reproduces_target() -> None:
    # R = identity: each step moves straight towards x_t by eta, then bounces: d_{k+1} = |d_k - eta|
    xt = _interior((2, 1, 6, 6), seed=5)
    x0 = noise_seed(xt.shape, generator=torch.Generator().manual_seed(0)).double()
    eta, steps = 0.01, 400
    res = invert(Flat(), xt, start=x0, steps=steps, step_size=eta)
    d = (x0 - xt).flatten(1).norm(dim=1).tolist()
    for _ in range(steps):
        d = [abs(v - eta) for v in d]
    got = (res.x - xt).flatten(1).norm(dim=1)
    assert torch.allclose(got, torch.tensor(d, dtype=torch.float64), atol=1e-9)
    assert (got <= eta).all()  # reproduces the target image up to one step
    # all iterates on the segment x0 -> xt: the residual is parallel to x0 - xt
    cos = F.cosine_similarity((res.x - xt).flatten(1), (x0 - xt).flatten(1), dim=1).abs()
    assert (cos > 1 - 1e-6).all() | (got < 1e-12).all()
    assert torch.allclose(res.rep_error, got / xt.flatten(1).norm(dim=1), atol=1e-9)


def test_noise_seed_matches_paper_and_is_not_clipped() -> None:
    g = torch.Generator().manual_seed(0)
    z = noise_seed((2000, 1, 10, 10), generator=g)
    assert abs(float(z.mean()) - 0.5) < 2e-3 and abs(float(z.std()) - 0.05) < 2e-3
    big = noise_seed((1, 1, 2, 2), generator=torch.Generator().manual_seed(0), std=10.0)
    assert big.min() < 0 or big.max() > 1  # not clipped


def test_determinism_under_a_seed() -> None:
    m = _tiny_model()
    x = _interior((3, 1, 4, 4), dtype=torch.float32)
    a = invert(m, x, steps=20, step_size=0.1, generator=torch.Generator().manual_seed(7))
    b = invert(m, x, steps=20, step_size=0.1, generator=torch.Generator().manual_seed(7))
    c = invert(m, x, steps=20, step_size=0.1, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.x, b.x) and torch.equal(a.rep_error, b.rep_error)
    assert not torch.equal(a.x, c.x)
    s1 = smoothgrad(m, x, samples=5, generator=torch.Generator().manual_seed(1))
    s2 = smoothgrad(m, x, samples=5, generator=torch.Generator().manual_seed(1))
    s3 = smoothgrad(m, x, samples=5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)


# ------------------------------------------------------------------------------ fake ReLU


@pytest.mark.parametrize("inplace", [False, True])
def test_fake_relu_passes_gradient_through_inactive_units(inplace: bool) -> None:
    m = _tiny_model(seed=2, inplace=inplace, std=0.5)
    net = m.net
    x = _interior((5, 1, 4, 4), seed=9, dtype=torch.float32)
    rep, fake = robrep.representation(m), FakeReLU(robrep.representation(m))
    assert torch.equal(rep(x), fake(x))  # forward unchanged
    xn = ((x - 0.5) / 0.5).flatten(1)
    a1 = net.l1(xn)
    a2 = net.l2(F.relu(a1))
    assert (a2 <= 0).any(), "need an inactive last-layer unit for this test"
    w1, w2 = net.l1.weight.detach(), net.l2.weight.detach()
    for i in range(6):
        xr = x.clone().requires_grad_(True)
        (g_fake,) = torch.autograd.grad(fake(xr)[:, i].sum(), xr)
        xr2 = x.clone().requires_grad_(True)
        (g_real,) = torch.autograd.grad(rep(xr2)[:, i].sum(), xr2)
        mask1 = (a1 > 0).double()  # the first ReLU still masks
        closed = ((w2[i].double()[None, :] * mask1) @ w1.double()) / 0.5  # (5, 16); 1/std from normalization
        assert torch.allclose(g_fake.flatten(1).double(), closed, atol=1e-5)
        active = (a2[:, i] > 0).double()[:, None]
        assert torch.allclose(g_real.flatten(1).double(), closed * active, atol=1e-5)


def test_fake_relu_without_relu_is_an_error() -> None:
    with pytest.raises(InputError):
        FakeReLU(Flat())(torch.rand(1, 1, 2, 2))


# ------------------------------------------------------------------------- feature addition


def test_feature_addition_loss_saturates() -> None:
    z = torch.tensor([0.2, 1.0, 1.7], requires_grad=True)
    loss = feature_addition_loss(z, 1.0)
    assert torch.equal(loss.detach(), torch.tensor([-0.8, 0.0, 0.0]))
    (g,) = torch.autograd.grad(loss.sum(), z)
    assert torch.equal(g, torch.tensor([1.0, 0.0, 0.0]))


def test_add_feature_closed_form_on_linear_representation() -> None:
    # R_i = w_i . x: each step adds eta ||w_i|| to R_i until R_i >= target, then nothing moves
    w = torch.randn(4, 36, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.1
    rep = LinearRep(w)
    x = _interior((3, 1, 6, 6), seed=2)
    z0 = rep(x)[:, 1]
    eta, target = 0.01, float(z0.max()) + 0.05
    inc = eta * float(w[1].norm())
    res = add_feature(rep, x, 1, target_activation=target, steps=200, step_size=eta)
    k = torch.ceil((target - z0) / inc)
    assert torch.allclose(res.after, z0 + k * inc, atol=1e-9)
    assert (res.after >= target - 1e-12).all()
    assert torch.allclose(res.dist, k * eta, atol=1e-9)
    # already above the target: zero gradient, the image does not move
    low = add_feature(rep, x, 1, target_activation=float(z0.min()) - 1.0, steps=50, step_size=eta)
    assert torch.equal(low.x, x)


# -------------------------------------------------------------------- feature visualization


def test_visualize_features_closed_form_and_top_activating() -> None:
    w = torch.randn(3, 36, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rep = LinearRep(w)
    x0 = _interior((2, 1, 6, 6), seed=6)
    res = visualize_features(rep, [0, 2], x0, steps=3, step_size=0.02)
    for j, i in enumerate([0, 2]):
        assert torch.allclose(res.activation[j], rep(x0)[:, i] + 3 * 0.02 * float(w[i].norm()), atol=1e-9)
    assert res.x.shape == (2, 2, 1, 6, 6)
    imgs = torch.rand(30, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    top = top_activating(rep, imgs, 2, k=4)
    v = (imgs.flatten(1) @ w[2]).tolist()
    lit = sorted(range(30), key=lambda n: -v[n])
    assert top.top_index.tolist() == lit[:4] and top.bottom_index.tolist() == lit[::-1][:4]
    assert torch.equal(top.top_images, imgs[lit[:4]])
    with pytest.raises(InputError):
        visualize_features(rep, [3], x0, steps=1)


# -------------------------------------------------------------------------------- interpolation


def test_interpolation_with_identity_is_the_pixel_interpolation() -> None:
    x1, x2 = _interior((2, 1, 5, 5), seed=1), _interior((2, 1, 5, 5), seed=2)
    res = interpolate(Flat(), x1, x2, n=5, steps=10, step_size=0.1)
    assert torch.allclose(res.lambdas, torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    # the start already matches the target representation: zero error, zero gradient
    lam = res.lambdas.view(1, 5, 1, 1, 1)
    assert torch.allclose(res.x, (1 - lam) * x1[:, None] + lam * x2[:, None], atol=1e-12)
    assert res.rep_error.abs().max() < 1e-12
    assert torch.equal(res.x[:, 0], x1) and torch.allclose(res.x[:, -1], x2)


# ---------------------------------------------------------------- misclassification insight


def test_explain_contributions_are_the_linear_decomposition() -> None:
    m = _tiny_model(seed=5)
    x = _interior((6, 1, 4, 4), seed=11, dtype=torch.float32)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    res = explain_misclassification(m, x, y, k=2, steps=5, step_size=0.05)
    logits = m(x).detach()
    z = robrep.representation(m)(x).detach()
    b = m.net.fc.bias.detach()
    assert torch.equal(res.pred, logits.argmax(1))
    assert torch.allclose(res.contributions.sum(1) + b[res.pred], logits.gather(1, res.pred[:, None]).squeeze(1), atol=1e-5)
    for n in range(6):  # literal top-k
        c = res.contributions[n].tolist()
        assert res.components[n].tolist() == sorted(range(6), key=lambda i: -c[i])[:2]
        for j in range(2):
            i = int(res.components[n, j])
            zi = robrep.representation(m)(res.x_pushed[n, j][None])[0, i]
            assert zi >= z[n, i] - 1e-6  # pushing never lowers... at least for these small steps
    assert torch.equal(res.misclassified, res.pred != y)
    assert res.x_pushed.shape == (6, 2, 1, 4, 4) and res.pred_pushed.shape == (6, 2)


# ------------------------------------------------------------------------------- brittleness


def test_brittleness_properties() -> None:
    m = _tiny_model(seed=1)
    xs, xt = _interior((3, 1, 4, 4), seed=1, dtype=torch.float32), _interior((3, 1, 4, 4), seed=2, dtype=torch.float32)
    res = brittleness(m, xs, xt, eps=0.5, steps=30, generator=torch.Generator().manual_seed(0))
    assert (res.dist_source <= 0.5 + 1e-4).all()
    assert (res.rep_error_after <= res.rep_error_before + 1e-6).all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.allclose(res.dist_target, image_l2(res.x_adv, xt).float(), atol=1e-5)


# ---------------------------------------------------------------------------------- saliency


def test_smoothgrad_of_linear_model_equals_input_gradient_closed_form() -> None:
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    m = robrep.wrap(lin, num_classes=3, input_shape=(1, 4, 4), mean=(0.5,), std=(0.25,)).eval()
    x = _interior((4, 1, 4, 4), dtype=torch.float32)
    t = torch.tensor([0, 2, 1, 2])
    closed = (lin[1].weight.detach()[t] / 0.25).view(4, 1, 4, 4)
    g = input_gradient(m, x, t)
    sg = smoothgrad(m, x, t, samples=8, noise_level=0.2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(g, closed, atol=1e-5) and torch.allclose(sg, closed, atol=1e-5)
    r = saliency(m, x, t, method="smoothgrad", samples=3)
    assert r.image.shape == (4, 1, 4, 4) and float(r.image.max()) == 1.0 and r.image.min() >= 0


def test_smoothgrad_zero_noise_is_input_gradient_and_default_target_is_prediction() -> None:
    m = _tiny_model(seed=3)
    x = _interior((3, 1, 4, 4), dtype=torch.float32)
    g = input_gradient(m, x)
    assert torch.allclose(smoothgrad(m, x, samples=2, noise_level=0.0), g, atol=1e-6)
    assert torch.allclose(g, input_gradient(m, x, m(x).argmax(1)))


# ----------------------------------------------------------------------------------- metrics


def _ssim_literal(x: torch.Tensor, y: torch.Tensor, c1: float = 1e-4, c2: float = 9e-4) -> float:
    """Slow reference: loop over every fully-contained 11x11 window, weighted stats by hand."""
    w = gaussian_window(11, 1.5)
    h, wd = x.shape
    vals = []
    for i in range(h - 10):
        for j in range(wd - 10):
            a, b = x[i:i + 11, j:j + 11].double(), y[i:i + 11, j:j + 11].double()
            ma, mb = float((w * a).sum()), float((w * b).sum())
            va = float((w * (a - ma) ** 2).sum())
            vb = float((w * (b - mb) ** 2).sum())
            cov = float((w * (a - ma) * (b - mb)).sum())
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return sum(vals) / len(vals)


def test_ssim_closed_forms_and_literal_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 14, 13, generator=g)
    y = (x + 0.1 * torch.randn(2, 1, 14, 13, generator=g)).clamp(0, 1)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    # constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.3, 0.7
    s = ssim(torch.full((1, 1, 12, 12), a), torch.full((1, 1, 12, 12), b))
    assert math.isclose(float(s), (2 * a * b + 1e-4) / (a * a + b * b + 1e-4), rel_tol=1e-6)
    for n in range(2):
        assert math.isclose(float(ssim(x[n:n + 1], y[n:n + 1])), _ssim_literal(x[n, 0], y[n, 0]), rel_tol=1e-6)
    assert torch.allclose(ssim(x, y), ssim(y, x))
    wnd = gaussian_window()
    assert wnd.shape == (11, 11) and math.isclose(float(wnd.sum()), 1.0, rel_tol=1e-12)
    with pytest.raises(InputError):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_ssim_matches_scikit_image() -> None:
    skm = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 28, 28, generator=g)
    y = (0.6 * x + 0.4 * torch.rand(3, 1, 28, 28, generator=g)).clamp(0, 1)
    ours = ssim(x, y)
    for n in range(3):
        ref = skm.structural_similarity(x[n, 0].double().numpy(), y[n, 0].double().numpy(), gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, data_range=1.0)
        assert math.isclose(float(ours[n]), float(ref), rel_tol=1e-6)
    # colour: mean over channels
    xc, yc = torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g)
    ref = skm.structural_similarity(xc[0].permute(1, 2, 0).double().numpy(), yc[0].permute(1, 2, 0).double().numpy(),
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
                                    channel_axis=2)
    assert math.isclose(float(ssim(xc, yc)), float(ref), rel_tol=1e-6)


def test_mean_interval_t_and_bootstrap() -> None:
    from scipy import stats

    v = torch.tensor([1.0, 2.0, 4.0, 4.5, 3.0, 2.2, 5.1, 0.3], dtype=torch.float64)
    ci = mean_interval(v, level=0.9)
    lo, hi = stats.t.interval(0.9, len(v) - 1, loc=float(v.mean()), scale=float(stats.sem(v.numpy())))
    assert math.isclose(ci.low, lo, rel_tol=1e-9) and math.isclose(ci.high, hi, rel_tol=1e-9)
    b1, b2 = mean_interval(v, method="bootstrap", seed=3), mean_interval(v, method="bootstrap", seed=3)
    assert b1 == b2 and b1.low < b1.mean < b1.high
    big = torch.randn(4000, generator=torch.Generator().manual_seed(0))
    bt, tt = mean_interval(big, method="bootstrap", resamples=2000), mean_interval(big)
    assert abs(bt.low - tt.low) < 0.01 and abs(bt.high - tt.high) < 0.01
    with pytest.raises(InputError):
        mean_interval(torch.tensor([1.0]))


def test_bad_inputs_raise_input_error() -> None:
    m = _tiny_model()
    x = _interior((1, 1, 4, 4), dtype=torch.float32)
    with pytest.raises(InputError):
        invert(m, x, start="plasma", steps=1)
    with pytest.raises(InputError):
        invert(m, x * 3, steps=1)
    with pytest.raises(InputError):
        optimize_inputs(lambda u: u.sum(), x, steps=1, step_size=0.1)  # not one value per example
    with pytest.raises(InputError):
        optimize_inputs(lambda u: u.flatten(1).sum(1), x, steps=1, step_size=0.0)
    with pytest.raises(InputError):
        interpolate(m, x, x, n=1, steps=1)


# --------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = robrep.create_model("small-cnn", dataset="demo", width=4, feat_dim=8)
    p = tmp_path_factory.mktemp("vis") / "model.safetensors"
    robrep.save_model(p, m, {"dataset": "demo"})
    return p


@pytest.mark.parametrize("cmd,extra", [
    ("invert", ["--steps", "3", "--step-size", "0.5"]),
    ("visualize", ["--steps", "3", "--components", "0,1", "--top-k", "2", "--fake-relu"]),
    ("add-feature", ["--steps", "3", "--component", "1"]),
    ("interpolate", ["--steps", "2", "--points", "3"]),
    ("explain", ["--steps", "2", "--k", "2"]),
    ("saliency", ["--samples", "2"]),
])
def test_cli_commands_write_record_and_png(tiny_ckpt, tmp_path, capsys, cmd: str, extra: list[str]) -> None:
    from robrep.cli import main

    out = tmp_path / cmd
    rc = main([cmd, "--checkpoint", str(tiny_ckpt), "--n", "2", "--out", str(out), "--json", "--quiet", *extra])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    res = json.loads(last)
    assert isinstance(res, dict) and res
    rec = json.loads((out / "record.json").read_text())
    assert rec["command"] == cmd
    assert list(out.glob("*.png"))
