"""Mixed precision (bf16 autocast) with float32 verdicts: robrep.attacks.precision and robrep.runtime.

What is proven here:
- ``fp32`` is the attack itself: bit-identical ``x_adv``/loss/success to the unwrapped attack;
- every output of ``auto``/``bf16`` lies in the ball and in [0,1] (linf, l2) and is float32;
- every reported success is a float32 misclassification (independent check: the model's own
  float32 logits on ``x_adv``), and the re-check only adds successes to the bf16 attack's;
- on a trained MNIST CNN, robust accuracy with ``auto`` <= fp32's + 0.3 points on the same images;
- ``auto`` PGD-k makes k gradient passes per surviving example, as float32 does (the last three
  are the float32 re-check's), and only PGD with one restart and a classification loss shares;
- a constructed case where bf16 logits hide a float32 success (bf16 alone misses it, the float32
  re-check catches it) and one where bf16 reports a success that float32 refutes;
- bad input: bf16 without hardware support (clear error, ``auto`` falls back), a model failing
  under autocast (the layer is named, fp32 suggested), unknown precision names.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import robrep
from robrep import runtime
from robrep.attacks import apgd, create_attack, pgd, with_precision
from robrep.attacks.precision import Bf16Model, failing_layer, recheck_fp32
from robrep.errors import InputError
from robrep.models import create_model

BF16 = runtime.bf16_supported("cpu")
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no native bf16 (AVX512-BF16/AMX): auto runs fp32")


def _model(seed: int = 0, scale: float = 3.0) -> nn.Module:
    torch.manual_seed(seed)
    m = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), width=8).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)  # larger logits: some examples break, others do not
    return m


def _batch(n: int = 48, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("kw", [{}, {"loss": "cw", "restarts": 2}, {"keep_best": False}, {"targeted": True}])
def test_fp32_is_bit_identical_to_the_attack(kw) -> None:
    m, (x, y) = _model(), _batch()
    thr = robrep.threat("linf", 0.1)
    assert with_precision(pgd, "fp32") is pgd
    ref = pgd(m, x, y, thr, steps=5, generator=torch.Generator().manual_seed(3), **kw)
    got = create_attack("pgd", steps=5, precision="fp32", **kw)(m, x, y, thr, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ref.x_adv, got.x_adv) and torch.equal(ref.success, got.success) and ref.queries == got.queries
    assert torch.equal(ref.loss, got.loss) or (ref.loss.isnan() == got.loss.isnan()).all()


def test_fp32_evaluate_unchanged(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    _, te = demo_data
    thr = robrep.threat("linf", 0.1)
    a = robrep.evaluate(model, te, threat=thr, attack_kwargs={"steps": 3}, n=64, seed=2)
    b = robrep.evaluate(model, te, threat=thr, attack_kwargs={"steps": 3, "precision": "fp32"}, n=64, seed=2)
    assert a.robust_accuracy == b.robust_accuracy and a.per_class_robust == b.per_class_robust


def _own_labels(m: nn.Module, n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    x, _ = _batch(n)
    with torch.no_grad():
        return x, m(x).argmax(1)  # clean accuracy 1: the attack decides every verdict


@needs_bf16
@pytest.mark.parametrize("norm,eps", [("linf", 0.01), ("l2", 0.3)])
@pytest.mark.parametrize("attack", ["pgd", "apgd-ce"])
def test_bf16_outputs_in_ball_and_box_with_fp32_verdicts(norm, eps, attack) -> None:
    m = _model(scale=1.0)
    x, y = _own_labels(m)
    thr = robrep.threat(norm, eps)
    res = create_attack(attack, steps=5, precision="bf16")(m, x, y, thr, generator=torch.Generator().manual_seed(0))
    assert res.x_adv.dtype == torch.float32 and res.loss.dtype == torch.float32
    assert res.x_adv.is_contiguous()
    assert bool(thr.contains(res.x_adv, x).all()) and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    with torch.no_grad():
        pred = m(res.x_adv).argmax(1)  # the float32 model, independently of the wrapper
    assert torch.equal(res.success, pred != y)
    assert 0 < res.success.float().mean() < 1  # the case discriminates


@needs_bf16
def test_recheck_only_adds_successes_and_all_are_fp32_confirmed() -> None:
    m = _model(scale=1.0)
    x, y = _own_labels(m, 96)
    thr = robrep.threat("linf", 0.01)
    g = torch.Generator().manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf = pgd(m, x, y, thr, steps=5, generator=g)
    _, _, s0, _ = recheck_fp32(m, x, y, thr, bf.x_adv, steps=0)  # float32 verdicts of the bf16 points, no re-check
    xa, _, s1, q = recheck_fp32(m, x, y, thr, bf.x_adv, steps=2, hint=bf.success)
    assert bool((s1 | ~s0).all())  # nothing the bf16 attack broke (in float32) is lost
    assert 0 < s0.float().mean() < 1 and 0 < s1.float().mean() < 1
    with torch.no_grad():
        assert torch.equal(m(xa).argmax(1) != y, s1)
    assert bool(thr.contains(xa, x).all()) and q <= 4


class _NearTie(nn.Module):
    """Logits (100, 100 + d(x)) with d(x) = c (mean(x) - m0) small: class 1 wins in float32 iff
    mean(x) > m0, but bf16 rounds both logits to 100 (spacing 0.5 there), a tie argmax reads as 0."""

    def __init__(self, m0: float, c: float = 0.4) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 2)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[1].fill_(c / (28 * 28))
            self.fc.bias.copy_(torch.tensor([100.0, 100.0 - c * m0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@needs_bf16
def test_constructed_case_bf16_misses_and_fp32_recheck_catches() -> None:
    x = torch.full((4, 1, 28, 28), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    m = _NearTie(m0=0.52).eval()  # fp32: broken iff mean(x_adv) > 0.52, one step of 0.05 from x
    thr = robrep.threat("linf", 0.1)
    assert pgd(m, x, y, thr, steps=5, random_start=False).success.all()  # float32 PGD breaks all
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf = pgd(m, x, y, thr, steps=5, random_start=False)
    # bf16 alone: every iterate's logits tie, so no success is seen and the tracker keeps the start
    assert not bf.success.any() and torch.equal(bf.x_adv, x)
    res = create_attack("pgd", steps=5, random_start=False, precision="bf16")(m, x, y, thr)
    assert res.success.all()  # the float32 re-check from that point catches every one
    assert bool(thr.contains(res.x_adv, x).all())


@needs_bf16
def test_constructed_case_bf16_false_success_is_refuted() -> None:
    x = torch.full((4, 1, 28, 28), 0.5)
    y = torch.ones(4, dtype=torch.long)  # float32 predicts 1 everywhere in the ball (d > 0), bf16 ties -> 0
    m = _NearTie(m0=0.2).eval()
    thr = robrep.threat("linf", 0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf = pgd(m, x, y, thr, steps=3, random_start=False)
    assert bf.success.all()  # bf16 claims every example broken
    res = create_attack("pgd", steps=3, random_start=False, precision="bf16")(m, x, y, thr)
    assert not res.success.any()


# --- a trained MNIST CNN (standard training, a few hundred steps; cached between runs)


@pytest.fixture(scope="module")
def mnist_cnn(mnist_test, request):
    from robrep.models import load, save_model

    cache = request.config.cache.mkdir("robrep-precision-mnist-cnn-v1") / "model.safetensors"
    if cache.exists():
        return load(str(cache)).eval()
    tr = robrep.load_dataset("mnist", "train")
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), dataset="mnist")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step, (xb, yb) in enumerate(tr.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0))):
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 299:
            break
    save_model(str(cache), model.eval(), {"note": "test fixture: 300 SGD steps on MNIST"})
    return model


@needs_bf16
def test_trained_mnist_auto_no_more_robust_than_fp32(mnist_cnn, mnist_test) -> None:
    x, y = mnist_test.head(400).tensors()
    thr = robrep.threat("linf", 0.06)
    kw = dict(threat=thr, n=400, seed=0, batch_size=200)
    f32 = robrep.evaluate(mnist_cnn, (x, y), attack_kwargs={"steps": 10}, **kw)
    auto = robrep.evaluate(mnist_cnn, (x, y), attack_kwargs={"steps": 10, "precision": "auto"}, **kw)
    assert f32.clean_accuracy == auto.clean_accuracy > 0.9
    assert 0.1 < f32.robust_accuracy < 0.9  # the comparison discriminates
    assert auto.robust_accuracy <= f32.robust_accuracy + 0.003


@needs_bf16
@pytest.mark.parametrize("which, eps", [("mnist_model", 0.3), ("fmnist_model", 0.1)])
def test_adversarially_trained_auto_no_more_robust_than_fp32(which, eps, request) -> None:
    """The reproductions' threat models (MNIST linf 0.3, Fashion-MNIST linf 0.1) on adversarially
    trained CNNs: PGD-10 with ``auto`` leaves at most 0.3 points more robust than float32."""
    model, te = request.getfixturevalue(which)
    x, y = te.head(400).tensors()
    kw = dict(threat=robrep.threat("linf", eps), seed=0, batch_size=200)
    f32 = robrep.evaluate(model, (x, y), attack_kwargs={"steps": 10}, **kw)
    auto = robrep.evaluate(model, (x, y), attack_kwargs={"steps": 10, "precision": "auto"}, **kw)
    assert f32.clean_accuracy == auto.clean_accuracy
    assert 0.1 < f32.robust_accuracy < 0.9  # the comparison discriminates
    assert auto.robust_accuracy <= f32.robust_accuracy + 0.003


@needs_bf16
def test_cifar_shape_resnet_auto_no_more_robust_than_fp32(mnist_test) -> None:
    """A CIFAR-shape (3x32x32) ResNet-18 of reduced width, trained briefly on MNIST digits as
    three-channel 32x32 images (batch norm, residual blocks: the layers a CIFAR model has):
    PGD-10 with ``auto`` leaves at most 0.3 points more robust than float32."""
    tr = robrep.load_dataset("mnist", "train")

    def rgb32(x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255 if not x.is_floating_point() else x
        return nn.functional.pad(x.expand(-1, 3, -1, -1), (2, 2, 2, 2))

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step, (xb, yb) in enumerate(tr.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0))):
        loss = nn.functional.cross_entropy(model(rgb32(xb)), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 59:
            break
    model.eval()
    x, y = mnist_test.head(256).tensors()
    kw = dict(threat=robrep.threat("linf", 4 / 255), seed=0, batch_size=128)
    f32 = robrep.evaluate(model, (rgb32(x), y), attack_kwargs={"steps": 10}, **kw)
    auto = robrep.evaluate(model, (rgb32(x), y), attack_kwargs={"steps": 10, "precision": "auto"}, **kw)
    assert f32.clean_accuracy == auto.clean_accuracy > 0.5
    assert 0.1 < f32.robust_accuracy < f32.clean_accuracy - 0.05  # the comparison discriminates
    assert auto.robust_accuracy <= f32.robust_accuracy + 0.003


# --- bad input


def test_bf16_without_hardware_errors_and_auto_falls_back(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "bf16_supported", lambda device="cpu": False)
    m, (x, y) = _model(), _batch(16)
    thr = robrep.threat("linf", 0.1)
    with pytest.raises(InputError, match=r"native bf16.*--precision auto.*fp32"):
        create_attack("pgd", steps=2, precision="bf16")(m, x, y, thr)
    ref = pgd(m, x, y, thr, steps=2, generator=torch.Generator().manual_seed(0))
    got = create_attack("pgd", steps=2, precision="auto")(m, x, y, thr, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ref.x_adv, got.x_adv) and torch.equal(ref.success, got.success)
    assert runtime.resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(InputError, match="unknown precision"):
        create_attack("pgd", precision="fp16")


class _Fp32Only(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise RuntimeError(f"expected float32 input, got {x.dtype}")
        return x


def _fragile() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), _Fp32Only(), nn.Linear(16, 10)).eval()


@needs_bf16
def test_model_failing_under_autocast_names_the_layer() -> None:
    m, (x, y) = _fragile(), _batch(8)
    thr = robrep.threat("linf", 0.1)
    assert failing_layer(m, x[:1]) == "2"
    with pytest.raises(InputError, match=r"layer '2' \(_Fp32Only\).*--precision fp32"):
        create_attack("pgd", steps=2, precision="bf16")(m, x, y, thr)
    runtime._reset_for_tests()
    with pytest.warns(RuntimeWarning, match="falls back to fp32"):
        got = create_attack("pgd", steps=2, precision="auto")(m, x, y, thr, generator=torch.Generator().manual_seed(0))
    ref = pgd(m, x, y, thr, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ref.x_adv, got.x_adv)


@needs_bf16
def test_bf16_model_wrapper_for_certification() -> None:
    from robrep.certify.smoothing import sample_counts

    m, (x, _) = _model(scale=1.0), _batch(1)
    w = Bf16Model(m).eval()
    with torch.no_grad():
        out, ref = w(x), m(x)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)  # autocast really ran
    assert torch.allclose(out, ref, rtol=0.05, atol=0.05)
    c32 = sample_counts(m, x[0], 0.25, 400, generator=torch.Generator().manual_seed(0))
    c16 = sample_counts(w, x[0], 0.25, 400, generator=torch.Generator().manual_seed(0))
    assert c32.sum() == c16.sum() == 400 and c32.argmax() == c16.argmax()
    assert (c32 - c16).abs().sum() <= 40  # same noise draws: only near-ties can change class
    assert {k for k in w.state_dict()} == {f"model.{k}" for k in m.state_dict()}  # run fingerprints see the model


def test_apgd_auto_is_apgd_where_bf16_unsupported(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "bf16_supported", lambda device="cpu": False)
    m, (x, y) = _model(), _batch(8)
    thr = robrep.threat("linf", 0.1)
    ref = apgd(m, x, y, thr, steps=3, generator=torch.Generator().manual_seed(0))
    got = with_precision(apgd, "auto")(m, x, y, thr, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ref.x_adv, got.x_adv)


def test_no_warnings_on_the_fp32_path() -> None:
    m, (x, y) = _model(), _batch(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_attack("pgd", steps=1, precision="fp32")(m, x, y, robrep.threat("linf", 0.1))


def test_cascade_and_bad_images_through_the_wrapper() -> None:
    m = _model(scale=1.0)
    x, y = _own_labels(m, 8)
    thr = robrep.threat("linf", 0.01)
    res = create_attack("apgd", steps=2, precision="auto")(m, x, y, thr, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(res.success, m(res.x_adv).argmax(1) != y)
    assert bool(thr.contains(res.x_adv, x).all())
    with pytest.raises(InputError, match=r"\[0,1\]"):
        create_attack("pgd", steps=1, precision="auto")(m, x * 2, y, thr)


# --- early exit (dropping broken examples from the batch), used by the bf16 attack


class _RowCounter(nn.Module):
    """The model, counting the rows of every forward pass."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m, self.rows = m, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.m(x)


