"""Model registry: robrep's small backbones and any torchvision/timm classifier by name.

Every factory has the signature ``factory(num_classes, input_shape, **kwargs) -> nn.Module``
(a net taking *normalized* input); :func:`create_model` wraps it in a :class:`RobrepModel`.
The final classifier of each robrep net is an ``nn.Linear`` called ``fc``, and every robrep net
follows timm's representation contract (``robrep.models.base``): ``forward_features(x)`` (the
map before pooling) and ``forward_head(f, pre_logits=False)`` (``pre_logits=True``: the pooled
features the classifier reads), with ``forward(x) = forward_head(forward_features(x))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._registry import Registry
from ..errors import InputError
from .base import ModelSpec, RobrepModel

__all__ = ["MODELS", "create_model", "list_models", "model_from_spec", "wrap"]

NetFactory = Callable[..., nn.Module]
MODELS: Registry[NetFactory] = Registry("model")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def list_models() -> list[str]:
    return MODELS.names()


def create_model(
    arch: str,
    *,
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 28, 28),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dataset: str | None = None,
    **kwargs: object,
) -> RobrepModel:
    """Build a registered architecture as a :class:`RobrepModel` (inputs in [0,1]).

    Args:
        arch: ``robrep list models`` name, or ``tv:<name>`` / ``timm:<name>``.
        num_classes: number of outputs.
        input_shape: (C, H, W).
        mean, std: normalization inside the model (default: the dataset's, else 0.5/0.5...
            for robrep nets and ImageNet's for torchvision/timm nets).
        dataset: take ``num_classes``, ``input_shape``, ``mean`` and ``std`` from this dataset.
        kwargs: architecture options (e.g. ``width=10`` for wrn).
    """
    if dataset is not None:
        from ..data import dataset_info

        info = dataset_info(dataset)
        num_classes, input_shape = info.num_classes, info.input_shape
        mean = info.mean if mean is None else mean
        std = info.std if std is None else std
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise InputError(f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    c = shape[0]
    if mean is None or std is None:
        if (arch.startswith("tv:") or arch.startswith("timm:")) and c == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean, std = (0.5,) * c, (0.5,) * c
    spec = ModelSpec(arch, int(num_classes), shape, tuple(float(m) for m in mean), tuple(float(s) for s in std), dict(kwargs))  # type: ignore[arg-type]
    return model_from_spec(spec)


def model_from_spec(spec: ModelSpec) -> RobrepModel:
    """Rebuild a model (random weights) from its :class:`ModelSpec`."""
    factory = MODELS.get(spec.arch)
    try:
        net = factory(num_classes=spec.num_classes, input_shape=spec.input_shape, **spec.kwargs)
    except TypeError as e:
        raise InputError(f"bad options for model {spec.arch!r}: {e}") from e
    return RobrepModel(net, spec)


def wrap(
    net: nn.Module,
    *,
    num_classes: int,
    input_shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    arch: str = "custom",
) -> RobrepModel:
    """Wrap your own classifier (taking normalized input) so robrep can use it."""
    spec = ModelSpec(arch, num_classes, tuple(int(v) for v in input_shape), tuple(mean), tuple(std))  # type: ignore[arg-type]
    return RobrepModel(net, spec)


# ---------------------------------------------------------------------------------------------


@MODELS.register("mnist-cnn", help="Madry et al. (2018) MNIST CNN: conv32-conv64-fc1024 (penultimate 1024-d)")
class MadryMnistCNN(nn.Module):
    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28)) -> None:
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * (h // 4) * (w // 4), 1024)
        self.fc = nn.Linear(1024, num_classes)

    def forward_features(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return F.max_pool2d(F.relu(self.conv2(x)), 2)

    def forward_head(self, x, pre_logits: bool = False):
        x = F.relu(self.fc1(x.flatten(1)))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "softplus": lambda t: F.softplus(t, beta=10.0),  # smooth ReLU (Xie et al. 2020, smooth adversarial training)
    "silu": F.silu,
    "gelu": F.gelu,
    "elu": F.elu,
}


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in _ACTIVATIONS:
        raise InputError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


@MODELS.register("small-cnn", help="fast CNN for CPU work: conv16-conv32-fc128 (penultimate 128-d); act=relu|softplus|silu|gelu|elu")
class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28), width: int = 16, feat_dim: int = 128,
                 act: str = "relu") -> None:
        super().__init__()
        c, h, w = input_shape
        self.act = _activation(act)
        self.conv1 = nn.Conv2d(c, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * (h // 4) * (w // 4), feat_dim)
        self.fc = nn.Linear(feat_dim, num_classes)

    def forward_features(self, x):
        x = F.max_pool2d(self.act(self.conv1(x)), 2)
        return F.max_pool2d(self.act(self.conv2(x)), 2)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.act(self.fc1(x.flatten(1)))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


class _ResNet(nn.Module):
    """CIFAR-style ResNet (3x3 stem, no max-pool), as in Madry's `robustness` (shortcut/linear -> fc)."""

    def __init__(self, block: type[nn.Module], layers: Sequence[int], num_classes: int, input_shape: Sequence[int], preact: bool = False, width: int = 64) -> None:
        super().__init__()
        c = input_shape[0]
        self.preact = preact
        self.conv1 = nn.Conv2d(c, width, 3, 1, 1, bias=False)
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(width)  # pre-activation nets have no stem BN
        cin = width
        stages = []
        for i, n in enumerate(layers):
            cout = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn_final = nn.BatchNorm2d(cin) if preact else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)

    def forward_features(self, x):
        out = self.conv1(x)
        if not self.preact:
            out = F.relu(self.bn1(out))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.preact:
            out = F.relu(self.bn_final(out))
        return out

    def forward_head(self, x, pre_logits: bool = False):
        out = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return out if pre_logits else self.fc(out)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@MODELS.register("resnet18", help="CIFAR ResNet-18 (He et al. 2016; 3x3 stem) (penultimate 512-d)")
