"""Universal safe checkpoint loader: every format written here from an independent
reference model, loaded with robrep.load, must give the reference model's logits; normalization
is read from the file (or the tool's implicit constants) and applied exactly once; nothing is
unpickled without trust."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robrep
from robrep.cli import main as cli_main
from robrep.errors import CheckpointError
from robrep.models import create_model, load_with_meta, save_model
from robrep.models.formats import CohenCifarResNet, infer_arch

torch.manual_seed(0)
torch.set_num_threads(1)  # the CI box is shared; one thread is faster than two contended ones
SRC = Path(__file__).resolve().parents[1] / "src" / "robrep"

CIFAR_MEAN_MADRY = (0.4914, 0.4822, 0.4465)
CIFAR_STD_MADRY = (0.2023, 0.1994, 0.2010)
IMNET_MEAN, IMNET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _randomize_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm non-trivial running stats and affine params so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


def _ref_logits(net: nn.Module, x: torch.Tensor, mean, std) -> torch.Tensor:
    """Literal reference: normalize once with the given constants, then the original net."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        return net.eval()((x - m) / s)


def _x(c=3, h=32, w=32, n=4, seed=1):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _logits(model, x):
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------------------------------
# robrep's own format


def test_robrep_roundtrip_exact(tmp_path):
    m = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), mean=CIFAR_MEAN_MADRY, std=CIFAR_STD_MADRY, width=8)
    _randomize_bn(m.net)
    save_model(tmp_path / "m.safetensors", m.eval(), {"dataset": "cifar10"})
    m2, meta = load_with_meta(tmp_path / "m.safetensors")
    x = _x()
    assert torch.equal(_logits(m, x), _logits(m2, x))
    assert meta["format"] == "robrep" and meta["dataset"] == "cifar10"


# ------------------------------------------------------------------------------------------
# MadryLab robustness / robust-models-transfer


def _madry_cifar_state(net: nn.Module, mean, std) -> OrderedDict:
    """Keys as AttackerModel in DataParallel saves them: normalizer, model, attacker duplicates;
    CIFAR ResNet names its classifier ``linear``."""
    sd = OrderedDict()
    nm = torch.tensor(mean).view(3, 1, 1)
    ns = torch.tensor(std).view(3, 1, 1)
    sd["module.normalizer.new_mean"] = nm
    sd["module.normalizer.new_std"] = ns
    inner = {("linear." + k[3:] if k.startswith("fc.") else k): v for k, v in net.state_dict().items()}
    for k, v in inner.items():
        sd["module.model." + k] = v.clone()
    sd["module.attacker.normalize.new_mean"] = nm.clone()
    sd["module.attacker.normalize.new_std"] = ns.clone()
    for k, v in inner.items():
        sd["module.attacker.model." + k] = v.clone()
    return sd


@pytest.mark.parametrize("top_key", ["model", "state_dict"])
def test_madry_cifar_resnet18(tmp_path, top_key):
    net = _randomize_bn(create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=8).net, seed=2)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # deliberately not any default
    ck = {top_key: _madry_cifar_state(net, mean, std), "optimizer": {"state": {}, "param_groups": []},
          "schedule": None, "epoch": 151, "amp": None, "nat_prec1": torch.tensor(91.5), "adv_prec1": 55.25}
    torch.save(ck, tmp_path / "madry.pt")
    x = _x()
    ref = _ref_logits(net, x, mean, std)
    model, meta = load_with_meta(tmp_path / "madry.pt")  # architecture inferred from the keys
    assert meta["format"] == "madry" and meta["arch"] == "resnet18" and model.spec.kwargs["width"] == 8
    assert torch.allclose(_logits(model, x), ref, atol=1e-5, rtol=1e-5)
    assert meta["normalization"]["source"] == "file"
    assert meta["normalization"]["mean"] == pytest.approx(mean) and meta["normalization"]["std"] == pytest.approx(std)
    assert meta["epoch"] == 151 and meta["nat_prec1"] == pytest.approx(91.5) and meta["adv_prec1"] == 55.25
    # normalization applied once: not zero times, not twice
    assert not torch.allclose(_logits(model, x), _ref_logits(net, x, (0, 0, 0), (1, 1, 1)), atol=1e-3)
    x_once = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert not torch.allclose(_logits(model, x), _ref_logits(net, x_once, mean, std), atol=1e-3)
    # same with an explicit --arch
    model2 = robrep.load(tmp_path / "madry.pt", arch="resnet18")
    assert torch.allclose(_logits(model2, x), ref, atol=1e-5, rtol=1e-5)


