"""Transfer learning (Salman et al., NeurIPS 2020; docs/methods/transfer.md): freeze semantics,
the paper's optimizer against a literal SGD, self-transfer, input adaptation, resumable sweeps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import robrep
from robrep.data import DatasetInfo, TensorImageData
from robrep.errors import InputError
from robrep.models import create_model, representation, save_model
from robrep.transfer import (
    SourceSpec,
    TransferConfig,
    adapt_images,
    head_name,
    load_source,
    replace_head,
    run_sweep,
    summarize_sweep,
    transfer,
)
from robrep.transfer import sweep as sweep_mod

torch.set_num_threads(1)


def _blobs(n: int, c: int = 1, size: int = 8, classes: int = 4, noise: float = 0.25, seed: int = 0, split: str = "train") -> TensorImageData:
    """Images in [0,1]: class k lights up quadrant k, plus uniform noise (not separable at noise ~0.5)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, c, size, size, generator=g) * noise
    h = size // 2
    for k in range(classes):
        r, q = divmod(k, 2)
        x[y == k, :, r * h : (r + 1) * h, q * h : (q + 1) * h] += 1 - noise
    info = DatasetInfo("blobs", classes, (c, size, size), (0.5,) * c, (0.5,) * c)
    return TensorImageData(x.clamp(0, 1), y, info, split)


def _small(c: int = 1, size: int = 8, classes: int = 4, seed: int = 0, **kw) -> robrep.RobrepModel:
    torch.manual_seed(seed)
    return create_model("small-cnn", num_classes=classes, input_shape=(c, size, size), width=4, feat_dim=16, **kw)


def _state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Freeze semantics (docs/methods/transfer.md item 2).


def test_fixed_changes_only_the_head_tv_resnet18_with_frozen_bn() -> None:
    """tv:resnet18 by name (random weights, 32x32): fixed transfer trains 512*C + C parameters,
    every other parameter and BatchNorm buffer stays bit-identical; the source is untouched."""
    src, meta = load_source("tv:resnet18", input_shape=(3, 32, 32))
    assert meta["format"] == "name" and src.num_classes == 1000
    before_src = _state(src)
    tr, te = _blobs(24, c=1, size=16, seed=1), _blobs(16, c=1, size=16, seed=2, split="test")  # 1x16x16 -> 3x32x32
    cfg = TransferConfig(mode="fixed", epochs=2, batch_size=8, eval_n=4, cache_features=False)  # backbone really runs
    res = transfer(src, tr, te, cfg)
    C = 4
    assert res.feat_dim == 512
    assert res.n_trainable == 512 * C + C
    hn = head_name(res.model)
    assert hn == "fc"
    after = res.model.state_dict()
    changed = {k for k, v in after.items() if not k.startswith(f"net.{hn}.") and not torch.equal(v, before_src[k])}
    assert changed == set()
    assert not torch.equal(after["net.fc.weight"], replace_head(src, C, seed=0).state_dict()["net.fc.weight"])
    for k, v in src.state_dict().items():  # the source model itself is not modified
        assert torch.equal(v, before_src[k]), k
    assert res.model.input_shape == (3, 32, 32) and res.model.num_classes == C


def test_fixed_bn_update_reproduces_paper_quirk() -> None:
    """bn='update' (the paper code's train-mode backbone): parameters frozen, BN statistics move."""
    torch.manual_seed(0)
    src = create_model("resnet18", num_classes=10, input_shape=(3, 8, 8), width=4)
    before = _state(src)
    tr, te = _blobs(32, c=3, seed=3), _blobs(8, c=3, seed=4, split="test")
    res = transfer(src, tr, te, TransferConfig(mode="fixed", bn="update", epochs=1, batch_size=16))
    after = res.model.state_dict()
    params = {n for n, _ in res.model.named_parameters()}
    head = f"net.{head_name(src)}."
    for k in params:
        if not k.startswith(head):
            assert torch.equal(after[k], before[k]), k
    moved = [k for k in after if k.endswith("running_mean") and not torch.equal(after[k], before[k])]
    assert moved, "BN running statistics should update in bn='update' mode"
    assert res.n_trainable == res.feat_dim * 4 + 4 == 32 * 4 + 4


