"""Training: objectives' closed forms, reaching an accuracy, exact resume, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import robrep
from robrep.objectives import StepContext, create_objective


def _batch(demo_data, n=32):
    return next(iter(demo_data[0].head(n).batches(n)))


def test_trades_with_beta_zero_and_pgd_with_eps_zero_equal_standard_ce(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, y = _batch(demo_data)
    ce = F.cross_entropy(model(x), y)
    ctx = StepContext(robrep.threat("linf", 0.1), torch.Generator().manual_seed(0))
    lt, _ = create_objective("trades", beta=0.0, steps=2).loss(model, x, y, ctx)
    assert torch.allclose(lt, ce, atol=1e-6)
    ctx0 = StepContext(robrep.threat("linf", 0.0), torch.Generator().manual_seed(0))
    lp, _ = create_objective("pgd", steps=3).loss(model, x, y, ctx0)
    assert torch.allclose(lp, ce, atol=1e-6)


def test_pgd_objective_loss_is_ce_at_the_attack_point(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, y = _batch(demo_data)
    thr = robrep.threat("linf", 0.1)
    obj = create_objective("pgd", steps=5)
    loss, _ = obj.loss(model, x, y, StepContext(thr, torch.Generator().manual_seed(1)))
    x_adv = obj.adversarial(model, x, y, StepContext(thr, torch.Generator().manual_seed(1)))
    assert thr.contains(x_adv, x).all()
    assert torch.allclose(loss, F.cross_entropy(model(x_adv), y), atol=1e-6)
    assert loss > F.cross_entropy(model(x), y)


def test_fast_at_uses_one_step_of_1_25_eps(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, y = _batch(demo_data)
    thr = robrep.threat("linf", 0.1)
    obj = create_objective("fast")
    xa = obj.adversarial(model, x, y, StepContext(thr, torch.Generator().manual_seed(0)))
    assert thr.contains(xa, x).all()
    # FGSM-RS from a uniform start with step 1.25 eps ends on the ball boundary wherever the box allows
    inner = (x > 0.1 + 1e-6) & (x < 0.9 - 1e-6)
    frac_on_boundary = ((xa - x).abs()[inner] > 0.1 - 1e-6).float().mean()
    assert frac_on_boundary > 0.5


def test_pgd_objective_with_apgd_finds_the_linear_worst_case() -> None:
    """Two-class linear model: CE(x + d) grows with the margin w.(x + d) against the true class, so
    the worst case in the linf ball and [0,1] box is x - eps*sign(w) per coordinate, clipped."""
    torch.manual_seed(0)
    w = torch.randn(2, 1, 6, 6)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 2, bias=False))
    net[1].weight.data = w.flatten(1)
    model = robrep.wrap(net, num_classes=2, input_shape=(1, 6, 6), mean=(0.0,), std=(1.0,))
    x, y = torch.rand(16, 1, 6, 6), torch.randint(0, 2, (16,))
    thr = robrep.threat("linf", 0.1)
    obj = create_objective("pgd", steps=10, attack="apgd")
    xa = obj.adversarial(model, x, y, StepContext(thr, torch.Generator().manual_seed(0)))
    dw = (w[1] - w[0]).unsqueeze(0) * (2 * y.float() - 1).view(-1, 1, 1, 1)  # grad of w_y.x - w_other.x
    best = (x - 0.1 * dw.sign()).clamp(0, 1)
    assert thr.contains(xa, x).all()
    assert torch.allclose(xa, best, atol=1e-6)
    assert obj.config()["attack"] == "apgd"
    with pytest.raises(robrep.errors.InputError, match="APGD sets its own step"):
        create_objective("pgd", attack="apgd", step_size=0.01)
    with pytest.raises(robrep.errors.InputError, match="'pgd' or 'apgd'"):
        create_objective("pgd", attack="cw")
    with pytest.raises(robrep.errors.InputError, match="one FGSM step"):
        create_objective("fast", attack="apgd")


def test_linearization_error_matches_the_closed_form_of_a_linear_model() -> None:
    """Two-class linear model: CE(x) = softplus(m(x)) with m = (w_o - w_y).x, so the error of the
    first-order Taylor model along d is |softplus(m + v.d) - softplus(m) - sigmoid(m) v.d|, v = w_o - w_y."""
    from robrep.objectives.supervised import linearization_error

    torch.manual_seed(0)
    w = torch.randn(2, 36)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 2, bias=False))
    net[1].weight.data = w.clone()
    model = robrep.wrap(net, num_classes=2, input_shape=(1, 6, 6), mean=(0.0,), std=(1.0,))
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 2, (8,))
    d = 0.3 * (2 * torch.rand_like(x) - 1)
    lin = linearization_error(model, x, x + d, y)
    v = w[1 - y] - w[y]
    m, vd = (v * x.flatten(1)).sum(1), (v * d.flatten(1)).sum(1)
    want = (F.softplus(m + vd) - F.softplus(m) - torch.sigmoid(m) * vd).abs()
    assert torch.allclose(lin.error, want, atol=1e-5)
    assert torch.allclose(lin.ce_clean, F.softplus(m), atol=1e-5)
    assert torch.allclose(lin.ce_adv, F.softplus(m + vd), atol=1e-5)
    assert want.mean() > 1e-2  # a test that can fail: the curvature term is not negligible here


def test_pgd_objective_with_llr_adds_the_weighted_penalty_and_its_gradient(tiny_trained, demo_data) -> None:
    from robrep.objectives.supervised import linearization_error

    model, _ = tiny_trained
    x, y = _batch(demo_data, 32)
    thr = robrep.threat("linf", 0.1)
    plain, reg = create_objective("pgd", steps=3), create_objective("pgd", steps=3, llr=2.0)
    assert reg.config()["llr"] == 2.0 and plain.config()["llr"] == 0.0
    grads = []
    for obj in (plain, reg):
        model.zero_grad()
        loss, metrics = obj.loss(model, x, y, StepContext(thr, torch.Generator().manual_seed(3)))
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    xa = reg.adversarial(model, x, y, StepContext(thr, torch.Generator().manual_seed(3)))
    lin = linearization_error(model, x, xa, y)
    lin = lin._replace(error=lin.error.detach(), ce_adv=lin.ce_adv.detach())
    assert float(metrics["llr"]) == pytest.approx(float(lin.error.mean()), rel=1e-4)
    assert float(loss.detach()) == pytest.approx(float(lin.ce_adv.mean() + 2.0 * lin.error.mean()), rel=1e-4)
    assert float(lin.error.mean()) > 0
    assert not torch.allclose(grads[0], grads[1])  # the penalty reaches the weights
    # ... including through grad_x CE(x): without create_graph that path is cut and the gradient differs
    model.zero_grad()
    cut = linearization_error(model, x, xa, y, create_graph=False)
    (cut.ce_adv.mean() + 2.0 * cut.error.mean()).backward()
    assert not torch.allclose(torch.cat([p.grad.flatten() for p in model.parameters()]), grads[1])
    model.zero_grad(set_to_none=True)
    with pytest.raises(robrep.errors.InputError, match="llr >= 0"):
        create_objective("pgd", llr=-1.0)
    compiled = torch.nn.Module()
    compiled._orig_mod = model  # what torch.compile's wrapper looks like
    with pytest.raises(robrep.errors.InputError, match="double backprop"):
        reg.loss(compiled, x, y, StepContext(thr, torch.Generator().manual_seed(3)))


def test_noise_objective_draws_gaussian_noise(demo_data) -> None:
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return torch.zeros(len(x), 10, requires_grad=True)

    x, y = _batch(demo_data, 64)
    create_objective("noise", sigma=0.5).loss(Spy(), x, y, StepContext(None, torch.Generator().manual_seed(0)))
    noise = (seen["x"] - x).flatten()
    assert float(noise.std()) == pytest.approx(0.5, rel=0.02) and abs(float(noise.mean())) < 0.01


def test_training_reaches_accuracy(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    acc = robrep.evaluate(model, demo_data[1]).clean_accuracy
    assert acc > 0.70, acc  # 2 epochs of small-cnn on 5000 Fashion-MNIST images


def test_resume_gives_identical_weights(tmp_path, demo_data) -> None:
    tr = demo_data[0].fraction(0.1, seed=0)
    cfg = robrep.TrainConfig(model="small-cnn", dataset="demo", objective="pgd", eps=0.1, epochs=3, batch_size=64,
                             eval_n=0, objective_kwargs={"steps": 2}, seed=4)
    full = robrep.train(cfg, tmp_path / "full", train_data=tr, show_progress=False)
    robrep.train(cfg, tmp_path / "part", train_data=tr, show_progress=False, stop_after_epoch=1)
    assert not (tmp_path / "part" / "model.safetensors").exists()
    resumed = robrep.train(cfg, tmp_path / "part", train_data=tr, show_progress=False, resume=True)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
    # only the newest checkpoints are kept
    assert len(list((tmp_path / "part" / "checkpoints").iterdir())) == 2


def test_resume_refuses_another_config(tmp_path, demo_data) -> None:
    tr = demo_data[0].fraction(0.04, seed=0)
    cfg = robrep.TrainConfig(epochs=2, batch_size=64, eval_n=0)
    robrep.train(cfg, tmp_path, train_data=tr, show_progress=False, stop_after_epoch=1)
    with pytest.raises(robrep.CheckpointError, match="another configuration"):
        robrep.train(robrep.TrainConfig(epochs=2, batch_size=64, eval_n=0, lr=0.01), tmp_path, train_data=tr, show_progress=False, resume=True)


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "cyclic"])
def test_schedules(schedule: str) -> None:
    from robrep.train.loop import _lr_lambda

    f = _lr_lambda(robrep.TrainConfig(schedule=schedule, milestones=(0.5,)), 100)
    if schedule == "cyclic":  # linear up to the peak at 40 %, then linear down to 0
        assert f(0) == 0 and f(40) == pytest.approx(1.0) and f(100) == pytest.approx(0.0)
        assert f(70) == pytest.approx(0.5)
        return
    expected = {"constant": (1, 1, 1), "step": (1, 0.1, 0.1), "cosine": (1, 0.5, 0.0)}[schedule]
    assert [round(f(s), 6) for s in (0, 50, 100)] == [round(e, 6) for e in expected]


def test_bad_config() -> None:
    with pytest.raises(robrep.InputError, match="optimizer"):
        robrep.TrainConfig(optimizer="rmsprop").validate()
    with pytest.raises(robrep.InputError, match="eps"):
        robrep.TrainConfig(eps=-1.0).validate()
    with pytest.raises(robrep.InputError, match="unknown training options"):
        robrep.TrainConfig.from_dict({"epoch": 3})


def test_compile_flag_is_opt_in() -> None:
    import argparse

    from robrep.cli import train as cli_train

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    cli_train.register(sub)
    assert cli_train.config_from_args(p.parse_args(["train"])).compile is False
    assert cli_train.config_from_args(p.parse_args(["train", "--compile"])).compile is True
    assert robrep.TrainConfig().compile is False
    assert robrep.TrainConfig.from_dict({k: v for k, v in robrep.TrainConfig().to_dict().items() if k != "compile"}).compile is False


def test_compiled_training_matches_eager(tmp_path, demo_data) -> None:
    """TrainConfig(compile=True): same losses and weights as eager training within 1e-5 (a few
    steps of a small CNN, PGD-2 adversarial training so the attack runs compiled too)."""
    from robrep._compile import compile_problem

    problem = compile_problem()
    if problem is not None:
        pytest.skip(f"torch.compile unavailable here: {problem}")
    tr = demo_data[0].fraction(0.03, seed=0)
    kw = dict(model="small-cnn", dataset="demo", objective="pgd", eps=0.1, epochs=1, batch_size=50, eval_n=0,
              objective_kwargs={"steps": 2}, seed=1, model_kwargs={"width": 8})
    eager = robrep.train(robrep.TrainConfig(**kw), tmp_path / "eager", train_data=tr, show_progress=False)
    comp = robrep.train(robrep.TrainConfig(compile=True, **kw), tmp_path / "compiled", train_data=tr, show_progress=False)
    a, b = eager.model.state_dict(), comp.model.state_dict()
    assert set(a) == set(b)  # checkpoints hold the plain model's keys (no _orig_mod prefix)
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)
    assert eager.history[0]["train_loss"] == pytest.approx(comp.history[0]["train_loss"], abs=1e-5)