@pytest.mark.parametrize("kw", [{}, {"targeted": True}, {"loss": "cw", "restarts": 2}, {"norm": "l2"}])
def test_pgd_early_exit_same_verdicts_fewer_passes(kw) -> None:
    kw = dict(kw)
    norm = kw.pop("norm", "linf")
    m = _model(scale=1.0)
    x, y = _own_labels(m, 64)
    thr = robrep.threat(norm, 0.6 if norm == "l2" else 0.05 if kw.get("targeted") else 0.02)
    t = (y + 1) % 10 if kw.get("targeted") else y
    full_m, fast_m = _RowCounter(m), _RowCounter(m)
    full = pgd(full_m, x, t, thr, steps=6, generator=torch.Generator().manual_seed(3), **kw)
    fast = pgd(fast_m, x, t, thr, steps=6, generator=torch.Generator().manual_seed(3), early_exit=True, **kw)
    s = fast.success
    assert torch.equal(full.success, s) and 0 < s.float().mean() < 1 and fast.queries == full.queries
    with torch.no_grad():
        pred = m(fast.x_adv).argmax(1)  # every success is the model's own verdict at x_adv
    assert torch.equal(pred == t if kw.get("targeted") else pred != t, s)
    assert bool(thr.contains(fast.x_adv, x).all()) and fast.x_adv.min() >= 0 and fast.x_adv.max() <= 1
    # the examples never broken ran the same iterations: same best point and loss
    assert torch.allclose(fast.x_adv[~s], full.x_adv[~s], atol=1e-6) and torch.allclose(fast.loss[~s], full.loss[~s], atol=1e-5)
    assert fast_m.rows < full_m.rows


