"""Loaders for other tools' checkpoints: MadryLab robustness, Cohen smoothing, RobustBench, plain
state dicts (torchvision / timm / robrep archs given ``--arch``), plain safetensors.

Every file is read with :func:`~robrep.models.checkpoint.safe_torch_load` (``weights_only=True``;
full unpickling only with ``trust=True``). Each loader turns the file into a
:class:`~robrep.models.RobrepModel` whose normalization is taken, in this order, from

1. buffers stored in the file (MadryLab ``normalizer.new_mean``/``new_std``, RobustBench-style
   ``mu``/``sigma`` or ``mean``/``std``, robrep's ``normalize.mean``/``std``), or
2. the constants the tool uses implicitly (Cohen et al. 2019: CIFAR-10
   mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010); ImageNet
   (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225)), or
3. the caller's ``mean=``/``std=`` or ``dataset=`` options, else the architecture's default,

and it is applied exactly once (inside the RobrepModel); ``meta["normalization"]`` says where it
came from. Weight names are mapped onto robrep's architectures by trying a short list of key
transforms (strip ``module.``/``model.``/``1.`` prefixes, MadryLab CIFAR ``linear`` -> ``fc``,
RobustBench WideResNet ``blockK.layer.I`` -> ``blocks.J``) and keeping the one whose names and
shapes match the architecture exactly; nothing is loaded partially.

Formats (see ``docs/security.md``):

* **madry**: ``{model | state_dict, optimizer, schedule, epoch, ...}`` with keys
  ``module.normalizer.new_mean`` [3,1,1], ``module.model.<arch>`` (``module.model.model.`` for
  torchvision archs in robust-models-transfer) and duplicates ``module.attacker.*`` (dropped).
* **cohen**: ``{epoch, arch, state_dict, optimizer}``, model ``Sequential(NormalizeLayer, net)``
  so keys start with ``1.`` (CIFAR) or ``1.module.`` (ImageNet, DataParallel). ``arch`` names
  ``cifar_resnet20``/``cifar_resnet110`` (:func:`cohen_cifar_resnet`) or ``resnet50``.
* **state-dict**: a mapping of tensors (optionally under ``state_dict``/``model``/
  ``model_state_dict``/``net``), as torchvision, timm and RobustBench publish them; also plain
  ``.safetensors`` files without robrep metadata. Needs ``arch=`` unless it is recognisable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .base import RobrepModel
from .checkpoint import register_loader
from .state_dicts import (
    _build,
    _is_tensor_map,
    _num,
    _strip_prefixes,
    fit_state_dict,
    infer_arch,
    read_torch_file,
    split_normalization,
)
from .zoo import IMAGENET_MEAN, IMAGENET_STD, MODELS

__all__ = [
    "COHEN_CIFAR10_MEAN",
    "COHEN_CIFAR10_STD",
    "CohenCifarResNet",
    "fit_state_dict",
    "infer_arch",
    "load_cohen",
    "load_madry",
    "load_state_dict_file",
    "read_torch_file",
    "split_normalization",
]

# Cohen et al. (2019), code/datasets.py: _CIFAR10_MEAN / _CIFAR10_STDDEV.
COHEN_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
COHEN_CIFAR10_STD = (0.2023, 0.1994, 0.2010)


# ---------------------------------------------------------------------------------------------
# Cohen's CIFAR ResNet (bearpaw/pytorch-classification), so that cifar_resnet110 files load.


class _CohenBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


@MODELS.register("cohen-cifar-resnet", help="CIFAR ResNet-(6n+2) of Cohen et al. (2019) smoothing code; depth=110 or 20")
class CohenCifarResNet(nn.Module):
    """The CIFAR ResNet used by Cohen, Rosenfeld & Kolter (2019) (``cifar_resnet20/110``).

    Widths 16/32/64, ``n = (depth - 2) / 6`` basic blocks per stage, global average pooling
    (``AvgPool2d(8)`` on 32x32 input in the original) and a final ``fc``.

    Args:
        num_classes: outputs.
        input_shape: (C, H, W); 32x32 in the original.
        depth: 6n+2 (20, 110...).
    """

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), depth: int = 110) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise InputError(f"cohen-cifar-resnet depth must be 6n+2 (20, 110...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin, stages = 16, []
        for i, w in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(_CohenBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return out if pre_logits else self.fc(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
# ---------------------------------------------------------------------------------------------
# The loaders (registered after robrep's own, in this order).


def _madry_weights(obj: Any) -> dict[str, torch.Tensor] | None:
    if not isinstance(obj, Mapping):
        return None
    for key in ("model", "state_dict"):
        sd = obj.get(key)
        if _is_tensor_map(sd) and any(k.endswith("normalizer.new_mean") for k in sd):
            return dict(sd)
    return None


@register_loader("madry", help="MadryLab robustness / robust-models-transfer .pt/.ckpt (normalizer buffers, module.model.*)")
def load_madry(path: Path, arch: str | None = None, trust: bool = False, **options: Any) -> tuple[RobrepModel, dict[str, Any]] | None:
    """MadryLab ``robustness`` checkpoints (Engstrom et al. 2019), also robust-models-transfer.

    Keeps ``module.normalizer.*`` (normalization) and ``module.model.*`` (the net), drops the
    ``module.attacker.*`` duplicates, maps CIFAR ``linear`` to ``fc``.
    """
    obj = read_torch_file(path, trust)
    sd = _madry_weights(obj)
    if sd is None:
        return None
    plain = _strip_prefixes(sd, ("module.",))
    keep: dict[str, torch.Tensor] = {}
    for k, v in plain.items():
        if k.startswith("attacker."):
            continue
        if k.startswith("normalizer."):
            keep[k] = v
        elif k.startswith("model."):
            keep[k[len("model."):]] = v
        else:
            keep[k] = v
    model, meta = _build(path, keep, arch=arch, fmt="madry", options=options)
    for k in ("epoch", "nat_prec1", "adv_prec1"):
        if k in obj:
            meta[k] = _num(obj[k])
    return model, meta


_COHEN_ARCHS: dict[str, tuple[str, dict[str, Any], tuple[int, int, int], str]] = {
    "cifar_resnet20": ("cohen-cifar-resnet", {"depth": 20}, (3, 32, 32), "cifar10"),
    "cifar_resnet110": ("cohen-cifar-resnet", {"depth": 110}, (3, 32, 32), "cifar10"),
    "resnet50": ("tv:resnet50", {}, (3, 224, 224), "imagenet"),
}


@register_loader("cohen", help="Cohen et al. / higher-order smoothing .pth.tar ({epoch, arch, state_dict}; keys 1.* or 1.module.*)")
def load_cohen(path: Path, arch: str | None = None, trust: bool = False, **options: Any) -> tuple[RobrepModel, dict[str, Any]] | None:
    """Randomized-smoothing checkpoints of Cohen, Rosenfeld & Kolter (2019) and forks.

    The saved model is ``Sequential(NormalizeLayer, net)``: the normalization layer has no
    buffers, so its constants are implied by the dataset (CIFAR-10 for ``cifar_*`` archs,
    ImageNet for ``resnet50``; override with ``dataset=``/``mean=``/``std=``).
    """
    obj = read_torch_file(path, trust)
    if not (isinstance(obj, Mapping) and "arch" in obj and _is_tensor_map(obj.get("state_dict"))):
        return None
    sd = obj["state_dict"]
    if not all(k.startswith("1.") for k in sd):
        return None
    weights = _strip_prefixes(sd, ("1.", "module."))
    saved_arch = str(obj["arch"])
    known = _COHEN_ARCHS.get(saved_arch)
    dataset = options.get("dataset")
    if dataset is None and known is not None:
        dataset = known[3]
    if dataset is None:
        dataset = "cifar10" if any(k.startswith("1.") and not k.startswith("1.module.") for k in sd) else "imagenet"
    if dataset == "imagenet":
        implicit = (IMAGENET_MEAN, IMAGENET_STD, "implicit (Cohen et al. ImageNet constants)")
    elif dataset == "cifar10":
        implicit = (COHEN_CIFAR10_MEAN, COHEN_CIFAR10_STD, "implicit (Cohen et al. CIFAR-10 constants)")
    else:
        from ..data import dataset_info

        info = dataset_info(str(dataset))
        implicit = (info.mean, info.std, f"dataset {info.name}")
    opts = dict(options)
    opts.pop("dataset", None)
    kwargs: dict[str, Any] = {}
    if arch is None and known is not None:
        arch, kwargs = known[0], dict(known[1])
        opts.setdefault("input_shape", known[2])
    model, meta = _build(path, weights, arch=arch, fmt="cohen", implicit_norm=implicit, arch_kwargs=kwargs, options=opts)
    meta["cohen_arch"] = saved_arch
    if dataset == "cifar10":
        meta["dataset"] = "cifar10"
    elif dataset != "imagenet":
        meta["dataset"] = str(dataset)
    if "epoch" in obj:
        meta["epoch"] = _num(obj["epoch"])
    return model, meta


@register_loader("state-dict", help="plain state dict (torchvision, timm, RobustBench: module./model. prefixes) or plain safetensors; needs --arch unless recognisable")
def load_state_dict_file(path: Path, arch: str | None = None, trust: bool = False, **options: Any) -> tuple[RobrepModel, dict[str, Any]] | None:
    """Plain state dicts (Croce et al. 2021 RobustBench; torchvision; timm); normalization stored
    as ``mu``/``sigma``, ``mean``/``std`` or ``normalize.*`` buffers is used, else ``dataset=``/
    ``mean=``/``std=`` or the architecture default (ImageNet for torchvision/timm)."""
    obj = read_torch_file(path, trust)
    if obj is None:
        return None
    sd = None
    if _is_tensor_map(obj):
        sd = obj
    elif isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "net", "model_state"):
            if _is_tensor_map(obj.get(key)):
                sd = obj[key]
                break
    if sd is None:
        return None  # a torch file without weights robrep recognises; a later loader may know it
    model, meta = _build(path, dict(sd), arch=arch, fmt="state-dict", options=options)
    if isinstance(obj, Mapping) and "epoch" in obj and not isinstance(obj["epoch"], torch.Tensor):
        meta["epoch"] = _num(obj["epoch"])
    return model, meta