def test_madry_torchvision_nested_transfer(tmp_path):
    """robust-models-transfer wraps torchvision archs: module.model.model.<tv names>."""
    import torchvision

    net = _randomize_bn(torchvision.models.resnet18(num_classes=7), seed=3)
    mean, std = IMNET_MEAN, IMNET_STD
    sd = OrderedDict()
    sd["module.normalizer.new_mean"] = torch.tensor(mean).view(3, 1, 1)
    sd["module.normalizer.new_std"] = torch.tensor(std).view(3, 1, 1)
    for k, v in net.state_dict().items():
        sd["module.model.model." + k] = v
        sd["module.attacker.model.model." + k] = v
    torch.save({"model": sd, "epoch": 3, "optimizer": {}, "schedule": None}, tmp_path / "transfer.ckpt")
    x = _x(h=40, w=40)
    model, meta = load_with_meta(tmp_path / "transfer.ckpt", input_shape=(3, 40, 40))
    assert meta["arch"] == "tv:resnet18" and model.num_classes == 7 and model.input_shape == (3, 40, 40)
    assert torch.allclose(_logits(model, x), _ref_logits(net, x, mean, std), atol=1e-5, rtol=1e-5)


def test_madry_via_cli_eval_matches_api(tmp_path, capsys, demo_data):
    """--checkpoint accepts a MadryLab file: robrep eval gives the reference model's accuracy."""
    import json

    _, te = demo_data
    net = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), width=4, feat_dim=16).net.eval()
    sd = OrderedDict()
    sd["module.normalizer.new_mean"] = torch.tensor([0.3]).view(1, 1, 1)
    sd["module.normalizer.new_std"] = torch.tensor([0.4]).view(1, 1, 1)
    for k, v in net.state_dict().items():
        sd["module.model." + k] = v
        sd["module.attacker.model." + k] = v
    torch.save({"model": sd, "epoch": 1}, tmp_path / "m.pt")
    rc = cli_main(["eval", "--checkpoint", str(tmp_path / "m.pt"), "--arch", "small-cnn", "--dataset", "demo", "--n", "50",
                   "--json", "--quiet", "--device", "cpu"])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0
    x, y = te.head(50).tensors()
    ref = (_ref_logits(net, x, (0.3,), (0.4,)).argmax(1) == y).float().mean().item()
    assert json.loads(out)["clean_accuracy"] == pytest.approx(ref)


# ------------------------------------------------------------------------------------------
# Cohen et al. randomized smoothing


class _CohenNormalizeLayer(nn.Module):
    """Literal copy of the behaviour of Cohen's NormalizeLayer (constants not registered as buffers)."""

    def __init__(self, means, sds):
        super().__init__()
        self.means, self.sds = torch.tensor(means), torch.tensor(sds)

    def forward(self, x):
        return (x - self.means.view(1, -1, 1, 1)) / self.sds.view(1, -1, 1, 1)


def test_cohen_cifar_resnet20(tmp_path):
    net = _randomize_bn(CohenCifarResNet(num_classes=10, depth=20), seed=4)
    full = nn.Sequential(_CohenNormalizeLayer([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]), net).eval()
    assert all(k.startswith("1.") for k in full.state_dict())
    torch.save({"epoch": 90, "arch": "cifar_resnet20", "state_dict": full.state_dict(), "optimizer": {}}, tmp_path / "checkpoint.pth.tar")
    x = _x()
    model, meta = load_with_meta(tmp_path / "checkpoint.pth.tar")
    assert meta["format"] == "cohen" and meta["arch"] == "cohen-cifar-resnet" and model.spec.kwargs["depth"] == 20
    assert meta["dataset"] == "cifar10" and meta["epoch"] == 90 and meta["cohen_arch"] == "cifar_resnet20"
    with torch.no_grad():
        ref = full(x)
    assert torch.allclose(_logits(model, x), ref, atol=1e-5, rtol=1e-5)
    assert model.spec.std == pytest.approx((0.2023, 0.1994, 0.2010))


