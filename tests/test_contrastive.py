"""Contrastive objectives (SimCLR, NCA losses of Ko et al. 2022 [reconstructed], ACL) and the
augmentations they use.

References written here, independent of the library: a literal NT-Xent (loops over anchors),
literal (loop) NCA losses, literal integer shifts; closed forms for identical embeddings.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

import robrep
from robrep.data import Augment, augment_preset
from robrep.data.augment import (
    brightness_contrast,
    gaussian_noise,
    random_flip,
    random_resized_crop,
    random_translate,
)
from robrep.errors import InputError
from robrep.objectives import StepContext, create_objective
from robrep.objectives.contrastive import (
    multiview_masks,
    nca_accuracy_loss,
    nca_log_loss,
    neighbour_probabilities,
    nt_xent,
)
from robrep.threats import threat

# ---------------------------------------------------------------------------------------------
# independent literal references


def literal_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent exactly as written in Chen et al. (2020), Alg. 1: for each of the 2N
    views k, l(k) = -log exp(sim(z_k, z_pos)/tau) / sum_{m != k} exp(sim(z_k, z_m)/tau)."""
    n = z1.shape[0]
    views = [z1[i] for i in range(n)] + [z2[i] for i in range(n)]

    def sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum() / (torch.sqrt((u * u).sum()) * torch.sqrt((v * v).sum()))

    total = torch.zeros((), dtype=z1.dtype)
    for k in range(2 * n):
        pos = k + n if k < n else k - n
        num = torch.exp(sim(views[k], views[pos]) / tau)
        den = torch.zeros((), dtype=z1.dtype)
        for m in range(2 * n):
            if m != k:
                den = den + torch.exp(sim(views[k], views[m]) / tau)
        total = total - torch.log(num / den)
    return total / (2 * n)


