"""Semantify-NN semantic perturbations: transforms, SP-layers, verification and attack.

References are literal per-pixel loops of docs/methods/semantic.md (the official ``utils/attacks.py``
semantics), written in the reference's pixel convention [-0.5, 0.5].
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from robrep.certify.bound_propagation import box, compute_bounds, margin_spec
from robrep.certify.semantic import apply_transform, rotation
from robrep.certify.semantic_encodings import rotation_boxes, sp_layers, sp_network
from robrep.certify.semantic_verify import (
    attack_range,
    gradient_attack,
    grid_attack,
    semantic_certify,
    summarize_semantic,
    verify_range,
)
from robrep.errors import InputError

# ---------------------------------------------------------------------------------------------
# Literal references (pixels in [-0.5, 0.5], image[r][c] = channel vector)


def ref_lighten(img: np.ndarray, t: float) -> np.ndarray:
    out = np.zeros_like(img)
    for r in range(img.shape[0]):
        for c in range(img.shape[1]):
            col = img[r][c]
            lum = 0.5 + (max(col) + min(col)) / 2
            ln = max(min(1.0, lum + t), 0.0)
            f = 1 - abs(2 * lum - 1)
            fn = 1 - abs(2 * ln - 1)
            if f == 0:
                out[r][c] = [ln + v - lum for v in col]
            else:
                out[r][c] = [ln + (v + 0.5 - lum) * fn / f - 0.5 for v in col]
    return out


def ref_saturate(img: np.ndarray, t: float) -> np.ndarray:
    out = np.zeros_like(img)
    for r in range(img.shape[0]):
        for c in range(img.shape[1]):
            col = img[r][c]
            lum = 0.5 + (max(col) + min(col)) / 2
            f = 1 - abs(2 * lum - 1)
            s = 0.0 if f == 0 else (max(col) - min(col)) / f
            sn = max(min(s + t, 1.0), 0.0)
            out[r][c] = col if s == 0 else [(lum + (v + 0.5 - lum) * sn / s) - 0.5 for v in col]
    return out


def ref_hue(img: np.ndarray, t: float) -> np.ndarray:
    out = np.zeros_like(img)
    for r in range(img.shape[0]):
        for c in range(img.shape[1]):
            col = img[r][c]
            d = max(col) - min(col)
            if d == 0:
                h = 0.0
            else:
                k = int(np.argmax(col))
                if k == 0:
                    h = ((col[1] - col[2]) / d) % 6
                elif k == 1:
                    h = (col[2] - col[0]) / d + 2
                else:
                    h = (col[0] - col[1]) / d + 4
            m = min(col)
            hn = (h + t) % 6
            x = 1 - abs((hn % 2) - 1.0)
            sector = [(d + m, d * x + m, m), (d * x + m, d + m, m), (m, d + m, d * x + m),
                      (m, d * x + m, d + m), (d * x + m, m, d + m), (d + m, m, d * x + m)]
            out[r][c] = sector[min(int(hn), 5)]
    return out


def ref_bandc(img: np.ndarray, b: float, ct: float) -> np.ndarray:
    out = np.zeros_like(img)
    for r in range(img.shape[0]):
        for c in range(img.shape[1]):
            out[r][c] = np.minimum(np.maximum((1 + ct) * img[r][c] + b + 0.5, 0.0), 1.0) - 0.5
    return out


def ref_rotate(img: np.ndarray, angle: float) -> np.ndarray:
    a = math.pi * angle / 180
    rows, cols = img.shape[0], img.shape[1]
    cen = ((rows - 1) // 2, (cols - 1) // 2)
    out = np.zeros_like(img)
    for r in range(rows):
        for c in range(cols):
            x, y = r - cen[0], c - cen[1]
            rad, th = math.sqrt(x * x + y * y), math.atan2(y, x) + a
            x1, y1 = cen[0] + rad * math.cos(th), cen[1] + rad * math.sin(th)
            val, scale = np.zeros_like(img[0][0]), 0.0
            for i in range(int(math.floor(x1)), int(math.ceil(x1)) + 1):
                for j in range(int(math.floor(y1)), int(math.ceil(y1)) + 1):
                    w = max(0.0, 1 - math.sqrt((i - x1) ** 2 + (j - y1) ** 2))
                    val = val + w * img[max(min(i, rows - 1), 0)][max(min(j, cols - 1), 0)]
                    scale += w
            out[r][c] = val / scale
    return out


def _colour_images() -> torch.Tensor:
    """(2, 3, 5, 6) float64 images in [0,1] with grey, black, white, pure and tied pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    special = [(0.3, 0.3, 0.3), (0, 0, 0), (1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0.7, 0.7, 0.2), (0.2, 0.9, 0.9),
               (0.9, 0.1, 0.9), (1.0, 0.5, 0.0), (0.0, 0.25, 1.0), (0.5, 0.5, 0.5)]
    for k, pix in enumerate(special):
        x[0, :, k // 6, k % 6] = torch.tensor(pix, dtype=torch.float64)
    return x


def _to_ref(x: torch.Tensor) -> np.ndarray:  # (3, H, W) in [0,1] -> (H, W, 3) in [-.5, .5]
    return x.permute(1, 2, 0).numpy() - 0.5


REFS = {
    "hue": (ref_hue, 3.0), "saturation": (ref_saturate, 1.0), "lightness": (ref_lighten, 1.0),
    "brightness": (lambda im, t: ref_bandc(im, t, 0.0), 1.0), "contrast": (lambda im, t: ref_bandc(im, 0.0, t), 1.0),
}


@pytest.mark.parametrize("name", list(REFS))
def test_transform_matches_literal_reference(name: str) -> None:
    ref, rng = REFS[name]
    x = _colour_images()
    for t in np.linspace(-rng, rng, 13).tolist() + [0.0, 0.37 * rng, 5.5 if name == "hue" else 0.99]:
        got = apply_transform(name, x, t)
        for i in range(x.shape[0]):
            want = ref(_to_ref(x[i]), t)
            np.testing.assert_allclose(_to_ref(got[i]), want, atol=1e-12)


@pytest.mark.parametrize("name", list(REFS))
def test_sp_layers_equal_reference_transform(name: str) -> None:
    # docs/methods/semantic.md (1) / 9 (15): SP-layer(theta) = reference transform within 1e-6 on a theta grid
    ref, rng = REFS[name]
    x = _colour_images()
    ths = torch.linspace(-rng, rng, 241, dtype=torch.float64)
    for i in range(x.shape[0]):
        net = sp_network(name, x[i])
        got = net(ths.view(-1, 1))
        lit = np.stack([ref(_to_ref(x[i]), float(t)) for t in ths[::20]])
        np.testing.assert_allclose(got[::20].permute(0, 2, 3, 1).numpy() - 0.5, lit, atol=1e-6)
        vec = apply_transform(name, x[i: i + 1].expand(len(ths), -1, -1, -1), ths)
        assert float((got - vec).abs().max()) < 1e-6


def test_rotation_matches_literal_reference_and_rot90() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 9, 9, generator=g, dtype=torch.float64)
    for ang in (-37.3, 0.0, 12.5, 90.0, 181.0):
        got = rotation(x, ang)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got, ref_rotate(x[0].permute(1, 2, 0).numpy(), ang), atol=1e-12)
    # closed form: +90 degrees maps output (r, c) to source (8 - c, r)
    torch.testing.assert_close(rotation(x, 90.0), torch.rot90(x, -1, dims=(2, 3)), atol=1e-9, rtol=0)
    torch.testing.assert_close(rotation(x, 0.0), x, atol=0, rtol=0)


