"""Robustness cards (robrep profile / compare): the card's numbers equal the individual
commands' with the same seeds and budgets; invariance and floor properties; bad input;
the pages render in a real headless browser."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess

import pytest
import torch
from torch import nn

from robrep.cli import main
from robrep.errors import InputError
from robrep.models import create_model, save_model, wrap
from robrep.profile import (
    QUICK,
    SCHEMA_VERSION,
    FeatureCache,
    activation_bytes_per_image,
    auto_batch_size,
    compare_cards,
    embedding_sensitivity,
    load_card,
    profile,
    relative_change,
    vulnerability_kwargs,
    wilson_interval,
)
from robrep.threats import threat

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

TINY = QUICK.with_(name="tiny", probe_train_n=200, test_n=128, probe_eval_n=24, probe_eval_steps=3, mi_n=128, mi_critics=2,
                   mi_critic_hidden=32, mi_steps=6, mi_adv_steps=6, mi_batch=32, mi_attack_steps=1, mi_eval_attack_steps=2, mi_eval_batches=1,
                   synbench_scales=(1.0, 3.0), synbench_n=48, sensitivity_n=12, sensitivity_steps=3, cert_n=6, cert_n0=16,
                   cert_samples=40, picture_n=2, vis_steps=3, smoothgrad_samples=2)
EPS = 0.1


def _render(html_path, tmp_path) -> tuple[str, str]:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chrome-profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", html_path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    return proc.stdout, proc.stderr


def _status(dom: str) -> tuple[int, int, str]:
    m = re.search(r'id="figure-status" data-total="(\d+)" data-loaded="(\d+)" data-broken="([^"]*)"', dom)
    assert m, dom[-400:]
    return int(m.group(1)), int(m.group(2)), m.group(3)


@pytest.fixture(scope="module")
def card_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("profile")
    torch.manual_seed(0)
    model = create_model("small-cnn", dataset="demo").eval()
    ckpt = d / "model.safetensors"
    save_model(ckpt, model, {"dataset": "demo"})
    res = profile(str(ckpt), "demo", out=d / "card", budget=TINY, threat=threat("linf", EPS), seed=3, name="small")
    return d, ckpt, res


def test_card_json_schema_headline_intervals_and_budget(card_run) -> None:
    d, _, res = card_run
    raw = json.loads(res.card_json.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    card = load_card(res.card_json)
    assert card == res.card
    assert card.budget == TINY.to_dict() and card.budget["probe_eval_n"] == 24  # every sample count is written
    assert card.dataset["name"] == "demo" and card.dataset["test_n"] == 128 and card.dataset["adapted"] is None
    for k in ("probe_natural_accuracy", "probe_adversarial_accuracy", "smoothed_accuracy", "certified_accuracy",
              "vulnerability", "mi_clean", "mi_worst", "accuracy_bound", "sensitivity_mean"):
        h = card.headline[k]
        assert h["low"] <= h["value"] <= h["high"], (k, h)  # every number with its interval ...
    for h in card.headline.values():
        assert h["n"] > 0  # ... and its sample size
    nat = card.headline["probe_natural_accuracy"]
    assert (nat["low"], nat["high"]) == pytest.approx(wilson_interval(round(nat["value"] * 128), 128))
    assert card.headline["probe_adversarial_accuracy"]["value"] <= card.results["probe"]["eval_subset_natural_accuracy"]
    assert card.results["probe"]["fit"]["converged"]
    assert set(card.curves) == {"sensitivity", "vulnerability", "synbench", "certified"}
    assert all(c["n"] for c in card.curves.values())
    assert (d / "card" / "inversion.png").stat().st_size > 0 and (d / "card" / "saliency.png").stat().st_size > 0
    assert card.environment["feature_cache"]["hits"] >= 0


def test_card_numbers_equal_individual_commands(card_run, capsys) -> None:
    """SynBench and vulnerability through their own CLI commands, the probe, the sensitivity and
    the certificates through their library functions: the same numbers as on the card."""
    from robrep.certify.smoothing import certify, image_generator
    from robrep.data import load_dataset
    from robrep.evaluate import linear_probe
    from robrep.models import load

    _, ckpt, res = card_run
    card = res.card
    b = TINY
    # robrep synbench
    import torch

    same_threads = ["--threads", str(torch.get_num_threads()), "--precision", "fp32"]  # the card's summation order
    assert main(["synbench", *same_threads, "--checkpoint", str(ckpt), "--n-train", str(b.synbench_n), "--n-test", str(b.synbench_n),
                 "--scales", *map(str, b.synbench_scales), "--json"]) == 0
    sb = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sb["scores"]["0.7"]["0"] == pytest.approx(card.headline["synbench_score"]["value"], abs=1e-9)
    assert sb["scores"]["0.7"]["0.2"] == pytest.approx(card.headline["synbench_robust_score"]["value"], abs=1e-9)
    assert sb["scores"] == card.results["synbench"]["scores"] or all(
        sb["scores"][t][e] == pytest.approx(card.results["synbench"]["scores"][t][e], abs=1e-9) for t in sb["scores"] for e in sb["scores"][t])
    # robrep vulnerability (same critic, sizes and seed)
    kw = vulnerability_kwargs(b, 3)
    assert main(["vulnerability", *same_threads, "--checkpoint", str(ckpt), "--layer", "penultimate", "--eps", str(EPS), "--n", str(b.mi_n),
                 "--critic", "mlp", "--critic-hidden", str(b.mi_critic_hidden), "--n-critics", str(b.mi_critics),
                 "--steps", str(b.mi_steps), "--adv-steps", str(b.mi_adv_steps), "--batch-size", str(b.mi_batch), "--lr", str(kw["lr"]),
                 "--attack-steps", str(b.mi_attack_steps), "--eval-attack-steps", str(b.mi_eval_attack_steps),
                 "--eval-batches", str(b.mi_eval_batches), "--seed", "3", "--json", "--quiet"]) == 0
    vu = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("vulnerability", "mi_clean", "mi_worst", "accuracy_bound"):
        assert vu[k]["estimate"] == pytest.approx(card.headline[k]["value"], abs=1e-6), k
        assert vu[k]["low"] == pytest.approx(card.headline[k]["low"], abs=1e-6), k
    # the probe, the sensitivity and the certificates
    model = load(ckpt).eval()
    tr = load_dataset("demo", "train").head(b.probe_train_n)
    te = load_dataset("demo", "test").head(b.test_n)
    thr = threat("linf", EPS)
    pr = linear_probe(model, tr, te.head(b.probe_eval_n), eval_threat=thr, eval_steps=b.probe_eval_steps, seed=3)
    assert pr.adversarial_accuracy == pytest.approx(card.headline["probe_adversarial_accuracy"]["value"], abs=1e-6)
    assert pr.adversarial_accuracy == card.results["probe"]["adversarial_accuracy"]
    assert pr.natural_accuracy == card.results["probe"]["eval_subset_natural_accuracy"]
    x, y = te.tensors()
    sens = embedding_sensitivity(model, x[: b.sensitivity_n], thr, steps=b.sensitivity_steps, seed=3)
    assert list(sens.ratios) == pytest.approx(card.results["sensitivity"]["ratios"], rel=1e-5, abs=1e-7)
    clf = pr.classifier.eval()
    for i, row in enumerate(card.results["certification"]["rows"]):
        c = certify(clf, x[i], b.cert_sigma, b.cert_n0, b.cert_samples, b.cert_alpha, batch_size=max(b.cert_n0, b.cert_samples),
                    generator=image_generator(3, i))
        assert (c.prediction, c.radius) == (row["predict"], pytest.approx(row["radius"], abs=1e-9))


def test_sensitivity_closed_form_for_a_linear_representation() -> None:
    """R(x) = W x (no normalization): the attack's relative change can never exceed the
    operator bound ||W||_2 eps sqrt(d) / ||W x|| in l-inf, and for l2 the optimum is
    sigma_max eps / ||W x|| (the top singular direction), which PGD nearly reaches."""
    torch.manual_seed(0)
    d, k = 16, 4
    lin = nn.Sequential(nn.Flatten(), nn.Linear(d, k, bias=False), nn.Linear(k, 2))
    model = wrap(lin, num_classes=2, input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,)).eval()
    x = torch.full((6, 1, 4, 4), 0.5) + 0.05 * torch.randn(6, 1, 4, 4)
    w = lin[1].weight.detach()
    s_max = torch.linalg.matrix_norm(w, ord=2)
    z = x.flatten(1) @ w.T
    r2 = embedding_sensitivity(model, x, threat("l2", 0.1), steps=60, seed=0)
    bound = (s_max * 0.1 / z.norm(dim=1)).tolist()
    for got, ub in zip(r2.ratios, bound):
        assert got <= ub * (1 + 1e-4) and got >= 0.97 * ub  # the box [0,1] is far: the optimum is reachable
    assert max(r2.random_ratios) <= max(bound) * (1 + 1e-4)
    assert relative_change(z, z).abs().max() == 0


class _Const(nn.Module):
    """A representation that ignores its input (a constant vector, gradient 0), then a head."""

    def __init__(self, d: int = 6, c: int = 10) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.linspace(-1, 1, d))
        self.fc = nn.Linear(d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.c.expand(len(x), -1) + 0.0 * x.flatten(1).sum(1, keepdim=True)
        return self.fc(z)


def test_budget_sets_the_worst_case_critic_steps() -> None:
    """``mi_adv_steps`` caps the worst-case critics' fine-tuning (each fold's steps, after the
    clean ones in ``steps_run``); the estimator's own default (100, early stopping every 25
    steps) would run at least 25."""
    from robrep.data import load_dataset
    from robrep.info import vulnerability
    from robrep.models import representation

    b = TINY.with_(mi_n=40, mi_batch=8, mi_steps=3, mi_adv_steps=2)
    kw = vulnerability_kwargs(b, 0)
    assert kw["steps"] == 3 and kw["adv_steps"] == 2
    torch.manual_seed(0)
    rep = representation(create_model("small-cnn", dataset="demo").eval(), "penultimate")
    v = vulnerability(rep, load_dataset("demo", "test").head(b.mi_n), threat("linf", EPS), **kw)
    folds = len(v.mi_clean.steps_run)
    assert v.mi_worst.steps_run[folds:] == (2,) * folds, v.mi_worst.steps_run
    assert QUICK.mi_adv_steps == 100 and TINY.with_(mi_adv_steps=7).to_dict()["mi_adv_steps"] == 7


def test_input_ignoring_representation_has_zero_vulnerability_and_synbench_floor(tmp_path) -> None:
    model = wrap(_Const(), num_classes=10, input_shape=(1, 28, 28), mean=(0.5,), std=(0.5,))
    res = profile(model, "demo", out=tmp_path / "c", budget=TINY, threat=threat("linf", EPS), pictures=False)
    h = res.card.headline
    assert h["sensitivity_median"]["value"] == 0 and max(res.card.results["sensitivity"]["ratios"]) == 0
    # no information about X in R(X): the DV estimates of the clean and worst-case MI are
    # estimator noise around 0 (joint and product samples are the same distribution), and so is
    # the vulnerability; every interval contains 0 (a representation with information gives ~1 nat)
    for k in ("mi_clean", "mi_worst", "vulnerability"):
        assert h[k]["low"] <= 0 <= h[k]["high"] and abs(h[k]["value"]) < 0.05, (k, h[k])
    # SynBench: constant features classify nothing above chance -> every score is at the floor 0
    for t, row in res.card.results["synbench"]["scores"].items():
        assert all(v == 0 for v in row.values()), (t, row)
    assert h["synbench_score"]["value"] == 0 == h["synbench_robust_score"]["value"]
    # the probe can only predict one class
    assert h["probe_natural_accuracy"]["value"] <= 0.2


def _encoder(a: torch.Tensor | None) -> nn.Module:
    torch.manual_seed(1)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(784, 6), nn.Tanh()]
    if a is not None:
        m = nn.Linear(6, 6, bias=False)
        m.weight.data.copy_(a)
        layers.append(m)
    layers.append(nn.Linear(6, 10))
    return nn.Sequential(*layers)


@pytest.mark.slow
def test_invertible_linear_map_after_the_representation() -> None:
    """SynBench's Bayes classifier is affine-invariant at eps 0 (any invertible A) and, at eps > 0,
    invariant to scaled orthogonal maps (the radius is relative to ||mu||); the vulnerability
    (MI is invariant to invertible maps) stays within the estimates' intervals."""
    from robrep.evaluate.synbench import synbench
    from robrep.info import vulnerability
    from robrep.info.estimate import estimate_mi
    from robrep.models import representation

    g = torch.Generator().manual_seed(5)
    a = torch.randn(6, 6, generator=g) + 3 * torch.eye(6)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    base = wrap(_encoder(None), num_classes=10, input_shape=(1, 28, 28), mean=(0.5,), std=(0.5,)).eval()
    general = wrap(_encoder(a), num_classes=10, input_shape=(1, 28, 28), mean=(0.5,), std=(0.5,)).eval()
    ortho = wrap(_encoder(2.5 * q), num_classes=10, input_shape=(1, 28, 28), mean=(0.5,), std=(0.5,)).eval()
    kw = dict(eps=(0.0, 0.2), thresholds=(0.7,), scales=(1.0, 2.0, 3.0), n_train=256, n_test=256)
    s0, s1, s2 = (synbench(m, **kw) for m in (base, general, ortho))
    assert s0.accuracy[0].tolist() == pytest.approx(s1.accuracy[0].tolist(), abs=1e-9)
    assert float(s0.score[0, 0]) == pytest.approx(float(s1.score[0, 0]), abs=1e-9)
    assert torch.allclose(s0.accuracy, s2.accuracy, atol=1e-9) and torch.allclose(s0.bound, s2.bound, atol=1e-6)
    assert torch.allclose(s0.score, s2.score, atol=1e-6)
    assert torch.allclose(s0.bound[0], s1.bound[0], atol=1e-6)
    from robrep.data import load_dataset

    x = load_dataset("demo", "test").head(256)
    vk = vulnerability_kwargs(TINY.with_(mi_steps=25, mi_adv_steps=100, mi_critics=3), 0)
    out = []
    for m in (base, general):
        torch.manual_seed(0)
        rep = representation(m, "penultimate")
        out.append(vulnerability(rep, x, threat("linf", EPS), mi_clean=estimate_mi(rep, x, **vk), **vk))
    for k in ("mi_clean", "mi_worst"):
        e0, e1 = getattr(out[0], k), getattr(out[1], k)
        assert e0.low <= e1.high and e1.low <= e0.high, (k, e0, e1)  # the intervals overlap
    v0, v1 = out[0].vulnerability, out[1].vulnerability
    assert v0.low <= v1.high and v1.low <= v0.high, (v0, v1)