def literal_nca(anchors: torch.Tensor, bank: torch.Tensor, pos: torch.Tensor, exc: torch.Tensor | None, tau: float,
                similarity: str, log: bool) -> torch.Tensor:
    """NCA (Goldberger et al. 2004) with loops: p_ij = exp(s_ij/tau) / sum_{k allowed} exp(s_ik/tau)."""

    def s(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if similarity == "cosine":
            return (u * v).sum() / (u.norm() * v.norm())
        if similarity == "dot":
            return (u * v).sum()
        return -((u - v) ** 2).sum()

    total = torch.zeros((), dtype=anchors.dtype)
    for i in range(anchors.shape[0]):
        den = torch.zeros((), dtype=anchors.dtype)
        num = torch.zeros((), dtype=anchors.dtype)
        for j in range(bank.shape[0]):
            if exc is not None and bool(exc[i, j]):
                continue
            e = torch.exp(s(anchors[i], bank[j]) / tau)
            den = den + e
            if bool(pos[i, j]):
                num = num + e
        total = total + (-torch.log(num / den) if log else -(num / den))
    return total / anchors.shape[0]


# ---------------------------------------------------------------------------------------------
# losses


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_nca_log_with_one_positive_equals_literal_nt_xent(tau: float) -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    ref = literal_nt_xent(z1, z2, tau)
    z = torch.cat([z1, z2])
    pos, exc = multiview_masks(7, 2)
    assert pos.sum(1).eq(1).all()  # one positive per anchor
    got = nca_log_loss(z, z, pos, exc, temperature=tau, similarity="cosine")
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nt_xent(z1, z2, temperature=tau), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,views", [(2, 2), (4, 2), (3, 3), (5, 4)])
def test_identical_embeddings_closed_form(n: int, views: int) -> None:
    z = torch.full((n * views, 6), 0.3, dtype=torch.float64)
    pos, exc = multiview_masks(n, views)
    m, b = views - 1, n * views
    for sim in ("cosine", "dot", "sqeuclidean"):
        log_l = nca_log_loss(z, z, pos, exc, temperature=0.2, similarity=sim)
        acc_l = nca_accuracy_loss(z, z, pos, exc, temperature=0.2, similarity=sim)
        assert float(log_l) == pytest.approx(-math.log(m / (b - 1)), abs=1e-12)
        assert float(acc_l) == pytest.approx(-m / (b - 1), abs=1e-12)
        p = neighbour_probabilities(z, z, exc, temperature=0.2, similarity=sim)
        torch.testing.assert_close(p, (~exc).double() / (b - 1))


def test_no_log_loss_bounds_and_relation_to_log_loss() -> None:
    g = torch.Generator().manual_seed(2)
    for trial in range(20):
        n, views = 2 + trial % 5, 2 + trial % 3
        z = 4 * torch.randn(n * views, 3, generator=g, dtype=torch.float64)
        pos, exc = multiview_masks(n, views)
        tau = [0.05, 0.5, 2.0][trial % 3]
        acc = nca_accuracy_loss(z, z, pos, exc, temperature=tau, reduction="none")
        lg = nca_log_loss(z, z, pos, exc, temperature=tau, reduction="none")
        assert (acc >= -1).all() and (acc <= 0).all()
        assert (lg >= 0).all()
        # per anchor: log loss = -log(-(no-log loss))
        torch.testing.assert_close(lg, -torch.log(-acc))


def test_probabilities_rows_sum_to_one_and_exclusions_are_zero() -> None:
    g = torch.Generator().manual_seed(3)
    a, v = torch.randn(4, 3, generator=g), torch.randn(9, 3, generator=g)
    exc = torch.zeros(4, 9, dtype=torch.bool)
    exc[:, 0] = True
    exc[2, 5] = True
    p = neighbour_probabilities(a, v, exc, temperature=0.3)
    torch.testing.assert_close(p.sum(1), torch.ones(4))
    assert (p[exc] == 0).all() and (p[~exc] > 0).all()


def test_nca_squared_distance_softmax_equals_cosine_at_double_temperature() -> None:
    """For unit vectors -|u-v|^2/(2 tau) = (u.v - 1)/tau, so the softmaxes agree."""
    g = torch.Generator().manual_seed(4)
    z = torch.nn.functional.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    pos, exc = multiview_masks(4, 3)
    for tau in (0.1, 0.7):
        a = nca_log_loss(z, z, pos, exc, temperature=tau, similarity="cosine")
        b = nca_log_loss(z, z, pos, exc, temperature=2 * tau, similarity="sqeuclidean")
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("similarity", ["cosine", "dot", "sqeuclidean"])
@pytest.mark.parametrize("log", [True, False])
def test_nca_values_and_gradients_match_literal_loop(similarity: str, log: bool) -> None:
    g = torch.Generator().manual_seed(5)
    # general case: separate anchors and bank, 1-3 positives per anchor, some exclusions
    anchors = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bank = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.zeros(4, 7, dtype=torch.bool)
    pos[0, 1] = pos[1, [2, 3]] = pos[2, [0, 4, 6]] = pos[3, 5] = True
    exc = torch.zeros(4, 7, dtype=torch.bool)
    exc[0, 0] = exc[1, 6] = exc[3, [0, 1, 2]] = True
    fn = nca_log_loss if log else nca_accuracy_loss
    got = fn(anchors, bank, pos, exc, temperature=0.4, similarity=similarity)
    ref = literal_nca(anchors, bank, pos, exc, 0.4, similarity, log)
    torch.testing.assert_close(got, ref, rtol=1e-11, atol=1e-12)
    ga = torch.autograd.grad(got, (anchors, bank))
    gr = torch.autograd.grad(ref, (anchors, bank))
    for u, v in zip(ga, gr):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-11)
    # and against finite differences
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, pos, exc, temperature=0.4, similarity=similarity), (anchors, bank))


def test_nt_xent_gradient_matches_literal_loop() -> None:
    g = torch.Generator().manual_seed(6)
    z1 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ga = torch.autograd.grad(nt_xent(z1, z2, temperature=0.3), (z1, z2))
    gr = torch.autograd.grad(literal_nt_xent(z1, z2, 0.3), (z1, z2))
    for u, v in zip(ga, gr):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-11)


def test_in_batch_losses_are_invariant_to_batch_order_and_cosine_to_scale() -> None:
    g = torch.Generator().manual_seed(7)
    n, views = 5, 3
    z = torch.randn(n * views, 4, generator=g, dtype=torch.float64)
    pos, exc = multiview_masks(n, views)
    base = nca_log_loss(z, z, pos, exc)
    perm = torch.randperm(n, generator=g)
    zp = z.view(views, n, 4)[:, perm].reshape(n * views, 4)
    torch.testing.assert_close(nca_log_loss(zp, zp, pos, exc), base)
    scale = torch.rand(n * views, 1, generator=g, dtype=torch.float64) + 0.1
    torch.testing.assert_close(nca_log_loss(z * scale, z * scale, pos, exc), base)