def test_identities_and_channel_checks() -> None:
    x = _colour_images()
    torch.testing.assert_close(apply_transform("hue", x, 6.0), x, atol=1e-12, rtol=0)  # full turn
    for name in ("saturation", "lightness", "brightness", "contrast"):
        torch.testing.assert_close(apply_transform(name, x, 0.0), x, atol=1e-12, rtol=0)
    grey = x[:, :1].expand(-1, 3, -1, -1)
    for name in ("hue", "saturation"):  # grey pixels have no hue and no saturation to change
        torch.testing.assert_close(apply_transform(name, grey, 0.4), grey, atol=1e-12, rtol=0)
    with pytest.raises(InputError, match="3-channel"):
        apply_transform("hue", x[:, :1], 0.5)
    with pytest.raises(InputError, match="SP encoding"):
        sp_layers("rotation", x[0])


def test_rotation_boxes_contain_densely_sampled_rotations_and_shrink_with_subdiv() -> None:
    g = torch.Generator().manual_seed(2)
    img = torch.rand(2, 11, 11, generator=g)
    lo_t, hi_t, k = -3.0, 9.0, 6
    ts = torch.linspace(lo_t, hi_t, 1000)
    rot = rotation(img.unsqueeze(0).expand(1000, -1, -1, -1), ts)
    widths = []
    for kk in (1, 3, k):
        lo, up = rotation_boxes(img, lo_t, hi_t, kk)
        piece = ((ts - lo_t) / (hi_t - lo_t) * kk).floor().long().clamp(max=kk - 1)
        assert (rot >= lo[piece] - 1e-7).all() and (rot <= up[piece] + 1e-7).all()
        widths.append(float((up - lo).mean()))
    assert widths[0] > widths[1] > widths[2]
    # a 1e-3 degree interval: boxes collapse onto the rotated image
    lo, up = rotation_boxes(img, 5.0, 5.001, 1)
    assert float((up - lo).max()) < 1e-3
    assert ((rotation(img.unsqueeze(0), 5.0)[0] - lo).min() >= 0) and ((up - rotation(img.unsqueeze(0), 5.0)[0]).min() >= 0)