def test_full_mode_trains_every_parameter() -> None:
    src = _small()
    before = _state(src)
    res = transfer(src, _blobs(64), _blobs(16, seed=5, split="test"), TransferConfig(mode="full", epochs=1, batch_size=16, lr=0.05))
    assert res.n_trainable == sum(p.numel() for p in res.model.parameters())
    head = f"net.{head_name(src)}."
    for k, _ in res.model.named_parameters():
        if not k.startswith(head):
            assert not torch.equal(res.model.state_dict()[k], before[k]), k


def test_mlp_head_and_adversarial_head_training_keep_backbone_fixed() -> None:
    src = _small()
    before = _state(src)
    cfg = TransferConfig(mode="fixed", additional_hidden=1, epochs=1, batch_size=16, train_eps=0.1, train_steps=2,
                         eval_eps=0.1, eval_steps=3, eval_n=16)
    res = transfer(src, _blobs(32), _blobs(16, seed=6, split="test"), cfg)
    assert res.n_trainable == (16 * 16 + 16) + (16 * 4 + 4)
    for k, v in res.model.state_dict().items():
        if not k.startswith("net.fc."):
            assert torch.equal(v, before[k]), k
    assert res.adversarial_accuracy is not None and res.n_adversarial == 16
    # robust accuracy counts only correctly classified and unbroken images: <= clean accuracy on the same images
    clean16 = robrep.evaluate(res.model, _blobs(16, seed=6, split="test")).clean_accuracy
    assert res.adversarial_accuracy <= clean16 + 1e-9


# ---------------------------------------------------------------------------------------------
# The paper's optimizer and schedule against a literal reference.


def test_fixed_head_matches_literal_sgd_momentum_wd_step_schedule() -> None:
    """Full-batch fixed transfer for 6 epochs (lr 0.01, x0.1 every 2 epochs) equals a numpy SGD
    with momentum 0.9 and weight decay 5e-4 on the softmax cross-entropy gradient, computed by
    hand from features read through robrep.representation (not the transfer code's hook)."""
    src = _small(seed=3)
    tr, te = _blobs(40, seed=7), _blobs(8, seed=8, split="test")
    cfg = TransferConfig(mode="fixed", epochs=6, batch_size=64, seed=11)
    res = transfer(src, tr, te, cfg)
    assert [h["lr"] for h in res.history] == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4])

    with torch.no_grad():
        feats = representation(src, "penultimate")(tr.tensors()[0]).double().numpy()
    y = tr.tensors()[1].numpy()
    init = replace_head(src, 4, seed=11).net.fc
    W, b = init.weight.detach().double().numpy().copy(), init.bias.detach().double().numpy().copy()
    N, C = feats.shape[0], 4
    Y = np.eye(C)[y]
    bufW = bufb = None
    for e in range(6):
        lr = 0.01 * 0.1 ** (e // 2)
        z = feats @ W.T + b
        z -= z.max(1, keepdims=True)
        P = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        G = (P - Y) / N
        gW, gb = G.T @ feats + 5e-4 * W, G.sum(0) + 5e-4 * b
        bufW = gW if bufW is None else 0.9 * bufW + gW
        bufb = gb if bufb is None else 0.9 * bufb + gb
        W, b = W - lr * bufW, b - lr * bufb
    np.testing.assert_allclose(res.model.net.fc.weight.detach().double().numpy(), W, atol=2e-6)
    np.testing.assert_allclose(res.model.net.fc.bias.detach().double().numpy(), b, atol=2e-6)

    # the uncached path (full forward through the frozen backbone) gives the same head
    res2 = transfer(src, tr, te, TransferConfig(mode="fixed", epochs=6, batch_size=64, seed=11, cache_features=False))
    torch.testing.assert_close(res2.model.net.fc.weight, res.model.net.fc.weight, atol=1e-6, rtol=0)


def test_default_lrs_and_step() -> None:
    assert TransferConfig(mode="fixed").resolved_lr == 0.01
    assert TransferConfig(mode="full").resolved_lr == 0.001
    c = TransferConfig(epochs=150)
    assert c.resolved_lr_step == 50 and c.lr_at(49) == 0.01 and c.lr_at(50) == pytest.approx(0.001) and c.lr_at(149) == pytest.approx(1e-4)
    with pytest.raises(InputError):
        TransferConfig(mode="partial")
    with pytest.raises(InputError):
        TransferConfig(target_fraction=0)


def test_deterministic_under_seed() -> None:
    src = _small()
    tr, te = _blobs(48), _blobs(16, seed=9, split="test")
    cfg = TransferConfig(mode="full", epochs=1, batch_size=16, seed=4, target_fraction=0.5)
    a, b = transfer(src, tr, te, cfg), transfer(src, tr, te, cfg)
    assert a.n_train == 24
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, w), k
    c = transfer(src, tr, te, TransferConfig(mode="full", epochs=1, batch_size=16, seed=5, target_fraction=0.5))
    assert not torch.equal(c.model.net.fc.weight, a.model.net.fc.weight)


