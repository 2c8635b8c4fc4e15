"""GPU-oriented options checked for equivalence on CPU.

- ``channels_last``: NHWC is a memory layout only; training gives the same weights and history.
- ``amp``: bf16 autocast (CUDA and CPU) stays close to float32 training.
- attacks under ``torch.autocast``: PGD still returns points inside the ball and [0,1] with the
  same robust-accuracy flags as in float32 (up to a few near-ties).
- smoothing ``batch_size``: noise is drawn per batch, so counts depend on ``batch_size`` only in
  distribution (see :func:`test_smoothing_counts_and_radius_do_not_depend_on_batch_size`).

``compile=True`` equivalence is covered by ``test_train.py::test_compiled_training_matches_eager``
and ``test_attacks.py::test_compiled_model_matches_eager``.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn

import robrep
from robrep.attacks import pgd
from robrep.certify import certify
from robrep.certify.smoothing import (
    clopper_pearson_lower,
    cohen_radius,
    image_generator,
    sample_counts,
)
from test_smoothing import Linear2


def _train(tmp_path, demo_data, name: str, **over):  # type: ignore[no-untyped-def]
    """1 epoch of small-cnn, 4 batches of 64 demo images, constant lr (so every step counts)."""
    kw = dict(model="small-cnn", dataset="demo", epochs=1, batch_size=64, eval_n=0, seed=3, device="cpu",
              schedule="constant", lr=0.05)
    kw.update(over)
    tr = demo_data[0].head(256)
    return robrep.train(robrep.TrainConfig(**kw), tmp_path / name, train_data=tr, show_progress=False)


def _max_weight_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


@pytest.mark.parametrize("objective", ["standard", "pgd"])
def test_channels_last_training_matches_contiguous(tmp_path, demo_data, objective: str) -> None:
    """Same weights (atol 1e-4; observed max |diff| 3e-8) and history (abs 1e-5; observed loss
    diff ~1e-7, accuracy exact)."""
    kw = dict(objective=objective, eps=0.1 if objective == "pgd" else 0.0,
              objective_kwargs={"steps": 2} if objective == "pgd" else {})
    ref = _train(tmp_path, demo_data, "nchw", **kw)
    cl = _train(tmp_path, demo_data, "nhwc", channels_last=True, **kw)
    assert _max_weight_diff(ref.model, cl.model) < 1e-4
    h0, h1 = ref.history[0], cl.history[0]
    assert {k for k in h0 if k.startswith("train_")} == {k for k in h1 if k.startswith("train_")}
    for k in h0:
        if k.startswith("train_"):
            assert h1[k] == pytest.approx(h0[k], abs=1e-5), k


@pytest.mark.parametrize("objective", ["standard", "pgd"])
def test_bf16_autocast_training_on_cpu_is_close_to_fp32(tmp_path, demo_data, objective: str) -> None:
    """TrainConfig(amp=True) autocasts to bf16 on CPU too: weights stay float32 and finite, differ
    from the fp32 run (autocast is active) but stay within 0.05 (observed max |diff| 2.6e-4
    standard, 1.2e-3 pgd), and the epoch's loss is within 5 % and accuracy within 0.05 of the
    fp32 run (observed loss diff < 0.002 %, accuracy diff 0 and 0.004)."""
    kw = dict(objective=objective, eps=0.1 if objective == "pgd" else 0.0,
              objective_kwargs={"steps": 2} if objective == "pgd" else {})
    ref = _train(tmp_path, demo_data, "fp32", **kw)
    amp = _train(tmp_path, demo_data, "bf16", amp=True, **kw)
    for p in amp.model.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
    diff = _max_weight_diff(ref.model, amp.model)
    assert 0 < diff < 0.05, diff
    h0, h1 = ref.history[0], amp.history[0]
    assert math.isfinite(h1["train_loss"])
    assert h1["train_loss"] == pytest.approx(h0["train_loss"], rel=0.05)
    acc = "train_acc" if objective == "standard" else "train_adv_acc"
    assert abs(h1[acc] - h0[acc]) <= 0.05


def _conv_model() -> nn.Module:
    torch.manual_seed(11)
    conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).eval()
    for p in conv.parameters():
        p.data.mul_(3.0)  # larger logits: some examples break at eps 0.1, others do not
    return conv


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_pgd_under_bf16_autocast_stays_in_ball_and_agrees_with_fp32(loss: str) -> None:
    """PGD inside ``torch.autocast("cpu", bfloat16)``: float32 outputs inside the L-inf ball and
    [0,1]; success flags agree with fp32 on >= 90 % of 64 examples (observed 100 % for ce, 98.4 %
    for dlr, with 27-34 % robust) and equal the bf16 model's own misclassifications."""
    model = _conv_model()
    x = torch.rand(64, 1, 14, 14, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    thr = robrep.threat("linf", 0.1)
    ref = pgd(model, x, y, thr, steps=5, loss=loss, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        new = pgd(model, x, y, thr, steps=5, loss=loss, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model(new.x_adv)
    assert out.dtype == torch.bfloat16  # the model really ran in bf16
    assert new.x_adv.dtype == torch.float32 and new.loss.dtype == torch.float32
    assert float((new.x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(new.x_adv.min()) >= 0.0 and float(new.x_adv.max()) <= 1.0
    assert thr.contains(new.x_adv, x).all()
    assert torch.equal(out.argmax(1) != y, new.success)
    assert 0 < int(ref.success.sum()) < 64  # a discriminating case
    agree = float((new.success == ref.success).float().mean())
    assert agree >= 0.9, agree


def test_smoothing_counts_and_radius_do_not_depend_on_batch_size() -> None:
    """``_noise_batches`` draws ``randn((b, C, H, W))`` per batch, so robrep itself only
    guarantees that counts do not depend on ``batch_size`` in distribution (and exactly when
    every batch_size >= n: one draw). Here the image has 15 pixels, for which torch's CPU sampler
    gives other noise for other batch sizes; the smoothed probability is known exactly (linear
    model, p = Phi(margin / sigma)), and the counts of batch_size 7, 100 and 1000 lie within
    4 binomial standard deviations of n p, and so do the certified radii (within the radii of
    those count bounds)."""
    d = 15
    w = torch.full((1, 3, 5), 1 / math.sqrt(d))  # ||w|| = 1
    model = Linear2(w, -(math.sqrt(d) - 0.2))
    x = torch.ones(1, 3, 5)  # w.x = sqrt(15): margin 0.2
    sigma, n, alpha = 0.25, 20_000, 1e-3
    p = float(norm.cdf(0.2 / sigma))  # 0.788
    sd = math.sqrt(n * p * (1 - p))  # ~58 samples
    for bs in (7, 100, 1000):
        c = sample_counts(model, x, sigma, n, batch_size=bs, generator=image_generator(0, 0))
        assert int(c.sum()) == n
        assert abs(float(c[1]) - n * p) < 4 * sd, (bs, int(c[1]), n * p)
    # one batch whenever batch_size >= n: identical counts
    one = [sample_counts(model, x, sigma, 1000, batch_size=bs, generator=image_generator(1, 0)) for bs in (1000, 5000)]
    assert torch.equal(one[0], one[1])
    lo = cohen_radius(clopper_pearson_lower(int(n * p - 4 * sd), n, alpha), sigma)
    hi = cohen_radius(clopper_pearson_lower(int(n * p + 4 * sd) + 1, n, alpha), sigma)
    for bs in (7, 100, 1000):
        c = certify(model, x, sigma, 100, n, alpha, batch_size=bs, generator=image_generator(0, 0))
        assert c.prediction == 1
        assert lo <= c.radius <= hi, (bs, c.radius, lo, hi)