# ---------------------------------------------------------------------------------------------
# Bounds through the SP-layers


def _colour_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 12), nn.ReLU(), nn.Linear(12, 4)).eval()


@pytest.mark.parametrize("name,interval", [("hue", (0.3, 0.9)), ("saturation", (-0.3, 0.1)), ("lightness", (-0.1, 0.15)),
                                           ("brightness", (0.05, 0.2)), ("contrast", (-0.4, -0.1))])
def test_ibp_and_crown_contain_outputs_at_1000_parameters(name: str, interval: tuple[float, float]) -> None:
    net = _colour_net(0)
    img = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(4))
    layers = list(sp_layers(name, img)) + list(net)
    spec = margin_spec(4, torch.tensor([1]))
    ths = torch.linspace(*interval, 1000)
    with torch.no_grad():
        val = (net(apply_transform(name, img.unsqueeze(0).expand(1000, -1, -1, -1), ths)) @ spec[0].T)
    inp = box(torch.tensor([[interval[0]]]), torch.tensor([[interval[1]]]))
    widths = {}
    for method, kw in [("ibp", {}), ("crown", {}), ("crown", {"forward_max_dim": 0, "crown_max_neurons": 10_000})]:
        b = compute_bounds(layers, inp, spec, method, **kw)
        assert (val >= b.lower - 1e-5).all() and (val <= b.upper + 1e-5).all(), (method, kw)
        widths[(method, len(kw))] = float((b.upper - b.lower).sum())
    assert widths[("crown", 0)] < widths[("ibp", 0)] and widths[("crown", 2)] < widths[("ibp", 0)]


def _threshold_model(shape: tuple[int, int, int], boundary: float) -> nn.Sequential:
    """2 classes, f0 - f1 = boundary + 1/2 - mean(x): on a constant-1/2 image, brightness theta
    flips the class exactly at theta = boundary (no clipping for |theta| <= 1/2)."""
    d = shape[0] * shape[1] * shape[2]
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = -1.0 / d
        lin.bias[:] = torch.tensor([boundary + 0.5, 0.0])
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_closed_form_verified_and_attacked_ranges() -> None:
    model = _threshold_model((1, 4, 4), 0.305)
    img = torch.full((1, 4, 4), 0.5)
    ver = verify_range(model, img, 0, "brightness", 0.5, 0.05)
    assert ver.hi == pytest.approx(0.30) and ver.lo == pytest.approx(-0.5)  # [0.30, 0.35] contains the flip
    grid = grid_attack(model, img, 0, "brightness", 0.5, 0.01)
    assert grid.hi == pytest.approx(0.31) and grid.lo == pytest.approx(-0.5)
    grad = gradient_attack(model, img, 0, "brightness", 0.5, generator=torch.Generator().manual_seed(0))
    assert 0.305 < grad.hi < 0.31 and grad.lo == pytest.approx(-0.5)
    # CROWN is exact on an affine piece: margin lower bound over [0.1, 0.2] is 0.305 - 0.2
    b = compute_bounds(list(sp_layers("brightness", img)) + list(model), box(torch.tensor([[0.1]]), torch.tensor([[0.2]])),
                       margin_spec(2, torch.tensor([0])), "crown")
    assert float(b.lower) == pytest.approx(0.105, abs=1e-6)