@pytest.mark.parametrize("kw", [{"keep_best": False}, {"loss": "repr"}])
def test_pgd_early_exit_ignored_without_verdicts(kw) -> None:
    m = _model(scale=1.0)
    x, y = _own_labels(m, 16)
    thr = robrep.threat("linf", 0.02)
    if kw.get("loss") == "repr":
        with torch.no_grad():
            y = m(x)
    a = pgd(m, x, y, thr, steps=3, generator=torch.Generator().manual_seed(1), **kw)
    b = pgd(m, x, y, thr, steps=3, generator=torch.Generator().manual_seed(1), early_exit=True, **kw)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


# --- the representation attack and forward-only feature extraction in bf16


def test_representation_attack_fp32_is_plain_pgd() -> None:
    from robrep.models import representation

    m = _model(scale=1.0)
    x, _ = _batch(8)
    thr = robrep.threat("linf", 0.05)
    rep = representation(m)
    with torch.no_grad():
        z = rep(x)
    ref = pgd(rep, x, z, thr, steps=3, loss="repr", generator=torch.Generator().manual_seed(0), check=False)
    got = robrep.representation_attack(m, x, thr, steps=3, generator=torch.Generator().manual_seed(0), precision="fp32")
    assert torch.equal(ref.x_adv, got.x_adv) and torch.equal(ref.loss, got.loss)