def test_feature_cache_auto_batch_and_inference_mode() -> None:
    from robrep.models import representation

    torch.manual_seed(0)
    model = create_model("small-cnn", dataset="demo").eval()
    rep = representation(model, "penultimate")
    per = activation_bytes_per_image(rep, (1, 28, 28))
    assert per >= 28 * 28 * 4 + 128 * 4  # at least the input and the representation
    for cap in (per * 5, per * 100, 1 << 30):
        b = auto_batch_size(rep, (1, 28, 28), memory_cap=cap, max_batch=4096)
        assert b * per <= cap and (2 * b * per > cap or b == 4096) and b & (b - 1) == 0
    assert auto_batch_size(rep, (1, 28, 28), memory_cap=1) == 1
    with pytest.raises(InputError):
        auto_batch_size(rep, (1, 28, 28), memory_cap=0)
    cache = FeatureCache(memory_cap=per * 16)
    x = torch.rand(50, 1, 28, 28)
    f = cache.features(model, "penultimate", x)
    assert cache.batch_sizes and list(cache.batch_sizes.values()) == [16]
    assert torch.allclose(f, rep(x).detach(), atol=1e-6) and not f.is_inference() and not f.requires_grad
    f2 = cache.features(model, "penultimate", x.clone())
    assert f2 is f and (cache.hits, cache.misses) == (1, 1)
    cache.features(model, "logits", x)
    assert cache.misses == 2
    with torch.no_grad():
        model.net.fc.weight.add_(1.0)  # other weights: another entry
    cache2 = FeatureCache()
    assert not torch.equal(cache2.features(model, "logits", x), cache.features(model, "logits", x))