@pytest.mark.parametrize("name", ["hue", "saturation", "lightness", "brightness", "contrast"])
def test_verified_range_is_sound_and_below_attacked(name: str) -> None:
    net = _colour_net(1)
    g = torch.Generator().manual_seed(7)
    eps = REFS[name][1]
    for _ in range(2):
        img = torch.rand(3, 6, 6, generator=g)
        lab = int(net(img.unsqueeze(0)).argmax())
        ver = verify_range(net, img, lab, name, eps, eps / 20)
        att = attack_range(net, img, lab, name, eps, eps / 200, generator=torch.Generator().manual_seed(0))
        assert att.lo <= ver.lo <= 0 <= ver.hi <= att.hi
        ths = torch.linspace(ver.lo, ver.hi, 1000)
        with torch.no_grad():
            pred = net(apply_transform(name, img.unsqueeze(0).expand(1000, -1, -1, -1), ths)).argmax(1)
        assert (pred == lab).all()
        # refinement monotonicity: halving delta never certifies less
        fine = verify_range(net, img, lab, name, eps, eps / 40)
        assert fine.hi >= ver.hi - 1e-9 and fine.lo <= ver.lo + 1e-9


def test_rotation_verification_sound_monotone_and_below_attack() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 10), nn.ReLU(), nn.Linear(10, 3)).eval()
    img = torch.zeros(1, 8, 8)
    img[0, 2:6, 3:5] = 1.0  # a bar
    lab = int(net(img.unsqueeze(0)).argmax())
    coarse = verify_range(net, img, lab, "rotation", 40.0, 2.0, subdiv=1)
    fine = verify_range(net, img, lab, "rotation", 40.0, 2.0, subdiv=8)
    assert fine.hi >= coarse.hi and fine.lo <= coarse.lo
    att = attack_range(net, img, lab, "rotation", 40.0, 0.25, generator=torch.Generator().manual_seed(0))
    assert att.lo <= fine.lo and fine.hi <= att.hi
    ths = torch.linspace(fine.lo, fine.hi, 1000)
    with torch.no_grad():
        pred = net(rotation(img.unsqueeze(0).expand(1000, -1, -1, -1), ths)).argmax(1)
    assert (pred == lab).all()


def test_semantic_certify_summary_and_misclassified_images() -> None:
    model = _threshold_model((1, 4, 4), 0.305)
    x = torch.full((3, 1, 4, 4), 0.5)
    x[2] = 1.0  # mean 1 -> f0 - f1 < 0: class 1
    y = torch.tensor([0, 0, 0])
    res = semantic_certify(model, x, y, "brightness", 0.5, 0.05, gradient=False)
    assert [r.correct for r in res] == [True, True, False]
    s = summarize_semantic(res, "brightness", "crown")
    assert s.n == 3 and s.n_correct == 2 and s.violations == 0
    assert s.verified_radius == pytest.approx(0.30) and s.attacked_radius == pytest.approx(0.3125)
    json.dumps([r.to_dict() for r in res])  # JSON-serializable records
    with pytest.raises(InputError, match="delta"):
        verify_range(model, x[0], 0, "brightness", 0.5, 0.0)
    with pytest.raises(InputError, match="exceeds"):
        verify_range(model, x[0], 0, "brightness", 2.0, 0.1)


def test_cli_semantic_json(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import robrep
    from robrep.cli import main

    torch.manual_seed(0)
    model = robrep.create_model("linear", dataset="demo").eval()
    ck = robrep.save_model(tmp_path / "m.safetensors", model, {"dataset": "demo"})
    rc = main(["semantic", "--checkpoint", str(ck), "--transform", "brightness", "--n", "3", "--eps", "0.4", "--delta", "0.1",
               "--verify", "--no-gradient", "--json", "--quiet", "--out", str(tmp_path / "run")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 3 and out["violations"] == 0 and out["verified_radius"] <= out["attacked_radius"]
    assert (tmp_path / "run" / "record.json").exists() and len(json.loads((tmp_path / "run" / "per_image.json").read_text())) == 3


def test_cli_semantic_rotation_takes_degrees(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`--eps 30` is 30 degrees for rotation, not a linf pixel radius: the CLI's eps-unit guard
    (meant for threat models, e.g. `eval --eps 8`) must not reject it."""
    import robrep
    from robrep.cli import main

    torch.manual_seed(0)
    model = robrep.create_model("linear", dataset="demo").eval()
    ck = robrep.save_model(tmp_path / "m.safetensors", model, {"dataset": "demo"})
    rc = main(["semantic", "--checkpoint", str(ck), "--transform", "rotation", "--n", "1", "--eps", "30", "--delta", "15",
               "--subdiv", "1", "--verify", "--no-gradient", "--json", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    out = json.loads(cap.out.strip().splitlines()[-1])
    assert out["eps"] == 30 and out["verified_radius"] <= out["attacked_radius"] <= 30
    # the guard still protects threat-model commands, including list-valued eps
    assert main(["vulnerability", "--checkpoint", str(ck), "--eps", "0.1", "8"]) == 2
    assert "did you mean 8/255" in capsys.readouterr().err