@needs_bf16
def test_representation_attack_bf16_fp32_distances_and_strength() -> None:
    from robrep.models import representation

    m = _model(scale=1.0)
    x, _ = _batch(32)
    thr = robrep.threat("linf", 0.05)
    rep = representation(m)

    def run(precision: str, **kw):
        return robrep.representation_attack(m, x, thr, steps=10, generator=torch.Generator().manual_seed(0),
                                            precision=precision, **kw)

    f32, auto, bare = run("fp32"), run("auto"), run("bf16", recheck_steps=0)
    with torch.no_grad():
        d = (rep(auto.x_adv) - rep(x)).norm(dim=1)  # independent: the float32 distance at x_adv
    assert auto.loss.dtype == torch.float32 and torch.allclose(auto.loss, d, rtol=1e-4, atol=1e-5)
    assert bool(thr.contains(auto.x_adv, x).all()) and auto.x_adv.min() >= 0 and auto.x_adv.max() <= 1
    assert bool((auto.loss >= bare.loss - 1e-6).all())  # the float32 re-check only moves further
    # bf16 PGD + 5 float32 steps is about as strong as float32 PGD-10 (mean distance within 2 %)
    assert float(auto.loss.mean()) >= 0.98 * float(f32.loss.mean())


def test_bf16_forward_precision_and_errors(monkeypatch) -> None:
    from robrep.attacks.precision import Bf16Forward

    m, (x, _) = _model(scale=1.0), _batch(4)
    assert Bf16Forward(m, "fp32").ran == "fp32" and torch.equal(Bf16Forward(m, "fp32")(x), m(x))
    if BF16:
        f = Bf16Forward(m, "auto")
        with torch.no_grad():
            out = f(x)
        assert f.ran == "bf16" and out.dtype == torch.float32 and not torch.equal(out, m(x))
        assert torch.allclose(out, m(x), rtol=0.05, atol=0.05)
        with pytest.raises(InputError, match=r"layer '2' \(_Fp32Only\).*--precision fp32"):
            Bf16Forward(_fragile(), "bf16")(x)
        runtime._reset_for_tests()
        fragile = _fragile()
        g = Bf16Forward(fragile, "auto")
        with pytest.warns(RuntimeWarning, match="falls back to fp32"):
            out = g(x)
        assert torch.equal(out, fragile(x)) and g.ran == "fp32"
    monkeypatch.setattr(runtime, "bf16_supported", lambda device="cpu": False)
    assert Bf16Forward(m, "auto").ran == "fp32"
    with pytest.raises(InputError, match="native bf16"):
        Bf16Forward(m, "bf16")