# ---------------------------------------------------------------------------------------------
# Self-transfer reproduces the source accuracy.


def test_self_transfer_reproduces_source_accuracy() -> None:
    """Train a source on a noisy task, transfer it (fixed) to the same task: the re-learned head
    reaches the source's test accuracy within binomial noise (3 standard errors + 1 %)."""
    tr, te = _blobs(400, noise=0.85, seed=12), _blobs(400, noise=0.85, seed=13, split="test")
    src = _small(seed=1)
    cfg = robrep.TrainConfig(model="small-cnn", epochs=8, batch_size=32, lr=0.05, eval_n=0, device="cpu")
    opt = torch.optim.SGD(src.parameters(), lr=cfg.lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    src.train()
    for _ in range(cfg.epochs):
        for xb, yb in tr.batches(32, shuffle=True, generator=g):
            loss = F.cross_entropy(src(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    src.eval()
    acc_src = robrep.evaluate(src, te).clean_accuracy
    assert 0.5 < acc_src < 0.995  # a task with noise, not trivially solved
    res = transfer(src, tr, te, TransferConfig(mode="fixed", epochs=30, lr=0.05, batch_size=32))
    se = math.sqrt(acc_src * (1 - acc_src) / len(te))
    assert abs(res.natural_accuracy - acc_src) <= 3 * se + 0.01, (acc_src, res.natural_accuracy)


# ---------------------------------------------------------------------------------------------
# Input adaptation: channels, size, resolution.


def test_adapt_channels() -> None:
    x = torch.rand(3, 1, 6, 6)
    y = adapt_images(x, (3, 6, 6))
    for c in range(3):
        assert torch.equal(y[:, c], x[:, 0])
    rgb = torch.rand(2, 3, 4, 4)
    g = adapt_images(rgb, (1, 4, 4))
    ref = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(g[:, 0], ref)
    assert adapt_images(x, (1, 6, 6)) is x
    with pytest.raises(InputError):
        adapt_images(torch.rand(1, 2, 4, 4), (3, 4, 4))
    u8 = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(adapt_images(u8, (1, 6, 6)), u8.float() / 255)


def test_adapt_downsample_is_block_average_and_resolution_round_trip() -> None:
    x = torch.rand(2, 1, 8, 8)
    y = adapt_images(x, (1, 4, 4))
    ref = torch.empty(2, 1, 4, 4)
    for i in range(4):
        for j in range(4):
            ref[:, :, i, j] = x[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(dim=(2, 3))
    torch.testing.assert_close(y, ref)
    # resolution r: down to r x r then back up; constant images stay constant, range stays in [0,1]
    const = torch.full((1, 1, 8, 8), 0.3)
    torch.testing.assert_close(adapt_images(const, (1, 8, 8), resolution=2), const)
    z = adapt_images(x, (1, 8, 8), resolution=4)
    assert z.shape == x.shape and float(z.min()) >= 0 and float(z.max()) <= 1
    # a 4x4 resolution loses detail: the 2x2 block means of z equal those of x up to interpolation
    assert not torch.allclose(z, x)
    torch.testing.assert_close(adapt_images(x, (1, 8, 8), resolution=8), x)
    up = adapt_images(torch.rand(1, 1, 4, 4), (1, 9, 9))
    assert up.shape == (1, 1, 9, 9)


# ---------------------------------------------------------------------------------------------
# Sweeps: resumable, one atomic JSON per cell; aggregation.


def _sources(tmp_path) -> list[SourceSpec]:
    specs = []
    for name, thr in (("std", None), ("linf-0.1", {"norm": "linf", "eps": 0.1})):
        torch.manual_seed(len(name))
        m = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), width=2, feat_dim=8)
        p = save_model(tmp_path / f"{name}.safetensors", m, {"dataset": "demo", "threat": thr})
        specs.append(SourceSpec(name, str(p), thr and thr["norm"], thr["eps"] if thr else 0.0))
    return specs


def test_sweep_resumes_without_redoing_cells(tmp_path, monkeypatch) -> None:
    sources = _sources(tmp_path)
    base = TransferConfig(epochs=1, batch_size=64, eval_eps=0.1, eval_steps=2, eval_n=20)
    calls: list[str] = []
    real = sweep_mod.transfer

    def flaky(model, tr, te, cfg):  # type: ignore[no-untyped-def]
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the third cell
        calls.append(cfg.mode)
        return real(model, tr, te, cfg)

    monkeypatch.setattr(sweep_mod, "transfer", flaky)
    kw = dict(fractions=[0.02], modes=["fixed", "full"], seeds=[0], base=base)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sources, ["demo"], tmp_path / "sw", **kw)
    cells = sorted((tmp_path / "sw" / "cells").glob("*.json"))
    assert len(cells) == 2 and not list((tmp_path / "sw" / "cells").glob(".*tmp"))
    first = {p.name: p.read_bytes() for p in cells}

    calls.clear()
    monkeypatch.setattr(sweep_mod, "transfer", lambda *a: (calls.append("x"), real(*a))[1])
    recs = run_sweep(sources, ["demo"], tmp_path / "sw", **kw)
    assert len(calls) == 2 and len(recs) == 4
    for name, data in first.items():
        assert (tmp_path / "sw" / "cells" / name).read_bytes() == data
    assert len(list((tmp_path / "sw" / "sources").glob("*.json"))) == 2
    rec = json.loads(cells[0].read_text())
    assert rec["metrics"]["n_train"] == 100 and rec["metrics"]["n_natural"] == 1000

    calls.clear()
    run_sweep(sources, ["demo"], tmp_path / "sw", **kw)
    assert calls == []
    with pytest.raises(InputError, match="other settings"):
        run_sweep(sources, ["demo"], tmp_path / "sw", **{**kw, "base": TransferConfig(epochs=2, eval_n=20)})

    rows = summarize_sweep(recs)
    assert len(rows) == 4 and {r["eps"] for r in rows} == {0.0, 0.1}
    assert all(r["adversarial"]["mean"] <= 1 for r in rows)


def test_summary_statistics_match_scipy() -> None:
    from scipy import stats

    vals = [0.81, 0.84, 0.79]
    s = sweep_mod._stats(vals)
    assert s["mean"] == pytest.approx(np.mean(vals)) and s["std"] == pytest.approx(np.std(vals, ddof=1))
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(vals), scale=stats.sem(vals))
    assert s["ci95"] == pytest.approx((hi - lo) / 2)