def test_multiview_masks() -> None:
    pos, exc = multiview_masks(3, 3)
    assert pos.shape == (9, 9) and exc.equal(torch.eye(9, dtype=torch.bool))
    assert pos.sum(1).eq(2).all() and not (pos & exc).any() and pos.equal(pos.T)
    assert pos[0, 3] and pos[0, 6] and pos[4, 1] and not pos[0, 1]


def test_loss_input_errors() -> None:
    z = torch.randn(4, 3)
    pos, exc = multiview_masks(2, 2)
    with pytest.raises(InputError, match="excluded"):
        nca_log_loss(z, z, pos | exc, exc)
    nopos = pos.clone()
    nopos[0] = False
    with pytest.raises(InputError, match="positive"):
        nca_accuracy_loss(z, z, nopos, exc)
    with pytest.raises(InputError, match="temperature"):
        nca_log_loss(z, z, pos, exc, temperature=0.0)
    with pytest.raises(InputError, match="similarity"):
        nca_log_loss(z, z, pos, exc, similarity="l1")
    with pytest.raises(InputError, match="bool mask"):
        nca_log_loss(z, z, pos.float(), exc)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        nt_xent(torch.randn(3, 2), torch.randn(4, 2))


# ---------------------------------------------------------------------------------------------
# augmentations


def _imgs(b: int = 16, c: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_augment_shape_range_determinism() -> None:
    x = _imgs()
    for name in ("digits", "clothes", "natural"):
        aug = augment_preset(name)
        a = aug(x, torch.Generator().manual_seed(3))
        b = aug(x, torch.Generator().manual_seed(3))
        c = aug(x, torch.Generator().manual_seed(4))
        assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, b) and not torch.equal(a, c)
    assert augment_preset("mnist").flip == 0 and augment_preset("fashion-mnist").flip > 0
    assert torch.equal(augment_preset("none")(x), x)
    assert Augment.from_dict(json.loads(json.dumps(augment_preset("clothes").to_dict()))) == augment_preset("clothes")
    with pytest.raises(InputError):
        augment_preset("nope")
    with pytest.raises(InputError):
        random_resized_crop(x[0], None)


def test_translate_equals_literal_shift() -> None:
    x = _imgs(12)
    g = torch.Generator().manual_seed(5)
    out = random_translate(x, g, max_shift=3)
    seen = set()
    for b in range(x.shape[0]):  # find the integer shift that explains image b exactly
        matches = []
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                ref = torch.zeros_like(x[b])  # out[i, j] = x[i - dy, j - dx], zero outside
                ref[:, max(dy, 0) : 28 + min(dy, 0), max(dx, 0) : 28 + min(dx, 0)] = \
                    x[b, :, max(-dy, 0) : 28 + min(-dy, 0), max(-dx, 0) : 28 + min(-dx, 0)]
                if torch.allclose(out[b], ref, atol=1e-5):
                    matches.append((dy, dx))
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 3  # shifts vary across the batch


def test_flip_is_exact_mirror_with_probability_p() -> None:
    x = _imgs(400)
    out = random_flip(x, torch.Generator().manual_seed(1), p=0.3)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped | same).all()
    assert 0.22 < flipped.float().mean() < 0.38
    assert torch.equal(random_flip(x, None, p=0.0), x)