def resnet18(num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), width: int = 64) -> nn.Module:
    return _ResNet(_BasicBlock, (2, 2, 2, 2), num_classes, input_shape, width=width)


@MODELS.register("preact-resnet18", help="PreAct ResNet-18 (He et al. 2016b), as in Rice et al. / Wong et al.")
def preact_resnet18(num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), width: int = 64) -> nn.Module:
    return _ResNet(_PreActBlock, (2, 2, 2, 2), num_classes, input_shape, preact=True, width=width)


class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = drop
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        sc = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.drop > 0:
            o = F.dropout(o, self.drop, self.training)
        return self.conv2(o) + sc


@MODELS.register("wrn-28-10", help="WideResNet-28-10 (Zagoruyko & Komodakis 2016); depth/width adjustable")
class WideResNet(nn.Module):
    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), depth: int = 28, widen: int = 10, drop: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise InputError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(_WideBlock(cin, w, (1 if i == 0 else 2) if j == 0 else 1, drop))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward_features(self, x):
        return F.relu(self.bn(self.blocks(self.conv1(x))))

    def forward_head(self, x, pre_logits: bool = False):
        out = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return out if pre_logits else self.fc(out)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@MODELS.register("linear", help="a linear classifier on flattened pixels (for closed-form tests)")
class LinearNet(nn.Module):
    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28)) -> None:
        super().__init__()
        d = 1
        for s in input_shape:
            d *= s
        self.fc = nn.Linear(d, num_classes)

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@MODELS.register("mlp", help="a two-layer ReLU MLP on flattened pixels (hidden=256)")
class MLPNet(nn.Module):
    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28), hidden: int = 256) -> None:
        super().__init__()
        d = 1
        for s in input_shape:
            d *= s
        self.fc1 = nn.Linear(d, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward_features(self, x):
        return F.relu(self.fc1(x.flatten(1)))

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------
# torchvision and timm classifiers by name.


def _adapt_first_conv(net: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d when the input has other than 3 channels."""
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.in_channels == in_channels:
                return
            new = nn.Conv2d(in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups, m.bias is not None)
            parent = net
            *path, last = name.split(".")
            for p in path:
                parent = getattr(parent, p)
            setattr(parent, last, new)
            return


def _torchvision(name: str) -> NetFactory:
    from torchvision import models as tvm

    if name not in tvm.list_models(module=tvm):
        raise InputError(f"torchvision has no classifier {name!r}; see torchvision.models.list_models()")

    def factory(num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224), weights: str | None = None, **kw: object) -> nn.Module:
        if weights is not None:
            # Real loading path (downloads on a user's machine); robrep never does it in tests.
            net = tvm.get_model(name, weights=weights, **kw)
            if num_classes != 1000:
                raise InputError("pretrained torchvision weights have 1000 classes; use robrep transfer to change the head")
        else:
            net = tvm.get_model(name, weights=None, num_classes=num_classes, **kw)
        _adapt_first_conv(net, input_shape[0])
        return net

    return factory


def _timm(name: str) -> NetFactory:
    try:
        import timm
    except ImportError as e:
        raise InputError("timm is not installed: pip install 'robrep[timm]'") from e

    def factory(num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224), pretrained: bool = False,
                headless: bool = False, **kw: object) -> nn.Module:
        # headless: no classifier (num_classes=0 in timm); the output is the pooled representation
        return timm.create_model(name, pretrained=pretrained, num_classes=0 if headless else num_classes,
                                 in_chans=input_shape[0], **kw)

    return factory


MODELS.register_prefix("tv", _torchvision, help="any torchvision classifier, e.g. tv:resnet18")
MODELS.register_prefix("timm", _timm, help="any timm model, e.g. timm:vit_tiny_patch16_224 (pip install timm)")