def test_images_adapted_to_a_larger_three_channel_model(card_run, tmp_path) -> None:
    """1-channel 28x28 data for a 3-channel 32x32 init: model: the images are channel-repeated and
    resized (said in the returned note, which the card records); the model is random (said too)."""
    import dataclasses

    from robrep.data import dataset_info
    from robrep.profile import profile_data, resolve_source
    from robrep.profile.html import write_card_html

    info = dataset_info("demo")
    model, note = resolve_source("init:small-cnn", num_classes=10, dataset_shape=info.input_shape, input_shape=(3, 32, 32))
    assert model.input_shape == (3, 32, 32) and note["random_init"] and "random initialization" in note["weights"]
    tr, te, how = profile_data("demo", TINY.with_(probe_train_n=8, test_n=4), input_shape=model.input_shape)
    assert how is not None and "repeated" in how and "resized" in how
    x, y = te.tensors()
    assert x.shape == (4, 3, 32, 32) and len(tr) == 8 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x[:, 0], x[:, 1])  # the gray channel, repeated
    import torch.nn.functional as F

    from robrep.data import load_dataset

    raw = load_dataset("demo", "test").head(4).tensors()[0]
    ref = F.interpolate(raw, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert (x[:, :1] - ref).abs().max() <= 1 / 255 + 1e-6  # stored as uint8
    _, _, none = profile_data("demo", TINY.with_(probe_train_n=8, test_n=4), input_shape=(1, 28, 28))
    assert none is None
    with pytest.raises(InputError, match="channels"):
        profile_data("demo", TINY.with_(probe_train_n=8, test_n=4), input_shape=(2, 28, 28))
    _, _, res = card_run
    card = dataclasses.replace(res.card, model=res.card.model | note)
    (tmp_path / "c").mkdir()
    assert "random weights" in write_card_html(card, tmp_path / "c").read_text()


def test_compare_rows_equal_cards_and_ranking(card_run, tmp_path) -> None:
    d, _, res = card_run
    other = json.loads(res.card_json.read_text())
    other["model"]["name"] = "other"
    other["source"] = "other-source"
    other["headline"]["probe_adversarial_accuracy"]["value"] = 2.0  # ranks first
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "card.json").write_text(json.dumps(other))
    cr = compare_cards([res.card_json, tmp_path / "o"], tmp_path / "cmp")
    assert [r["encoder"] for r in cr.rows] == ["other", "small"] and [r["rank"] for r in cr.rows] == [1, 2]
    j = json.loads(cr.json.read_text())
    rows = list(csv.DictReader(cr.csv.open()))
    for k, h in res.card.headline.items():
        assert j["rows"][1][k] == h["value"]
        assert float(rows[1][k]) == pytest.approx(h["value"], rel=1e-12)
        if "low" in h:
            assert float(rows[1][f"{k}_low"]) == pytest.approx(h["low"], rel=1e-12)
    html = cr.html.read_text()
    cells = re.findall(r"data-key='probe_natural_accuracy' data-value='([^']+)'", html)
    assert [float(c) for c in cells] == pytest.approx([other["headline"]["probe_natural_accuracy"]["value"],
                                                       res.card.headline["probe_natural_accuracy"]["value"]])
    assert "onclick='sortTable(" in html and "http://" not in html and "https://" not in html