def test_cohen_imagenet_dataparallel_prefix(tmp_path):
    """ImageNet: Sequential(NormalizeLayer, DataParallel(resnet)) -> keys 1.module.*; ImageNet constants."""
    import torchvision

    net = _randomize_bn(torchvision.models.resnet18(num_classes=5), seed=5)
    sd = OrderedDict(("1.module." + k, v) for k, v in net.state_dict().items())
    torch.save({"epoch": 1, "arch": "resnet18", "state_dict": sd, "optimizer": {}}, tmp_path / "in.pth.tar")
    x = _x(h=48, w=48)
    model, meta = load_with_meta(tmp_path / "in.pth.tar")
    assert meta["arch"] == "tv:resnet18" and "ImageNet" in meta["normalization"]["source"]
    assert torch.allclose(_logits(model, x), _ref_logits(net, x, IMNET_MEAN, IMNET_STD), atol=1e-5, rtol=1e-5)


def test_cohen_with_robrep_arch_given(tmp_path):
    net = _randomize_bn(create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=8).net, seed=6)
    sd = OrderedDict(("1." + k, v) for k, v in net.state_dict().items())
    torch.save({"epoch": 2, "arch": "my_resnet18", "state_dict": sd, "optimizer": None}, tmp_path / "c.pth.tar")
    x = _x()
    model = robrep.load(tmp_path / "c.pth.tar", arch="resnet18")
    assert torch.allclose(_logits(model, x), _ref_logits(net, x, CIFAR_MEAN_MADRY, CIFAR_STD_MADRY), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# RobustBench-style and plain state dicts


class _TradesBlock(nn.Module):
    """WideResNet block as in TRADES / RobustBench (names bn1, relu1, conv1, ..., convShortcut)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        if not self.equal:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return (x if self.equal else self.convShortcut(x)) + out


class _TradesNetBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[_TradesBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class _TradesWRN(nn.Module):
    def __init__(self, depth=10, widen=1, num_classes=10, with_norm=None):
        super().__init__()
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.block1 = _TradesNetBlock(n, w[0], w[1], 1)
        self.block2 = _TradesNetBlock(n, w[1], w[2], 2)
        self.block3 = _TradesNetBlock(n, w[2], w[3], 2)
        self.bn1, self.relu = nn.BatchNorm2d(w[3]), nn.ReLU()
        self.fc = nn.Linear(w[3], num_classes)
        if with_norm is not None:  # RobustBench models that normalize inside keep mu/sigma buffers
            self.register_buffer("mu", torch.tensor(with_norm[0]).view(1, 3, 1, 1))
            self.register_buffer("sigma", torch.tensor(with_norm[1]).view(1, 3, 1, 1))
        self.with_norm = with_norm is not None

    def forward(self, x):
        if self.with_norm:
            x = (x - self.mu) / self.sigma
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.avg_pool2d(out, 8).flatten(1))


@pytest.mark.parametrize("norm", [None, ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))])
def test_robustbench_wrn_state_dict(tmp_path, norm):
    ref_net = _randomize_bn(_TradesWRN(depth=10, widen=2, with_norm=norm), seed=7)
    sd = OrderedDict(("module." + k, v) for k, v in ref_net.state_dict().items())
    torch.save({"state_dict": sd}, tmp_path / "rb.pt")
    x = _x()
    with torch.no_grad():
        ref = ref_net(x)
    model, meta = load_with_meta(tmp_path / "rb.pt", arch="wrn-28-10")
    assert "robustbench wrn" in meta["key_transform"]
    assert torch.allclose(_logits(model, x), ref, atol=1e-5, rtol=1e-5)
    if norm is None:
        assert model.spec.mean == (0.0, 0.0, 0.0) and model.spec.std == (1.0, 1.0, 1.0)
    else:
        assert meta["normalization"]["source"] == "file" and model.spec.mean == pytest.approx(norm[0])


def test_plain_torchvision_state_dict_model_prefix(tmp_path):
    import torchvision

    net = _randomize_bn(torchvision.models.resnet18(num_classes=4), seed=8)
    torch.save(OrderedDict(("model." + k, v) for k, v in net.state_dict().items()), tmp_path / "tv.pth")
    x = _x(h=36, w=36)
    model, meta = load_with_meta(tmp_path / "tv.pth", arch="tv:resnet18")
    assert meta["format"] == "state-dict" and "imagenet" in meta["normalization"]["source"]
    assert torch.allclose(_logits(model, x), _ref_logits(net, x, IMNET_MEAN, IMNET_STD), atol=1e-5, rtol=1e-5)
    # dataset-given normalization is used when the file stores none
    m2, meta2 = load_with_meta(tmp_path / "tv.pth", arch="tv:resnet18", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert meta2["normalization"]["source"] == "given"
    assert torch.allclose(_logits(m2, x), _ref_logits(net, x, (0.5,) * 3, (0.25,) * 3), atol=1e-5, rtol=1e-5)


def test_plain_safetensors_and_robrep_state_dict(tmp_path):
    from safetensors.torch import save_file

    m = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), mean=(0.2,), std=(0.3,), width=4, feat_dim=8)
    x = _x(c=1, h=28, w=28)
    # a robrep model's full state dict saved by torch.save: normalize.* buffers are read from it
    torch.save(m.state_dict(), tmp_path / "robrep_sd.pt")
    m2, meta = load_with_meta(tmp_path / "robrep_sd.pt", arch="small-cnn")
    assert meta["normalization"]["source"] == "file" and m2.spec.kwargs == {"width": 4, "feat_dim": 8}
    assert torch.allclose(_logits(m2, x), _logits(m, x), atol=1e-6)
    # the net's weights as plain safetensors (no robrep header), normalization given
    save_file({k: v.contiguous() for k, v in m.net.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    m3 = robrep.load(tmp_path / "plain.safetensors", arch="small-cnn", mean=(0.2,), std=(0.3,))
    assert torch.allclose(_logits(m3, x), _logits(m, x), atol=1e-6)
    with pytest.raises(CheckpointError, match="pass --arch"):
        robrep.load(tmp_path / "plain.safetensors")


def test_infer_arch_table():
    import torchvision

    assert infer_arch(create_model("resnet18", input_shape=(3, 32, 32), width=8).net.state_dict()) == ("resnet18", {"width": 8})
    assert infer_arch(torchvision.models.resnet34(num_classes=3).state_dict()) == ("tv:resnet34", {})
    assert infer_arch(CohenCifarResNet(depth=14).state_dict()) == ("cohen-cifar-resnet", {"depth": 14})
    assert infer_arch(create_model("small-cnn").net.state_dict()) is None


# ------------------------------------------------------------------------------------------
# wrong architecture, corrupt files


def test_checkpoint_of_another_architecture(tmp_path):
    net = create_model("resnet18", input_shape=(3, 32, 32), width=8).net
    torch.save(net.state_dict(), tmp_path / "r.pt")
    with pytest.raises(CheckpointError, match="does not fit architecture 'preact-resnet18'"):
        robrep.load(tmp_path / "r.pt", arch="preact-resnet18")
    with pytest.raises(CheckpointError, match="does not fit"):  # same names, other widths
        robrep.load(tmp_path / "r.pt", arch="resnet18", model_kwargs={"width": 16})
    m = create_model("small-cnn", width=4, feat_dim=8)
    save_model(tmp_path / "s.safetensors", m)
    with pytest.raises(CheckpointError, match="holds a 'small-cnn' model"):
        robrep.load(tmp_path / "s.safetensors", arch="mlp")


@pytest.mark.parametrize("kind", ["random", "truncated-zip", "truncated-safetensors", "text", "empty", "pickle-list"])
def test_corrupt_files_raise_checkpoint_error(tmp_path, kind):
    p = tmp_path / "bad.pt"
    if kind == "random":
        p.write_bytes(os.urandom(4096))
    elif kind == "truncated-zip":
        torch.save(create_model("small-cnn").state_dict(), p)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif kind == "truncated-safetensors":
        save_model(p, create_model("small-cnn"))
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif kind == "text":
        p.write_text("hello, I am not a checkpoint\n")
    elif kind == "empty":
        p.write_bytes(b"")
    else:
        torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError) as ei:
        robrep.load(p, arch="small-cnn")
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg
    assert re.search(r"corrupt|truncated|empty|unknown checkpoint format|no state dict", msg)


# ------------------------------------------------------------------------------------------
# no code execution without the opt-in


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["torch.save", "raw-pickle", "madry-like"])
def test_malicious_pickle_runs_nothing_without_trust(tmp_path, how):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save({"state_dict": {"w": torch.ones(1)}, "x": _Evil(marker)}, p)
    elif how == "raw-pickle":
        p.write_bytes(pickle.dumps(_Evil(marker)))
    else:  # a MadryLab-looking file with a poisoned 'schedule' entry
        net = create_model("small-cnn", width=4, feat_dim=8).net
        sd = {"module.normalizer.new_mean": torch.zeros(1, 1, 1), "module.normalizer.new_std": torch.ones(1, 1, 1)}
        sd.update({"module.model." + k: v for k, v in net.state_dict().items()})
        torch.save({"model": sd, "schedule": _Evil(marker), "epoch": 1}, p)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as ei:
        robrep.load(p, arch="small-cnn")
    assert "could" in str(ei.value) and "run code" in str(ei.value)
    assert not marker.exists()
    # the CLI refuses too, with one line and exit 2
    rc = cli_main(["eval", "--checkpoint", str(p), "--arch", "small-cnn", "--dataset", "demo", "--n", "5", "--quiet"])
    assert rc == 2 and not marker.exists()
    # with the explicit opt-in the file is unpickled (the marker proves code ran) and a warning is given
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            robrep.load(p, arch="small-cnn", trust=True)
        except CheckpointError:
            pass  # only the madry-like file holds weights
    assert marker.exists()
    assert any("arbitrary code" in str(wi.message) for wi in w)


def test_trust_flag_loads_legacy_madry_with_custom_objects(tmp_path, recwarn):
    """A MadryLab file whose extra entries are custom objects loads only with trust, and then correctly."""
    net = _randomize_bn(create_model("resnet18", input_shape=(3, 32, 32), width=8).net, seed=9)
    sd = _madry_cifar_state(net, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    torch.save({"model": sd, "schedule": _Harmless(), "epoch": 5}, tmp_path / "legacy.pt")
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        robrep.load(tmp_path / "legacy.pt")
    model = robrep.load(tmp_path / "legacy.pt", trust=True)
    x = _x()
    assert torch.allclose(_logits(model, x), _ref_logits(net, x, (0.5,) * 3, (0.2,) * 3), atol=1e-5, rtol=1e-5)


class _Harmless:
    pass


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every ``name(...)`` call in ``text`` (balanced parentheses, multi-line)."""
    out, start = [], 0
    while (i := text.find(name + "(", start)) >= 0:
        j, depth = i + len(name), 0
        for j in range(i + len(name), len(text)):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                break
        out.append(text[i + len(name) + 1 : j])
        start = j
    return out


def test_every_torch_load_in_the_library_is_safe():
    """Static check: outside safe_torch_load's trusted branch, every torch.load passes weights_only=True,
    and the library never calls pickle.load / pickle.loads itself."""
    offenders = []
    for f in SRC.rglob("*.py"):
        text = f.read_text()
        rel = str(f.relative_to(SRC))
        for args in _calls(text, "torch.load"):
            trusted = rel == os.path.join("models", "checkpoint.py") and "weights_only=False" in args
            if "weights_only=True" not in args and not trusted:
                offenders.append(f"{rel}: torch.load({' '.join(args.split())})")
        for bad in ("pickle.load", "pickle.loads", "dill.load"):
            if _calls(text, bad):
                offenders.append(f"{rel}: {bad}")
    assert not offenders, offenders
    assert _calls("a = torch.load(p,\n  weights_only=True)", "torch.load") == ["p,\n  weights_only=True"]


def test_every_checkpoint_option_offers_arch_and_trust():
    """--checkpoint everywhere goes through the universal loader: each command that takes
    --checkpoint also takes --arch and the explicit --trust-checkpoint opt-in (off by default)."""
    import argparse

    from robrep.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    seen = 0
    for name, p in sub.choices.items():
        opts = {o: a for a in p._actions for o in a.option_strings}
        if "--checkpoint" in opts:
            seen += 1
            assert "--arch" in opts and "--trust-checkpoint" in opts, name
            assert opts["--trust-checkpoint"].default is False, name
    assert seen >= 3