class _GradPassCounter(nn.Module):
    """A linear classifier with wide margins (nothing breaks at the test's eps) that counts the
    forward passes made with an input gradient in a class attribute, so the deep copies an attack
    makes (bf16, channels-last float32) add to the same count."""

    calls = 0

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 4)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(4, 16) * 40.0)
            self.lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            _GradPassCounter.calls += 1
        return self.lin(x.flatten(1))


@needs_bf16
def test_auto_pgd_makes_as_many_gradient_passes_as_fp32() -> None:
    from robrep.attacks.precision import _pgd_steps_to_share

    m = _GradPassCounter()
    _GradPassCounter.calls = 0
    y = torch.arange(4).repeat(3)
    x = torch.full((12, 1, 4, 4), 0.5)
    x[torch.arange(12), 0, y // 4, y % 4] = 1.0  # each example's own pixel bright: margin 20 >> 40 * eps
    thr = robrep.threat("linf", 0.05)
    f32 = pgd(m, x, y, thr, steps=10, generator=torch.Generator().manual_seed(0))
    n_fp32, _GradPassCounter.calls = _GradPassCounter.calls, 0
    auto = create_attack("pgd", steps=10, precision="bf16")(m, x, y, thr, generator=torch.Generator().manual_seed(0))
    assert n_fp32 == 10 and _GradPassCounter.calls == 10  # 7 bf16 steps + the 3 float32 re-check steps
    assert not bool(f32.success.any()) and not bool(auto.success.any())
    assert bool(thr.contains(auto.x_adv, x).all())
    _GradPassCounter.calls = 0
    create_attack("pgd", steps=10, precision="bf16", share_steps=False)(m, x, y, thr)
    assert _GradPassCounter.calls == 13  # all 10 in bf16, then the re-check on top
    # which attacks share: PGD with one restart and a classification loss only
    assert _pgd_steps_to_share(create_attack("pgd", steps=10), {}, 3) == 3
    assert _pgd_steps_to_share(create_attack("pgd", steps=2), {}, 3) == 1  # at least one bf16 step
    assert _pgd_steps_to_share(create_attack("pgd", steps=10, restarts=2), {}, 3) == 0
    assert _pgd_steps_to_share(create_attack("pgd", steps=10), {"loss": "repr"}, 3) == 0
    assert _pgd_steps_to_share(apgd, {}, 3) == 0
