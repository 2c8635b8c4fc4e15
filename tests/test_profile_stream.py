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


def test_chunked_grad_equals_the_whole_batch_and_bounds_the_pass() -> None:
    """ChunkedGrad: the same output and input gradient as the encoder on the whole batch (an
    objective that couples the images), with no pass through the encoder of more than ``chunk``
    images; a batch within one chunk is the encoder's own call, bit for bit."""
    from robrep.models.memory import ChunkedGrad

    rep = robrep.representation(_model(), "penultimate")
    seen: list[int] = []
    h = next(m for m in rep.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_pre_hook(
        lambda _m, a: seen.append(a[0].shape[0]))
    x = torch.rand(10, 3, 20, 20, generator=torch.Generator().manual_seed(0))

    def objective(z: torch.Tensor) -> torch.Tensor:  # a batch-level scalar: every image's gradient depends on all
        return torch.logsumexp(z @ z.T, 1).sum()

    xa = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(objective(rep(xa)), xa)
    z_ref = rep(x).detach()
    seen.clear()
    xc = x.clone().requires_grad_(True)
    zc = ChunkedGrad(rep, 3)(xc)
    (g,) = torch.autograd.grad(objective(zc), xc)
    h.remove()
    assert seen and max(seen) <= 3 and sum(seen) == 20  # 4 chunks forward, 4 recomputed for the gradient
    assert torch.allclose(zc.detach(), z_ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(g, g_ref, atol=1e-6, rtol=1e-4) and float(g.abs().max()) > 0
    with torch.no_grad():
        assert torch.equal(ChunkedGrad(rep, 10)(x), rep(x))
        assert torch.allclose(ChunkedGrad(rep, 4)(x), z_ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="chunk"):
        ChunkedGrad(rep, 0)


def test_memory_cap_bounds_every_backward_pass_of_the_profile(folder, tmp_path) -> None:
    """With a memory cap that allows attack batches of 4 images, no forward+backward pass through
    the encoder holds more than 4 images, the vulnerability's batches of mi_batch = 16 included,
    and the streamed card still equals the in-memory one."""
    from robrep.models.memory import GRAD_FACTOR, activation_bytes_per_image

    ds, tr, te = _splits(folder)
    per = activation_bytes_per_image(robrep.representation(_model(), "penultimate"), (3, 20, 20))
    cap = GRAD_FACTOR * per * 4
    kw = dict(budget=SMALL.with_(cert_n=1), threat=threat("linf", EPS), seed=1, random_init=True, precision="fp32",
              memory_cap=cap)
    cards, grad_batches = [], []
    for name, data in (("s", (tr, te)), ("m", (tr.to_memory(), te.to_memory()))):
        model = _model()
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_pre_hook(lambda _m, a: grad_batches.append(a[0].shape[0]) if torch.is_grad_enabled()
                                       and a[0].requires_grad else None)
        cards.append(profile(model, ds, out=tmp_path / name, data=data, **kw).card)
    assert cards[0].environment["attack_batch_size"] == 4 and SMALL.mi_batch == 16
    assert grad_batches and max(grad_batches) <= 4
    assert cards[0].headline == cards[1].headline and cards[0].results == cards[1].results


def test_vulnerability_image_count_check_states_the_cross_fitting_requirement(folder, tmp_path) -> None:
    from robrep.info import estimate_mi, min_inputs
    from robrep.profile.budgets import vulnerability_kwargs, vulnerability_min_images

    # three-fold cross-fitting with batches of 16: 3 held-out batches, and each fold a validation and a training batch
    need = vulnerability_min_images(SMALL)
    assert need == 48 == min_inputs(None, batch_size=16, n_eval_batches=1)
    ds, tr, te = _splits(folder)
    with pytest.raises(InputError, match=r"at least 48 test images \(3-fold cross-fitting.* has 40; give more test images") as e:
        profile(_model(), ds, out=tmp_path / "p", budget=SMALL.with_(test_n=40), seed=1, random_init=True, data=(tr, te))
    assert "\n" not in str(e.value) and not (tmp_path / "p").exists()
    with pytest.raises(InputError, match="mi_n \\(40\\) must be at least 48"):
        SMALL.with_(mi_n=40)
    # the count is the estimator's own: 48 inputs are accepted, 47 refused
    rep = torch.nn.Linear(4, 3)
    kw = {k: v for k, v in vulnerability_kwargs(SMALL, 0).items()} | {"steps": 1, "critic_kwargs": {"hidden": 4}}
    x = torch.rand(48, 4, generator=torch.Generator().manual_seed(0))
    assert estimate_mi(rep, x, **kw).estimate >= 0
    with pytest.raises(InputError, match="too few"):
        estimate_mi(rep, x[:47], **kw)
