"""Attacks: closed forms on linear models, properties, and strength against torchattacks."""

from __future__ import annotations

import pytest
import torch

import robrep
from robrep.attacks import apgd, pgd


def linear_binary(w: torch.Tensor, b: float = 0.0) -> robrep.RobrepModel:
    """logits = [0, w.x + b] on flattened (1, 1, d) inputs, normalization identity."""
    d = w.numel()
    m = robrep.create_model("linear", num_classes=2, input_shape=(1, 1, d), mean=(0.0,), std=(1.0,))
    with torch.no_grad():
        m.net.fc.weight.zero_()
        m.net.fc.weight[1] = w
        m.net.fc.bias.zero_()
        m.net.fc.bias[1] = b
    return m.eval()


def test_one_linf_step_is_eps_sign_w() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(12, generator=g)
    m = linear_binary(w)
    x = torch.full((3, 1, 1, 12), 0.5)
    y = torch.zeros(3, dtype=torch.long)  # increasing w.x increases the loss of class 0
    r = pgd(m, x, y, robrep.threat("linf", 0.1), steps=1, step_size=0.1, random_start=False, keep_best=False)
    assert torch.allclose(r.x_adv, x + 0.1 * torch.sign(w).view(1, 1, 1, -1), atol=1e-7)


def test_one_l2_step_is_eps_w_over_norm() -> None:
    w = torch.randn(12, generator=torch.Generator().manual_seed(1))
    m = linear_binary(w)
    x = torch.full((2, 1, 1, 12), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    r = pgd(m, x, y, robrep.threat("l2", 0.2), steps=1, step_size=0.2, random_start=False, keep_best=False)
    assert torch.allclose(r.x_adv, x + 0.2 * (w / w.norm()).view(1, 1, 1, -1), atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_pgd_finds_the_exact_robust_accuracy_of_a_linear_model(norm: str) -> None:
    """Binary linear model: x is robust iff its margin exceeds eps * ||w||_* (box not binding)."""
    g = torch.Generator().manual_seed(2)
    d = 20
    w = torch.randn(d, generator=g)
    m = linear_binary(w, b=-float(w.sum()) * 0.5)  # boundary through the centre of the box
    x = 0.35 + 0.3 * torch.rand(400, 1, 1, d, generator=g)
    margin_raw = x.flatten(1) @ w + m.net.fc.bias[1].detach()
    y = (margin_raw > 0).long()
    eps = {"linf": 0.01, "l2": 0.08, "l1": 0.15}[norm]
    thr = robrep.threat(norm, eps)
    slack = margin_raw.abs() / thr.dual_norm(w) - eps  # > 0 iff robust (exactly)
    clear = slack.abs() > 0.01 * eps  # leave out near-ties that no finite-step attack resolves
    r = pgd(m, x[clear], y[clear], thr, steps=100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(~r.success, slack[clear] > 0)
    assert clear.float().mean() > 0.95
    assert 0.1 < float((slack > 0).float().mean()) < 0.9  # the case is not trivial


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce", "apgd-dlr", "fgsm", "apgd-t", "fab-t", "square", "fast"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_outputs_inside_ball_and_box(tiny_trained, demo_data, attack: str, norm: str) -> None:
    model, _ = tiny_trained
    x, y = next(iter(demo_data[1].head(32).batches(32)))
    thr = robrep.threat(norm, 0.1 if norm == "linf" else 1.0)
    kw = {"fgsm": {}, "apgd-t": {"steps": 5, "targets": 2}, "fab-t": {"steps": 5, "targets": 2},
          "square": {"queries": 30}, "fast": {"steps": 5, "targets": 2}}.get(attack, {"steps": 5})
    r = robrep.create_attack(attack, **kw)(model, x, y, thr, generator=torch.Generator().manual_seed(0))
    assert thr.contains(r.x_adv, x, tol=1e-6).all()
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1


def test_l1_pgd_inside_ball(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, y = next(iter(demo_data[1].head(16).batches(16)))
    thr = robrep.threat("l1", 5.0)
    r = pgd(model, x, y, thr, steps=10, generator=torch.Generator().manual_seed(0))
    assert (thr.norm_of(r.x_adv - x) <= 5.0 + 1e-4).all()


def test_seed_determinism_and_batch_equals_per_example(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, y = next(iter(demo_data[1].head(6).batches(6)))
    thr = robrep.threat("linf", 0.1)
    a = pgd(model, x, y, thr, steps=5, generator=torch.Generator().manual_seed(3)).x_adv
    b = pgd(model, x, y, thr, steps=5, generator=torch.Generator().manual_seed(3)).x_adv
    assert torch.equal(a, b)
    batch = pgd(model, x, y, thr, steps=5, random_start=False).x_adv
    single = torch.cat([pgd(model, x[i : i + 1], y[i : i + 1], thr, steps=5, random_start=False).x_adv for i in range(6)])
    assert torch.allclose(batch, single, atol=1e-6)


def test_robust_accuracy_non_increasing_in_eps(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    te = demo_data[1].head(200)
    from robrep.evaluate import robust_accuracy_curve

    pts = robust_accuracy_curve(model, te, robrep.threat("linf", 0.1), [0.0, 0.01, 0.03, 0.06, 0.1, 0.2],
                                attack="pgd", attack_kwargs={"steps": 20})
    accs = [a for _, a in pts]
    assert all(a2 <= a1 for a1, a2 in zip(accs, accs[1:])), accs
    assert accs[0] > 0.6 and accs[-1] < accs[0]


def test_keep_best_never_worse_than_last_iterate(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, y = next(iter(demo_data[1].head(100).batches(100)))
    thr = robrep.threat("linf", 0.05)
    best = pgd(model, x, y, thr, steps=10, step_size=0.02, generator=torch.Generator().manual_seed(0))
    last = pgd(model, x, y, thr, steps=10, step_size=0.02, keep_best=False, generator=torch.Generator().manual_seed(0))
    assert best.success.sum() >= last.success.sum()


def test_targeted_pgd_reaches_target(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, y = next(iter(demo_data[1].head(20).batches(20)))
    t = (y + 1) % 10
    r = pgd(model, x, t, robrep.threat("linf", 0.3), steps=40, targeted=True, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(r.x_adv).argmax(1) == t).float().mean() > 0.9
    assert torch.equal(r.success, model(r.x_adv).argmax(1) == t)


def test_representation_attack_brings_representations_together(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, _ = next(iter(demo_data[1].head(8).batches(8)))
    x2 = x.flip(0)
    rep = robrep.representation(model)
    with torch.no_grad():
        before = (rep(x) - rep(x2)).norm(dim=1)
    r = robrep.representation_attack(model, x, robrep.threat("linf", 0.2), x_target=x2, steps=50,
                                     generator=torch.Generator().manual_seed(0))
    assert (r.loss < 0.75 * before).all() and r.loss.sum() < 0.5 * before.sum()
    with torch.no_grad():
        assert torch.allclose(r.loss, (rep(r.x_adv) - rep(x2)).norm(dim=1), atol=1e-4)


def test_apgd_and_pgd_not_weaker_than_torchattacks(tiny_trained, demo_data) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, _ = tiny_trained
    x, y = next(iter(demo_data[1].head(300).batches(300)))
    eps = 0.05
    thr = robrep.threat("linf", eps)
    ours = robrep.evaluate(model, (x, y), threat=thr, attack="pgd", attack_kwargs={"steps": 20, "step_size": eps / 4}).robust_accuracy
    ta = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True)
    torch.manual_seed(0)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    xa = ta(x, y)
    with torch.no_grad():
        theirs = float(((model(xa).argmax(1) == y) & ok).float().mean())
    assert ours <= theirs + 0.005, (ours, theirs)
    ap = robrep.evaluate(model, (x, y), threat=thr, attack="apgd", attack_kwargs={"steps": 50}).robust_accuracy
    assert ap <= ours + 0.005, (ap, ours)


def test_apgd_l2_and_cascade(tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, y = next(iter(demo_data[1].head(100).batches(100)))
    thr = robrep.threat("l2", 1.0)
    ce = apgd(model, x, y, thr, steps=30, loss="ce", generator=torch.Generator().manual_seed(0))
    both = robrep.create_attack("apgd", steps=30)(model, x, y, thr, generator=torch.Generator().manual_seed(0))
    assert both.success.sum() >= ce.success.sum()
    assert thr.contains(both.x_adv, x).all()


def test_attack_rejects_bad_input(tiny_trained) -> None:
    model, _ = tiny_trained
    y = torch.zeros(2, dtype=torch.long)
    thr = robrep.threat("linf", 0.1)
    with pytest.raises(robrep.InputError, match=r"\[0,1\]"):
        pgd(model, torch.full((2, 1, 28, 28), 2.0), y, thr)
    with pytest.raises(robrep.InputError, match="NaN"):
        pgd(model, torch.full((2, 1, 28, 28), float("nan")), y, thr)
    with pytest.raises(robrep.InputError, match="channels"):
        pgd(model, torch.rand(2, 3, 28, 28), y, thr)
    with pytest.raises(robrep.InputError, match="shape"):
        pgd(model, torch.rand(1, 28, 28), y, thr)


# --- the optimised attacks equal the previous implementation (tests/attack_reference.py) ----------


def _random_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(11)
    lin = robrep.create_model("linear", num_classes=5, input_shape=(1, 6, 6), mean=(0.5,), std=(0.25,)).eval()
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, stride=2),
                               torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 5)).eval()
    for p in list(lin.parameters()) + list(conv.parameters()):
        p.data.mul_(3.0)  # larger logits: some examples break at these radii, others do not
    return {"linear": lin, "conv": conv}


def _same(new, ref, exact: bool = True) -> None:  # type: ignore[no-untyped-def]
    if exact:
        assert torch.equal(new.x_adv, ref.x_adv), float((new.x_adv - ref.x_adv).abs().max())
        assert torch.equal(new.loss, ref.loss) or torch.allclose(new.loss, ref.loss, equal_nan=True, rtol=0, atol=0)
    else:
        assert torch.allclose(new.x_adv, ref.x_adv, atol=1e-6, rtol=0)
        assert torch.allclose(new.loss, ref.loss, atol=1e-6, rtol=0, equal_nan=True)
    assert torch.equal(new.success, ref.success)
    assert new.queries == ref.queries


@pytest.mark.parametrize("arch", ["linear", "conv"])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_pgd_equals_the_reference_implementation(arch: str, norm: str) -> None:
    """Bit for bit: x_adv, loss, success and queries, for every loss, with and without the
    best-iterate tracking, targeted or not, on random linear and conv models."""
    from attack_reference import reference_pgd

    model = _random_models()[arch]
    g = torch.Generator().manual_seed(5)
    x = torch.rand(24, 1, 6, 6, generator=g)
    x[:3] = torch.where(x[:3] > 0.5, 1.0, 0.0)  # on the box faces: clipping is active
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).indices
    thr = robrep.threat(norm, {"linf": 0.03, "l2": 0.15, "l1": 0.6}[norm])
    for targeted in (False, True):
        y = top2[:, 1] if targeted else top2[:, 0]  # the model's label / runner-up: success not trivial
        for keep_best in (True, False):
            for loss in ("ce", "cw", "dlr"):
                kw = dict(steps=7, loss=loss, targeted=targeted, keep_best=keep_best)
                new = pgd(model, x, y, thr, generator=torch.Generator().manual_seed(1), **kw)
                ref = reference_pgd(model, x, y, thr, generator=torch.Generator().manual_seed(1), **kw)
                _same(new, ref)
                assert 0 < int(new.success.sum()) < 24, (targeted, keep_best, loss)  # a discriminating case


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_without_random_start_and_zero_eps_equal_the_reference(norm: str) -> None:
    from attack_reference import reference_pgd

    model = _random_models()["conv"]
    x = torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    y = torch.arange(10) % 5
    for eps, steps in ((0.05, 5), (0.0, 3), (0.05, 0)):
        thr = robrep.threat(norm, eps)
        for kb in (True, False):
            _same(pgd(model, x, y, thr, steps=steps, random_start=False, keep_best=kb),
                  reference_pgd(model, x, y, thr, steps=steps, random_start=False, keep_best=kb))


def test_pgd_representation_loss_equals_the_reference() -> None:
    from attack_reference import reference_pgd

    model = _random_models()["conv"]
    rep = torch.nn.Sequential(*list(model.children())[:-1])  # 16-d features, no notion of success
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    tgt = rep(x.flip(0)).detach()
    thr = robrep.threat("linf", 0.1)
    for restarts in (1, 3):
        kw = dict(steps=6, loss="repr", targeted=True, restarts=restarts)
        new = pgd(rep, x, tgt, thr, generator=torch.Generator().manual_seed(0), **kw)
        ref = reference_pgd(rep, x, tgt, thr, generator=torch.Generator().manual_seed(0), **kw)
        _same(new, ref, exact=False)  # restarts on the whole batch (no success): same numbers


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_only_on_unbroken_examples_give_the_same_robust_accuracy(norm: str) -> None:
    """Later restarts run only on the examples not yet broken: the success flags equal those of
    the reference (every restart on every example); unbroken examples get identical points; the
    generator advances exactly as before."""
    from attack_reference import reference_pgd

    model = _random_models()["conv"]
    g = torch.Generator().manual_seed(7)
    x = torch.rand(40, 1, 6, 6, generator=g)
    y = torch.randint(0, 5, (40,), generator=g)
    thr = robrep.threat(norm, 0.05 if norm == "linf" else 0.3)
    for kb in (True, False):
        gn, gr = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        new = pgd(model, x, y, thr, steps=5, restarts=4, keep_best=kb, generator=gn)
        ref = reference_pgd(model, x, y, thr, steps=5, restarts=4, keep_best=kb, generator=gr)
        assert torch.equal(new.success, ref.success)
        assert 0 < int(ref.success.sum()) < 40
        keep = ~ref.success
        assert torch.allclose(new.x_adv[keep], ref.x_adv[keep], atol=1e-6, rtol=0)
        assert torch.allclose(new.loss[keep], ref.loss[keep], atol=1e-6, rtol=0)
        assert thr.contains(new.x_adv, x, tol=1e-6).all()
        with torch.no_grad():
            assert torch.equal(model(new.x_adv).argmax(1) != y, new.success)
        assert torch.equal(torch.rand(3, generator=gn), torch.rand(3, generator=gr))


def test_pgd_perturb_is_pgd_last_iterate() -> None:
    from robrep.attacks.pgd import pgd_perturb

    model = _random_models()["conv"]
    x = torch.rand(12, 1, 6, 6, generator=torch.Generator().manual_seed(8))
    y = torch.arange(12) % 5
    for norm in ("linf", "l2", "l1"):
        thr = robrep.threat(norm, {"linf": 0.05, "l2": 0.3, "l1": 1.0}[norm])
        a = pgd_perturb(model, x, y, thr, steps=5, generator=torch.Generator().manual_seed(0))
        b = pgd(model, x, y, thr, steps=5, keep_best=False, generator=torch.Generator().manual_seed(0)).x_adv
        assert torch.equal(a, b)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_equals_the_reference_implementation(loss: str, norm: str) -> None:
    from attack_reference import reference_apgd

    model = _random_models()["conv"]
    g = torch.Generator().manual_seed(9)
    x = torch.rand(30, 1, 6, 6, generator=g)
    y = torch.randint(0, 5, (30,), generator=g)
    thr = robrep.threat(norm, 0.04 if norm == "linf" else 0.25)
    for targeted in (False, True):
        kw = dict(steps=12, loss=loss, restarts=2, targeted=targeted)
        new = apgd(model, x, y, thr, generator=torch.Generator().manual_seed(2), **kw)
        ref = reference_apgd(model, x, y, thr, generator=torch.Generator().manual_seed(2), **kw)
        _same(new, ref)


def test_tracker_keeps_success_then_score() -> None:
    from robrep.attacks.pgd import Tracker

    x = torch.zeros(4, 1, 1, 2)
    t = Tracker(x, targeted=False)
    t.update(x + 1, torch.tensor([1.0, 5.0, float("nan"), 2.0]), torch.tensor([False, True, False, False]))
    t.update(x + 2, torch.tensor([3.0, 9.0, 1.0, 1.0]), torch.tensor([False, False, False, True]))
    assert t.x[:, 0, 0, 0].tolist() == [2.0, 1.0, 2.0, 2.0]
    assert t.loss.tolist() == [3.0, 5.0, 1.0, 1.0] and t.success.tolist() == [False, True, False, True]
    t.update(x[[0, 3]] + 3, torch.tensor([4.0, 7.0]), torch.tensor([False, True]), torch.tensor([0, 3]))
    assert t.x[:, 0, 0, 0].tolist() == [3.0, 1.0, 2.0, 3.0] and t.loss.tolist() == [4.0, 5.0, 1.0, 7.0]


def test_compiled_model_matches_eager() -> None:
    """torch.compile (opt-in): the compiled model's outputs and input gradients equal eager ones
    within 1e-5, and pgd(compile=True) reaches the same points."""
    from robrep._compile import compile_problem, maybe_compile

    problem = compile_problem()
    if problem is not None:
        pytest.skip(f"torch.compile unavailable here: {problem}")
    model = _random_models()["conv"]
    x = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    cm = maybe_compile(model, True)
    assert maybe_compile(model, False) is model
    with torch.no_grad():
        assert torch.allclose(cm(x), model(x), atol=1e-5, rtol=0)
    y = torch.arange(6) % 5
    thr = robrep.threat("linf", 0.05)
    a = pgd(model, x, y, thr, steps=3, compile=True, generator=torch.Generator().manual_seed(0))
    b = pgd(model, x, y, thr, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a.loss, b.loss, atol=1e-5, rtol=0)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-5, rtol=0) or float((a.x_adv != b.x_adv).float().mean()) < 0.01
