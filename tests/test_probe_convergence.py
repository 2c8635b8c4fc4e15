"""The default linear probe trains to convergence: its solution equals the regularized
logistic-regression optimum computed by an independent Newton solver on the same features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robrep.errors import InputError
from robrep.evaluate.probe import extract_features, fit_linear, linear_probe


def _newton(z: torch.Tensor, y: torch.Tensor, c: int, l2: float, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: Newton's method (exact Hessian, pseudo-inverse for the bias' shift direction)
    on mean CE(W z + b, y) + l2/2 ||W||^2 in float64."""
    d = z.shape[1]
    theta = torch.zeros(c * d + c, dtype=torch.float64)

    def obj(t: torch.Tensor) -> torch.Tensor:
        w, b = t[: c * d].view(c, d), t[c * d :]
        return F.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * (w * w).sum()

    for _ in range(iters):
        g = torch.autograd.functional.jacobian(obj, theta)
        if g.abs().max() < 1e-13:
            break
        h = torch.autograd.functional.hessian(obj, theta)
        theta = theta - torch.linalg.pinv(h, hermitian=True) @ g
    return theta[: c * d].view(c, d), theta[c * d :]


def _separable(n: int = 240, d: int = 4, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])[:c, :d]
    y = torch.arange(n) % c
    f = centers[y] + 0.3 * torch.randn(n, d, generator=g)
    f = f * torch.tensor([1.0, 20.0, 0.05, 3.0])[:d] + 7.0  # badly scaled raw features
    return f, y


def test_fit_linear_equals_newton_optimum_on_separable_data() -> None:
    f, y = _separable()
    # separable: some linear map classifies every point
    l2 = 1e-3
    fit = fit_linear(f, y, 3, l2=l2)
    assert fit.converged and fit.grad_norm <= 1e-6
    f64 = f.double()
    mu = f64.mean(0)
    sd = ((f64 - mu) ** 2).sum(1).mean().sqrt() / f64.shape[1] ** 0.5  # one global scale (scale="global")
    w_ref, b_ref = _newton((f64 - mu) / sd, y, 3, l2)
    # back to raw units as fit_linear reports them
    w_raw, b_raw = w_ref / sd, b_ref - (w_ref / sd) @ mu
    logits = f64 @ fit.weight.double().T + fit.bias.double()
    logits_ref = f64 @ w_raw.T + b_raw
    p, p_ref = logits.softmax(1), logits_ref.softmax(1)
    assert (p - p_ref).abs().max() < 1e-4
    # W is identified by the ridge term; b up to a common shift (softmax invariance); both
    # compared in the standardized units the objective is written in (||W|| is ~10 here)
    w_std = fit.weight.double() * sd
    b_std = fit.bias.double() + fit.weight.double() @ mu
    assert torch.allclose(w_std, w_ref, atol=5e-3, rtol=1e-3)
    db = b_std - b_ref
    assert (db - db.mean()).abs().max() < 5e-3
    # the optimum's objective equals the reference's
    obj_ref = F.cross_entropy(logits_ref, y) + 0.5 * l2 * (w_ref**2).sum()
    assert fit.loss == pytest.approx(float(obj_ref), abs=1e-8)
    assert (logits.argmax(1) == y).all()  # separable data are fitted exactly


def test_fit_linear_per_feature_scaling_equals_newton_too() -> None:
    f, y = _separable(seed=1)
    fit = fit_linear(f, y, 3, l2=1e-2, scale="feature")
    f64 = f.double()
    mu, sd = f64.mean(0), f64.std(0, unbiased=False)
    w_ref, b_ref = _newton((f64 - mu) / sd, y, 3, 1e-2)
    assert torch.allclose(fit.weight.double() * sd, w_ref, atol=5e-3, rtol=1e-3)
    p = (f64 @ fit.weight.double().T + fit.bias.double()).softmax(1)
    p_ref = (((f64 - mu) / sd) @ w_ref.T + b_ref).softmax(1)
    assert (p - p_ref).abs().max() < 1e-4
    with pytest.raises(InputError, match="scale"):
        fit_linear(f, y, 3, scale="nope")


def test_fit_linear_rejects_bad_input() -> None:
    f, y = _separable()
    with pytest.raises(InputError, match="l2 must be > 0"):
        fit_linear(f, y, 3, l2=0.0)
    f2 = f.clone()
    f2[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        fit_linear(f2, y, 3)


def test_linear_probe_default_is_the_converged_fit_on_cached_features() -> None:
    """The probe's head equals fit_linear on the extracted features; features passed in (a cache)
    give the identical head; a few Adam epochs (the old default) stop far from that optimum."""
    from robrep.data import dataset_info, load_dataset
    from robrep.models import create_model, representation

    torch.manual_seed(0)
    model = create_model("small-cnn", dataset="demo").eval()
    tr, te = load_dataset("demo", "train").head(300), load_dataset("demo", "test").head(100)
    rep = representation(model, "penultimate")
    f, y = extract_features(rep, tr)
    assert not f.requires_grad and not f.is_inference()
    res = linear_probe(model, tr, te)
    ref = fit_linear(f, y, dataset_info("demo").num_classes)
    assert torch.allclose(res.classifier.head.weight, ref.weight, atol=1e-6)
    assert res.fit is not None and res.fit["solver"] == "lbfgs" and res.fit["converged"]
    res2 = linear_probe(model, tr, te, features=(f, y))
    assert torch.equal(res2.classifier.head.weight, res.classifier.head.weight)
    assert res2.natural_accuracy == res.natural_accuracy
    old = linear_probe(model, tr, te, epochs=2)
    assert old.fit["solver"] == "adam"
    zs = f - f.mean(0)
    ce_new = F.cross_entropy(f @ res.classifier.head.weight.T + res.classifier.head.bias, y)
    ce_old = F.cross_entropy(f @ old.classifier.head.weight.T + old.classifier.head.bias, y)
    assert ce_new < ce_old and zs.shape == f.shape