def test_cli_transfer_and_sweep(tmp_path, capsys) -> None:
    from robrep.cli import main

    src = _sources(tmp_path)
    rc = main(["transfer", "--checkpoint", src[1].path, "--target", "demo", "--target-fraction", "0.02", "--epochs", "1",
               "--eval-eps", "0.1", "--eval-steps", "2", "--eval-n", "10", "--out", str(tmp_path / "t"), "--save-model",
               "--json", "--quiet"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_trainable"] == 8 * 10 + 10 and out["source_eps"] == 0.1 and out["n_train"] == 100
    assert (tmp_path / "t" / "record.json").is_file()
    assert robrep.load(tmp_path / "t" / "model.safetensors").num_classes == 10
    rc = main(["transfer-sweep", "--sources", src[0].path, f"rob={src[1].path}", "--targets", "demo", "--fractions", "0.02",
               "--modes", "fixed", "--seeds", "0", "1", "--epochs", "1", "--eval-n", "10", "--out", str(tmp_path / "s"),
               "--json", "--quiet"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["cells"] == 4 and len(res["best_vs_eps0"]) == 1
    assert res["best_vs_eps0"][0]["best_source"] == "rob"
    assert (tmp_path / "s" / "accuracy_vs_eps.png").stat().st_size > 1000
    assert "| demo |" in (tmp_path / "s" / "table.md").read_text()
