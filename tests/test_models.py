"""Model contract: registry smoke tests, [0,1] inputs with normalization inside,
representations by layer name, save/load round trip."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import robrep
from robrep.models import MODELS, list_layers, representation

SMALL = {  # arch -> (input_shape, kwargs) small enough for CPU tests
    "mnist-cnn": ((1, 28, 28), {}),
    "small-cnn": ((1, 28, 28), {}),
    "resnet18": ((3, 16, 16), {"width": 8}),
    "preact-resnet18": ((3, 16, 16), {"width": 8}),
    "wrn-28-10": ((3, 16, 16), {"depth": 10, "widen": 1}),
    "linear": ((1, 8, 8), {}),
    "mlp": ((1, 8, 8), {}),
    "cohen-cifar-resnet": ((3, 16, 16), {"depth": 8}),
}


ENCODERS = {"dim-encoder"}  # unsupervised encoders, tested in their own files


def test_every_registered_model_is_covered() -> None:
    missing = set(MODELS.names()) - set(SMALL) - ENCODERS
    assert missing == set(), f"add {missing} to SMALL (or ENCODERS if tested elsewhere)"


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_forward_backward_and_gradients_reach_all_parameters(arch: str) -> None:
    shape, kw = SMALL[arch]
    torch.manual_seed(0)
    m = robrep.create_model(arch, num_classes=7, input_shape=shape, **kw)
    x = torch.rand(4, *shape)
    out = m(x)
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, f"no gradient reaches {n}"


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_penultimate_is_input_of_final_linear(arch: str) -> None:
    shape, kw = SMALL[arch]
    m = robrep.create_model(arch, num_classes=5, input_shape=shape, **kw).eval()
    x = torch.rand(3, *shape)
    z = representation(m, "penultimate")(x)
    with torch.no_grad():
        assert torch.allclose(m.net.fc(z), m(x), atol=1e-5)
    assert torch.allclose(representation(m, "logits")(x), m(x))


def test_normalization_happens_inside_once() -> None:
    m = robrep.create_model("linear", num_classes=3, input_shape=(2, 2, 2), mean=(0.2, 0.4), std=(0.5, 0.25)).eval()
    x = torch.rand(5, 2, 2, 2)
    mean = torch.tensor([0.2, 0.4]).view(1, 2, 1, 1)
    std = torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)
    with torch.no_grad():
        assert torch.allclose(m(x), m.net((x - mean) / std), atol=1e-6)


def test_named_layer_representation_and_early_stop() -> None:
    m = robrep.create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28)).eval()
    assert "conv2" in list_layers(m)
    calls = []
    m.net.fc.register_forward_hook(lambda *a: calls.append(1))
    z = representation(m, "conv2", flatten=False)(torch.rand(2, 1, 28, 28))
    assert z.shape == (2, 32, 14, 14)
    assert calls == []  # the forward stopped at conv2
    with pytest.raises(robrep.InputError, match="no layer"):
        representation(m, "nope")


def test_torchvision_model_by_name() -> None:
    m = robrep.create_model("tv:resnet18", num_classes=4, input_shape=(1, 32, 32)).eval()
    x = torch.rand(2, 1, 32, 32)
    assert m(x).shape == (2, 4)
    assert representation(m)(x).shape == (2, 512)
    with pytest.raises(robrep.InputError, match="torchvision has no"):
        robrep.create_model("tv:not_a_model")


def test_save_load_round_trip(tmp_path) -> None:
    m = robrep.create_model("resnet18", num_classes=10, input_shape=(3, 16, 16), width=8, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6)).eval()
    p = robrep.save_model(tmp_path / "m.safetensors", m, {"dataset": "cifar10", "note": "x"})
    m2, meta = robrep.models.load_with_meta(p)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert meta["dataset"] == "cifar10" and m2.spec == m.spec
    assert torch.allclose(m2.normalize.std.flatten(), torch.tensor([0.4, 0.5, 0.6]))


def test_wrap_custom_module() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    m = robrep.wrap(net, num_classes=2, input_shape=(1, 2, 2), mean=(0.5,), std=(0.5,))
    assert representation(m)(torch.rand(3, 1, 2, 2)).shape == (3, 8)


def test_flush_denormals_zeroes_only_subnormal_values_and_load_applies_it(tmp_path):
    from robrep.models import create_model, flush_denormals_, save_model

    torch.manual_seed(0)
    m = create_model("small-cnn", dataset="mnist").eval()
    w = m.net.fc1.weight
    with torch.no_grad():
        w[0, :7] = 1e-40  # subnormal in float32
        w[1, 0] = -3e-39
        w[1, 1] = 2e-38  # normal (> 1.18e-38): kept
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.rand(4, 1, 28, 28)
    y0 = m(x)
    sub = (w != 0) & (w.abs() < torch.finfo(torch.float32).tiny)
    assert int(sub.sum()) == 8
    path = tmp_path / "m.safetensors"
    save_model(path, m)
    assert flush_denormals_(m) == 8
    assert torch.all(w[0, :7] == 0) and w[1, 0] == 0 and w[1, 1] == torch.tensor(2e-38)
    changed = [k for k, v in m.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["net.fc1.weight"]
    assert torch.allclose(m(x), y0, atol=0, rtol=1e-6)
    assert flush_denormals_(m) == 0
    loaded = robrep.load(path)
    lw = loaded.net.fc1.weight
    assert int(((lw != 0) & (lw.abs() < torch.finfo(torch.float32).tiny)).sum()) == 0
    assert torch.equal(lw, w)


@pytest.mark.parametrize("act", ["softplus", "silu", "gelu", "elu"])
def test_small_cnn_activation_is_kept_by_checkpoints(tmp_path, act: str) -> None:
    torch.manual_seed(0)
    m = robrep.create_model("small-cnn", width=4, feat_dim=8, act=act).eval()
    relu = robrep.create_model("small-cnn", width=4, feat_dim=8).eval()
    relu.load_state_dict(m.state_dict())
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(m(x), relu(x))  # same weights, another nonlinearity
        m2 = robrep.load(robrep.save_model(tmp_path / "m.safetensors", m, {}))
        assert torch.equal(m(x), m2(x)) and m2.spec.kwargs["act"] == act
    # the smooth ones have a non-zero gradient for negative pre-activations, unlike ReLU
    from robrep.models.zoo import _activation
    t = torch.tensor([-0.5], requires_grad=True)
    (g,) = torch.autograd.grad(_activation(act)(t).sum(), t)
    assert g.item() != 0.0
    # softplus with beta 10: log(1 + exp(10 t)) / 10, i.e. ln(2)/10 at 0 and ReLU far from 0
    sp = _activation("softplus")(torch.tensor([0.0, 3.0, -3.0], dtype=torch.float64))
    assert torch.allclose(sp, torch.tensor([math.log(2) / 10, 3.0, 0.0], dtype=torch.float64), atol=1e-12)


def test_small_cnn_unknown_activation_is_a_clear_error() -> None:
    with pytest.raises(robrep.errors.InputError, match="unknown activation 'tanhh'.*relu"):
        robrep.create_model("small-cnn", act="tanhh")


# ---------------------------------------------------------------------------------------------
# The representation contract, checked for every registered architecture (and sample torchvision /
# timm names) by one test: no per-model test code.

CONTRACT_SHAPES = {
    **SMALL,
    "dim-encoder": ((1, 28, 28), {"width": 8, "hidden": 32}),
    "tv:resnet18": ((3, 32, 32), {}),
    "timm:test_resnet": ((3, 32, 32), {}),
    "timm:test_vit": ((3, 32, 32), {"img_size": 32}),
}
PREFIXED = ["tv:resnet18", "timm:test_resnet", "timm:test_vit"]


@pytest.mark.parametrize("arch", sorted(MODELS.names()) + PREFIXED)
def test_every_model_obeys_the_representation_contract(arch: str) -> None:
    from robrep.models import final_linear_name, layer_taps

    if arch.startswith("timm:"):
        pytest.importorskip("timm")
    assert arch in CONTRACT_SHAPES, f"add {arch!r} to CONTRACT_SHAPES (input shape, small kwargs)"
    shape, kw = CONTRACT_SHAPES[arch]
    torch.manual_seed(0)
    m = robrep.create_model(arch, num_classes=5, input_shape=shape, **kw).eval()
    names = list_layers(m)
    taps = layer_taps(m.net)
    assert names[:2] == ["penultimate", "pooled"] and "features" in taps and list(taps)[-1] == "logits"
    assert names[: len(taps)] == list(taps) and all(t.help for t in taps.values())
    x = torch.rand(3, *shape)
    with torch.no_grad():
        out = m(x)
        pen = representation(m, "penultimate")(x)
        # penultimate = pooled = what the classifier reads: the head maps it to the output
        assert torch.equal(pen, representation(m, "pooled")(x))
        head = m.net.get_submodule(final_linear_name(m.net))
        assert (head(pen) - out).abs().max() <= 1e-5
        assert torch.equal(representation(m, "logits")(x), out)
        for name in taps:
            z = representation(m, name, flatten=False)(x)
            assert z.shape[0] == 3 and torch.isfinite(z).all(), name
        # one image's representation does not depend on the rest of the batch
        assert torch.allclose(representation(m)(x[:1]), pen[:1], atol=1e-5)
    with pytest.raises(robrep.InputError, match="no layer 'nope'; choose one of penultimate, pooled, features"):
        representation(m, "nope")