def _snapshot(path):
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} if path.exists() else None


def test_bad_input_one_line_exit_2_nothing_overwritten(card_run, tmp_path, capsys) -> None:
    d, ckpt, res = card_run
    card_dir = res.out
    before = _snapshot(card_dir)
    # unknown layer: lists the names, the existing card stays
    assert main(["profile", str(ckpt), "--dataset", "demo", "--out", str(card_dir), "--overwrite", "--layer", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer 'nope' does not exist" in err[0] and "conv1" in err[0]
    # an existing card is not replaced without --overwrite
    assert main(["profile", str(ckpt), "--dataset", "demo", "--out", str(card_dir), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _snapshot(card_dir) == before
    # a card of another schema version
    old = json.loads(res.card_json.read_text())
    old["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "card.json").write_text(json.dumps(old))
    out = tmp_path / "cmp"
    assert main(["compare", str(res.card_json), str(tmp_path / "old"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "schema version" in err[0] and "re-run robrep profile" in err[0]
    assert not out.exists()
    # mixed datasets
    mixed = json.loads(res.card_json.read_text())
    mixed["dataset"]["name"] = "mnist"
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "card.json").write_text(json.dumps(mixed))
    assert main(["compare", str(res.card_json), str(tmp_path / "mixed"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different datasets" in err[0] and not out.exists()
    # an existing leaderboard is kept when a later compare fails
    compare_cards([res.card_json], out)
    snap = _snapshot(out)
    assert main(["compare", str(res.card_json), str(tmp_path / "mixed"), "--out", str(out)]) == 2
    assert _snapshot(out) == snap
    capsys.readouterr()
    # not JSON; missing card; bad --set
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "bad.json"), "--out", str(out)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no card at" in capsys.readouterr().err
    assert main(["profile", str(ckpt), "--dataset", "demo", "--out", str(tmp_path / "x"), "--set", "nonsense=3"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err and not (tmp_path / "x").exists()
    with pytest.raises(InputError, match="mi_n"):
        TINY.with_(mi_n=10)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it)")
def test_card_and_compare_pages_render_in_headless_chromium(card_run, tmp_path) -> None:
    d, _, res = card_run
    dom, log = _render(res.card_html, tmp_path)
    total, loaded, broken = _status(dom)
    assert total == 6 and loaded == total and broken == ""  # 4 curves + 2 pictures
    assert [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln] == []
    cr = compare_cards([res.card_json, res.card_json], tmp_path / "cmp")
    dom, log = _render(cr.html, tmp_path)
    total, loaded, broken = _status(dom)
    assert total == 4 + 2 * 2 and loaded == total and broken == ""
    assert [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln] == []


def test_cli_profile_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    out = capsys.readouterr().out
    assert "(default: quick)" in out and "(default: linf)" in out and "init:tv:resnet18" in out