def test_random_resized_crop_geometry_on_ramps() -> None:
    """Bilinear interpolation reproduces linear ramps exactly, so the output slopes give the
    crop box: width w and height h (fractions of the image) with w*h in scale and w/h in ratio."""
    n = 28
    ramp = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    x = torch.stack([ramp[None, :].expand(n, n), ramp[:, None].expand(n, n)])[None].repeat(64, 1, 1, 1)
    out = random_resized_crop(x, torch.Generator().manual_seed(0), scale=(0.3, 0.8), ratio=(0.5, 2.0))
    inner = out[:, :, 2:-2, 2:-2]
    w = (inner[:, 0, :, 1:] - inner[:, 0, :, :-1]).mean((1, 2)) * n
    h = (inner[:, 1, 1:, :] - inner[:, 1, :-1, :]).mean((1, 2)) * n
    # the ramps stay linear inside the crop
    torch.testing.assert_close(inner[:, 0, :, 1:] - inner[:, 0, :, :-1], (w / n)[:, None, None].expand(64, 24, 23), atol=1e-9, rtol=0)
    area, r = w * h, w / h
    assert (area >= 0.3 - 1e-9).all() and (area <= 0.8 + 1e-9).all() and area.std() > 0.05
    assert (r >= 0.5 - 1e-9).all() and (r <= 2.0 + 1e-9).all()
    ident = random_resized_crop(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(ident, x, atol=1e-12, rtol=0)


def test_noise_and_jitter_statistics() -> None:
    x = torch.full((64, 1, 28, 28), 0.5)
    d = gaussian_noise(x, torch.Generator().manual_seed(0), std=0.05) - x
    assert abs(float(d.std()) - 0.05) < 0.002 and abs(float(d.mean())) < 0.002
    y = brightness_contrast(x, torch.Generator().manual_seed(0), brightness=0.0, contrast=0.5)
    torch.testing.assert_close(y, x)  # contrast about the mean leaves a flat image unchanged
    z = brightness_contrast(x, torch.Generator().manual_seed(0), brightness=0.2, contrast=0.0)
    off = (z - x).flatten(1)
    assert (off.std(1) < 1e-6).all() and off.abs().max() <= 0.2 + 1e-6 and off.mean(1).std() > 0.05


# ---------------------------------------------------------------------------------------------
# objectives


def _tiny() -> robrep.models.RobrepModel:
    torch.manual_seed(0)
    return robrep.create_model("small-cnn", num_classes=5, input_shape=(1, 28, 28), width=4, feat_dim=16)


def _mlp() -> robrep.models.RobrepModel:
    """An encoder whose features move with the input (a random small-cnn is nearly constant)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    return robrep.models.wrap(net, num_classes=5, input_shape=(1, 28, 28), mean=(0.5,), std=(0.5,))


OBJ_CASES = [
    ("simclr", {}),
    ("nacl", {"views": 3, "log": True}),
    ("nacl", {"log": False, "similarity": "sqeuclidean", "temperature": 4.0}),
    ("intnacl", {"mode": "weighted", "steps": 2}),
    ("intnacl", {"mode": "positive", "log": False, "steps": 2}),
    ("acl", {"steps": 2}),
    ("simclr", {"head": "logits"}),
]


@pytest.mark.parametrize("name,kw", OBJ_CASES)
def test_objective_smoke_gradients_determinism(name: str, kw: dict) -> None:
    x = _imgs(8)
    thr = threat("linf", 0.1)
    losses = []
    for _ in range(2):
        model = _tiny()
        obj = create_objective(name, augment="clothes", **kw)
        assert obj.supervised is False
        obj.setup(model, x)
        loss, metrics = obj.loss(model, x, torch.zeros(8, dtype=torch.long), StepContext(thr, torch.Generator().manual_seed(9)))
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        head = obj.extra_modules()
        params = dict(model.named_parameters())
        if kw.get("head") == "logits":
            assert head is None
        else:
            assert head is not None
            params.update({f"head.{k}": p for k, p in head.named_parameters()})
            params = {k: p for k, p in params.items() if not k.startswith("net.fc.")}  # fc is unused with a head
        for k, p in params.items():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, k
        assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())
        json.dumps(obj.config())
        losses.append(float(loss.detach()))
    assert losses[0] == losses[1]


def test_simclr_objective_equals_nacl_two_views_log() -> None:
    x = _imgs(10)
    model = _tiny()
    a = create_objective("simclr", augment="digits")
    b = create_objective("nacl", augment="digits", views=2, log=True)
    a.setup(model, x)
    b.head = a.head  # same projection head
    la, _ = a.loss(model, x, None, StepContext(None, torch.Generator().manual_seed(1)))
    lb, _ = b.loss(model, x, None, StepContext(None, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(la, lb)


def test_intnacl_attack_raises_the_adversarial_term() -> None:
    """Views are drawn before the attack, so with one seed eps=0 and eps>0 share the views: the
    clean term agrees and the PGD view must raise the adversarial term. At eps=0 the weighted
    loss equals the closed expression built from the public loss functions."""
    x = _imgs(12)
    model = _mlp()
    obj = create_objective("intnacl", augment="digits", mode="weighted", alpha=0.7, steps=5)
    obj.setup(model, x)
    l0, m0 = obj.loss(model, x, None, StepContext(threat("linf", 0.0), torch.Generator().manual_seed(2)))
    l1, m1 = obj.loss(model, x, None, StepContext(threat("linf", 0.2), torch.Generator().manual_seed(2)))
    torch.testing.assert_close(m0["clean_loss"], m1["clean_loss"])
    assert float(m1["adv_loss"]) > float(m0["adv_loss"]) + 0.2
    # closed expression at eps = 0: the adversarial view is x1 itself
    g = torch.Generator().manual_seed(2)
    x1, x2 = obj.augment(x, g), obj.augment(x, g)
    emb = obj.embedder(model)
    z1, z2 = emb(x1), emb(x2)
    zc = torch.cat([z1, z2])
    pos, exc = multiview_masks(12, 2)
    ids = torch.arange(12)
    adv_pos = torch.cat([ids, ids])[None, :] == ids[:, None]
    exact = nca_log_loss(zc, zc, pos, exc) + 0.7 * nca_log_loss(z1, zc, adv_pos)
    torch.testing.assert_close(l0, exact)


def test_acl_adversarial_views_stay_in_ball_and_raise_loss() -> None:
    x = _imgs(8)
    model = _mlp()
    obj = create_objective("acl", augment="digits", clean_weight=1.0, steps=4)
    obj.setup(model, x)
    _, m0 = obj.loss(model, x, None, StepContext(threat("linf", 0.0), torch.Generator().manual_seed(3)))
    _, m1 = obj.loss(model, x, None, StepContext(threat("linf", 0.15), torch.Generator().manual_seed(3)))
    assert float(m1["adv_loss"]) > float(m0["adv_loss"]) + 0.5
    torch.testing.assert_close(m0["adv_loss"], m0["clean_loss"])  # eps = 0: adversarial views are the clean views
    torch.testing.assert_close(m1["clean_loss"], m0["clean_loss"])  # same views under one seed
    pure = create_objective("acl", augment="digits", clean_weight=0.0, steps=4)
    pure.head = obj.head
    l2, m2 = pure.loss(model, x, None, StepContext(threat("linf", 0.15), torch.Generator().manual_seed(3)))
    torch.testing.assert_close(l2, m1["adv_loss"])  # A2A: only the adversarial pair
    # the attack itself: views within eps of the clean views, in [0,1]
    thr = threat("linf", 0.15)
    xc = torch.cat([obj.augment(x, torch.Generator().manual_seed(3)), obj.augment(x, torch.Generator().manual_seed(4))])
    emb = obj.embedder(model)
    xa = obj._attack(model, emb, xc, lambda z, _t: nt_xent(*z.chunk(2), reduction="none"), StepContext(thr, torch.Generator().manual_seed(0)))
    assert thr.contains(xa, xc).all() and xa.min() >= 0 and xa.max() <= 1


def test_objective_option_errors() -> None:
    for name, kw in [("nacl", {"views": 1}), ("intnacl", {"mode": "both"}), ("intnacl", {"alpha": -1}),
                     ("simclr", {"similarity": "dot"}), ("simclr", {"head": "conv"}), ("acl", {"steps": 0}),
                     ("simclr", {"augment": {"flop": 1}}), ("simclr", {"bogus": 1})]:
        with pytest.raises(InputError):
            create_objective(name, **kw)
    obj = create_objective("simclr")
    with pytest.raises(InputError, match="setup"):
        obj.loss(_tiny(), _imgs(4), None, StepContext(None, None))
    assert create_objective("intnacl").needs_threat and not create_objective("nacl").needs_threat


def test_train_cli_with_contrastive_objective_and_probe(tmp_path, demo_data) -> None:
    """``robrep train --objective intnacl`` end to end on 80 demo images, then a linear probe
    on the penultimate layer of the saved encoder."""
    from robrep.cli import train as train_cmd

    p = argparse.ArgumentParser()
    train_cmd.register(p.add_subparsers())
    out = tmp_path / "run"
    args = p.parse_args(["train", "--objective", "intnacl", "--dataset", "demo", "--eps", "0.1", "--epochs", "1",
                         "--batch-size", "40", "--train-fraction", "0.016", "--optimizer", "adam", "--lr", "0.001",
                         "--objective-arg", "steps=1", "--objective-arg", "augment=\"clothes\"", "--objective-arg", "alpha=0.5",
                         "--model-arg", "width=4", "--out", str(out), "--quiet", "--json"])
    assert args.func(args) == 0
    assert (out / "model.safetensors").exists() and (out / "objective.safetensors").exists()
    model = robrep.load(out / "model.safetensors")
    rec = json.loads((out / "record.json").read_text())
    assert rec["config"]["objective"] == "intnacl" and "train_adv_loss" in rec["metrics"]
    tr, te = demo_data
    from robrep.evaluate import linear_probe

    res = linear_probe(model, tr.head(200), te.head(100), layer="penultimate", epochs=2,
                                       eval_threat=threat("linf", 0.1), eval_steps=2)
    assert 0.0 <= res.adversarial_accuracy <= res.natural_accuracy <= 1.0
