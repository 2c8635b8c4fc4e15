"""``robrep profile`` on streamed data: the card of a class-sorted ImageFolder equals the card of
the same images held in memory, the whole split is never materialized (only the images a
measure attacks), subsets are class-stratified; ``--attack`` (attacks and protocols) and
``--precision`` are applied and written in the card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import robrep
from robrep.cli import main
from robrep.data import StreamImageData
from robrep.errors import InputError
from robrep.models import create_model
from robrep.profile import QUICK, FeatureCache, profile
from robrep.runtime import bf16_supported
from robrep.threats import threat

CLASSES = ("ant", "bee", "cat")
SMALL = QUICK.with_(name="stream", probe_train_n=60, test_n=66, probe_eval_n=9, probe_eval_steps=2, mi_n=64, mi_critics=2,
                    mi_critic_hidden=16, mi_steps=4, mi_batch=16, mi_attack_steps=1, mi_eval_attack_steps=1, mi_eval_batches=1,
                    synbench_scales=(1.0, 3.0), synbench_n=16, sensitivity_n=6, sensitivity_steps=2, cert_n=3, cert_n0=8,
                    cert_samples=16, picture_n=2, vis_steps=2, smoothgrad_samples=2)
EPS = 0.05


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """<root>/{train,test}/<class>/*.png, 24 per class and split, sizes 14-26 px; the class
    folders hold visibly different colours, so the probe has something to learn."""
    root = tmp_path_factory.mktemp("profile-folder")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k, c in enumerate(CLASSES):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(24):
                h, w = (int(v) for v in rng.integers(14, 27, 2))
                arr = rng.random((h, w, 3)) * 120
                arr[..., k] += 120
                Image.fromarray(arr.astype(np.uint8)).save(d / f"{i:03d}.png")
    return root


def _model():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return create_model("small-cnn", num_classes=3, input_shape=(3, 20, 20)).eval()  # data @16: adapted to 20 px


def _splits(folder: Path) -> tuple[str, StreamImageData, StreamImageData]:
    ds = f"imagefolder:{folder}@16"
    return ds, robrep.load_dataset(ds, "train"), robrep.load_dataset(ds, "test")


def test_streamed_card_equals_in_memory_card(folder, tmp_path, monkeypatch) -> None:
    ds, tr, te = _splits(folder)
    calls: list[tuple[str, int]] = []
    orig = StreamImageData.tensors

    def spy(self):  # type: ignore[no-untyped-def]
        calls.append((self.split, len(self)))
        return orig(self)

    monkeypatch.setattr(StreamImageData, "tensors", spy)
    kw = dict(budget=SMALL, threat=threat("linf", EPS), seed=1, random_init=True, precision="fp32")
    streamed = profile(_model(), ds, out=tmp_path / "s", data=(tr, te), **kw).card
    in_memory = profile(_model(), ds, out=tmp_path / "m", data=(tr.to_memory(), te.to_memory()), **kw).card
    # whole splits were never materialized: at most the vulnerability's test images (the critics read them)
    assert all(split == "test" and n <= SMALL.mi_n for split, n in calls), calls
    assert streamed.headline == in_memory.headline
    assert streamed.results == in_memory.results
    assert streamed.dataset == in_memory.dataset
    sel = streamed.dataset["selection"]
    assert sel["train"] == {"n": 60, "of": 72, "method": "stratified", "seed": 1}
    assert sel["test"]["method"] == "stratified" and streamed.dataset["adapted"].startswith("bilinearly resized")
    assert streamed.headline["probe_natural_accuracy"]["n"] == 66
    assert streamed.environment["precision"]["features"] == "fp32"


def test_profile_subsets_are_class_stratified(folder) -> None:
    from robrep.profile.data import pick, profile_data

    ds, tr, te = _splits(folder)
    a, b, note = profile_data(ds, SMALL, input_shape=(3, 20, 20), seed=4, data=(tr, te))
    assert note is not None and "resized" in note and a.info.input_shape == (3, 20, 20)
    assert torch.bincount(a.labels).tolist() == [20, 20, 20] and torch.bincount(b.labels).tolist() == [22, 22, 22]
    sub, idx = pick(b, 9, seed=4)
    assert torch.bincount(sub.labels).tolist() == [3, 3, 3] and torch.equal(sub.labels, b.labels[idx])
    mixed, midx = pick(b, 30, seed=4, mixed=True)
    assert sorted(midx.tolist()) == pick(b, 30, seed=4)[1].tolist()  # the same images ...
    assert len(set(mixed.labels[-10:].tolist())) > 1  # ... in an order where the held-out end is not one class
    x, y = mixed.tensors()
    ref = torch.cat([xb for xb, _ in b.subset(midx).batches(7)])
    assert x.shape == (30, 3, 20, 20) and torch.equal(x, ref) and torch.equal(y, b.labels[midx])


def test_feature_cache_streams_and_bf16_features(folder) -> None:
    _, tr, _ = _splits(folder)
    model = create_model("small-cnn", num_classes=3, input_shape=(3, 16, 16)).eval()
    cache = FeatureCache(memory_cap=1 << 20)
    f, y = cache.data_features(model, "penultimate", tr)
    x_all = torch.cat([xb for xb, _ in tr.batches(50)])
    with torch.no_grad():
        ref = robrep.representation(model, "penultimate")(x_all)
    assert torch.allclose(f, ref, atol=1e-5) and torch.equal(y, tr.labels)
    assert cache.data_features(model, "penultimate", tr)[0] is f and cache.hits == 1
    assert cache.data_features(model, "penultimate", tr.to_memory())[0] is not f  # other data, other entry
    with pytest.raises(InputError, match="fp32 or bf16"):
        cache.data_features(model, "penultimate", tr, precision="auto")
    fb, _ = cache.data_features(model, "penultimate", tr, precision="bf16")
    rel = float((fb - f).norm() / f.norm())
    assert 0 < rel < 2e-2  # bf16 rounding: close to, not equal to, the float32 features


def test_precision_bf16_card_and_auto_fallback(folder, tmp_path, monkeypatch) -> None:
    """bf16 features and SynBench; the attack-based measures stay float32 (the sensitivity and the
    vulnerability equal the fp32 card's); ``auto`` on a device without bf16 is the fp32 card."""
    ds, tr, te = _splits(folder)
    kw = dict(budget=SMALL.with_(cert_n=1), threat=threat("linf", EPS), seed=2, random_init=True, data=(tr, te), pictures=False)
    fp32 = profile(_model(), ds, out=tmp_path / "f", precision="fp32", **kw).card
    if bf16_supported("cpu"):
        bf = profile(_model(), ds, out=tmp_path / "b", precision="bf16", **kw).card
        assert bf.environment["precision"] | {} == {"requested": "bf16", "features": "bf16", "synbench": "bf16", "attacks": "fp32",
                                                     "certification": "fp32", "probe_fit": "fp64"}
        assert bf.results["synbench"]["config"]["precision"] == "bf16"
        assert bf.results["vulnerability"] == fp32.results["vulnerability"]
        assert bf.results["sensitivity"]["ratios"] == pytest.approx(fp32.results["sensitivity"]["ratios"], rel=1e-5, abs=1e-7)
        assert abs(bf.headline["synbench_score"]["value"] - fp32.headline["synbench_score"]["value"]) < 0.05
    else:
        with pytest.raises(InputError, match="bf16"):
            profile(_model(), ds, out=tmp_path / "b", precision="bf16", **kw)
    import robrep.runtime as rt

    monkeypatch.setattr(rt, "bf16_supported", lambda device="cpu": False)
    auto = profile(_model(), ds, out=tmp_path / "a", precision="auto", **kw).card
    assert auto.environment["precision"]["features"] == "fp32" and auto.headline == fp32.headline


def test_probe_attack_protocol(folder, tmp_path) -> None:
    from robrep.evaluate import linear_probe
    from robrep.profile.data import pick, profile_data

    ds, tr, te = _splits(folder)
    b = SMALL.with_(probe_attack="fast", cert_n=1)
    card = profile(_model(), ds, out=tmp_path / "p", budget=b, threat=threat("linf", EPS), seed=1, random_init=True, data=(tr, te),
                   pictures=False, precision="fp32").card
    assert card.budget["probe_attack"] == "fast" and card.results["probe"]["attack"] == "fast"
    assert card.results["probe"]["attack_steps"] is None and card.results["probe"]["eval"]["attack"]["name"] == "fast"
    a, t, _ = profile_data(ds, b, input_shape=(3, 20, 20), seed=1, data=(tr, te))
    pr = linear_probe(_model(), a, pick(t, b.probe_eval_n, 1)[0], eval_threat=threat("linf", EPS), attack="fast", seed=1)
    assert pr.adversarial_accuracy == card.results["probe"]["adversarial_accuracy"]


def test_cli_attack_and_precision_flags(tmp_path, capsys) -> None:
    # the command line: an unknown attack is one line, exit 2; --attack and --precision reach the card
    assert main(["profile", "init:small-cnn", "--dataset", "demo", "--attack", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "autoattack-standard" in err and not (tmp_path / "x").exists()
    sets = [f"{k}={v}" for k, v in dict(probe_train_n=40, test_n=40, probe_eval_n=4, mi_n=32, mi_batch=8, mi_steps=2,
                                          mi_critic_hidden=8, synbench_n=32, sensitivity_n=2, sensitivity_steps=1, cert_n=1,
                                          cert_n0=4, cert_samples=16).items()]
    args = ["profile", "init:small-cnn", "--dataset", "demo", "--attack", "fgsm", "--precision", "fp32", "--no-pictures",
            "--out", str(tmp_path / "cli"), "--quiet", "--json"] + [a for s in sets for a in ("--set", s)]
    assert main(args) == 0
    c = robrep.profile.load_card(tmp_path / "cli" / "card.json")
    assert c.budget["probe_attack"] == "fgsm" and c.environment["precision"]["requested"] == "fp32"
