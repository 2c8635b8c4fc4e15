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

import inspect
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InputError
from .base import ModelSpec, RobrepModel
from .checkpoint import register_loader, safe_torch_load
from .zoo import IMAGENET_MEAN, IMAGENET_STD, MODELS, model_from_spec

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

_ZIP_MAGIC = b"PK\x03\x04"


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
# Reading files.

_cache: dict[str, Any] = {}


def _sniff(path: Path) -> str:
    """``zip`` (torch >= 1.6), ``pickle`` (legacy torch.save / raw pickle), ``safetensors`` or ``other``."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "other"


def read_torch_file(path: str | os.PathLike[str], trust: bool = False) -> Any:
    """Load a ``torch.save`` file safely (cached for the loaders that inspect the same file).

    Returns None when the file is not a torch/pickle file at all (so another loader may try).
    Raises :class:`CheckpointError` for corrupt files and, unless ``trust``, for pickles that
    need code to load.
    """
    p = Path(path)
    kind = _sniff(p)
    if kind == "safetensors":
        from safetensors.torch import load_file

        key = f"st:{p.resolve()}:{p.stat().st_mtime_ns}:{p.stat().st_size}"
        if key not in _cache:
            try:
                _cache.clear()
                _cache[key] = load_file(str(p))
            except Exception as e:
                raise CheckpointError(f"{p} is truncated or corrupt ({str(e)[:200]}); restore it from a copy") from e
        return _cache[key]
    if kind not in ("zip", "pickle"):
        return None
    key = f"pt:{p.resolve()}:{p.stat().st_mtime_ns}:{p.stat().st_size}:{trust}"
    if key not in _cache:
        _cache.clear()
        _cache[key] = safe_torch_load(p, trust=trust)
    return _cache[key]


def _is_tensor_map(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _num(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


# ---------------------------------------------------------------------------------------------
# Normalization stored in files.

_NORM_KEYS: tuple[tuple[str, str], ...] = (
    ("normalizer.new_mean", "normalizer.new_std"),  # MadryLab InputNormalize
    ("normalize.mean", "normalize.std"),  # robrep RobrepModel
    ("normalize.new_mean", "normalize.new_std"),
    ("mu", "sigma"),  # RobustBench (e.g. Wong2020Fast / PreActResNet wrappers)
    ("mean", "std"),  # RobustBench DMWideResNet and others
)


def _strip_prefixes(sd: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def split_normalization(sd: Mapping[str, torch.Tensor]) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, dict[str, torch.Tensor]]:
    """Find stored normalization buffers; return (mean, std, remaining weights).

    Keys are matched after dropping ``module.`` prefixes. Mean and std must be per-channel
    (numel = channels, e.g. shape [3,1,1] or [1,3,1,1]); std must be positive.
    """
    plain = _strip_prefixes(sd, ("module.",))
    for km, ks in _NORM_KEYS:
        if km in plain and ks in plain:
            m, s = plain[km].detach().float().flatten(), plain[ks].detach().float().flatten()
            if m.numel() != s.numel() or m.numel() == 0 or not bool((s > 0).all()):
                raise CheckpointError(f"stored normalization {km}/{ks} is invalid (mean {m.tolist()}, std {s.tolist()})")
            rest = {k: v for k, v in sd.items() if _strip_prefixes({k: v}, ("module.",)).keys().isdisjoint({km, ks})}
            return tuple(m.tolist()), tuple(s.tolist()), rest
    return None, None, dict(sd)


# ---------------------------------------------------------------------------------------------
# Fitting weights onto an architecture.


def _rename(sd: Mapping[str, torch.Tensor], fn: Callable[[str], str]) -> dict[str, torch.Tensor]:
    return {fn(k): v for k, v in sd.items()}


def _madry_cifar(k: str) -> str:
    return "fc." + k[len("linear."):] if k.startswith("linear.") else k


def _robustbench_wrn(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """RobustBench / TRADES WideResNet names -> robrep ``wrn-28-10`` names."""
    pat = re.compile(r"^block(\d+)\.layer\.(\d+)\.(.*)$")
    per_stage: dict[int, int] = {}
    for k in sd:
        m = pat.match(k)
        if m:
            s, i = int(m.group(1)), int(m.group(2))
            per_stage[s] = max(per_stage.get(s, 0), i + 1)
    if not per_stage:
        return None
    n = max(per_stage.values())
    out = {}
    for k, v in sd.items():
        m = pat.match(k)
        if m:
            s, i, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            rest = rest.replace("convShortcut", "shortcut")
            out[f"blocks.{(s - 1) * n + i}.{rest}"] = v
        elif k.startswith("bn1."):
            out["bn." + k[4:]] = v
        else:
            out[k] = v
    return out


def _candidates(sd: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    seen: set[frozenset[str]] = set()
    base = [
        ("as is", dict(sd)),
        ("strip module.", _strip_prefixes(sd, ("module.",))),
        ("strip module./model.", _strip_prefixes(sd, ("module.", "model."))),
        ("strip 1./module.", _strip_prefixes(sd, ("1.", "module."))),
        ("strip net.", _strip_prefixes(sd, ("module.", "net."))),
    ]
    for name, c in base:
        for n2, c2 in ((name, c), (name + ", linear->fc", _rename(c, _madry_cifar))):
            key = frozenset(c2)
            if key not in seen:
                seen.add(key)
                yield n2, c2
            w = _robustbench_wrn(c2)
            if w is not None and frozenset(w) not in seen:
                seen.add(frozenset(w))
                yield n2 + ", robustbench wrn", w


def fit_state_dict(model: RobrepModel, sd: Mapping[str, torch.Tensor], path: str | os.PathLike[str] = "checkpoint") -> str:
    """Load ``sd`` into ``model.net`` exactly (names and shapes) after the first key transform that fits.

    Returns the transform's name. Raises :class:`CheckpointError` (naming missing/unexpected
    keys of the closest transform) when none fits, e.g. for a checkpoint of another architecture.
    """
    target = model.net.state_dict()
    want = set(target)
    best: tuple[int, str, set[str], set[str], list[str]] | None = None
    for name, cand in _candidates(sd):
        have = set(cand)
        missing, unexpected = want - have, have - want
        bad = [k for k in want & have if tuple(cand[k].shape) != tuple(target[k].shape)]
        if not missing and not unexpected and not bad:
            model.net.load_state_dict({k: v.to(target[k].dtype) for k, v in cand.items()}, strict=True)
            return name
        score = len(missing) + len(unexpected) + len(bad)
        if best is None or score < best[0]:
            best = (score, name, missing, unexpected, bad)
    assert best is not None
    _, _, missing, unexpected, bad = best
    detail = []
    if missing:
        detail.append(f"missing {sorted(missing)[:4]}")
    if unexpected:
        detail.append(f"unexpected {sorted(unexpected)[:4]}")
    if bad:
        k = bad[0]
        detail.append(f"shape of {k} differs")
    raise CheckpointError(
        f"{path} does not fit architecture {model.spec.arch!r} ({'; '.join(detail)}); "
        "is it a checkpoint of another architecture? pass the right --arch (and --model-arg options)"
    )


# ---------------------------------------------------------------------------------------------
# Architecture inference.


def _block_counts(sd: Mapping[str, torch.Tensor], stages: int) -> list[int]:
    counts = []
    for s in range(1, stages + 1):
        idx = {int(m.group(1)) for k in sd if (m := re.match(rf"^layer{s}\.(\d+)\.", k))}
        counts.append(len(idx))
    return counts


def infer_arch(sd: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]] | None:
    """Recognise common ResNets from their weight names: (arch, kwargs) or None.

    CIFAR ResNet-18 (3x3 stem; MadryLab / robrep) -> ``resnet18`` with its ``width``;
    ImageNet ResNets (7x7 stem, torchvision names) -> ``tv:resnetNN``;
    Cohen's CIFAR ResNet (16-wide 3x3 stem, 3 stages) -> ``cohen-cifar-resnet`` with ``depth``.
    """
    for _, c in _candidates(sd):
        w = c.get("conv1.weight")
        if w is None or w.ndim != 4 or "fc.weight" not in c:
            continue
        bottleneck = any(k.endswith(".conv3.weight") for k in c if k.startswith("layer"))
        if "layer4.0.conv1.weight" in c:
            counts = tuple(_block_counts(c, 4))
            if w.shape[-1] == 3 and counts == (2, 2, 2, 2) and not bottleneck:
                return "resnet18", {"width": int(w.shape[0])}
            if w.shape[-1] == 7 and int(w.shape[0]) == 64:
                table = {(False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34, (True, (3, 4, 6, 3)): 50,
                         (True, (3, 4, 23, 3)): 101, (True, (3, 8, 36, 3)): 152}
                depth = table.get((bottleneck, counts))
                if depth is not None:
                    return f"tv:resnet{depth}", {}
        elif "layer3.0.conv1.weight" in c and w.shape[-1] == 3 and int(w.shape[0]) == 16 and not bottleneck:
            counts = _block_counts(c, 3)
            if len(set(counts)) == 1:
                return "cohen-cifar-resnet", {"depth": 6 * counts[0] + 2}
    return None


def _infer_kwargs(arch: str, sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Size options of robrep's own architectures, read from weight shapes (first fitting transform)."""
    for _, c in _candidates(sd):
        try:
            if arch in ("resnet18", "preact-resnet18") and "conv1.weight" in c and "layer4.0.conv1.weight" in c:
                return {"width": int(c["conv1.weight"].shape[0])}
            if arch == "small-cnn" and "conv1.weight" in c and "fc1.weight" in c:
                return {"width": int(c["conv1.weight"].shape[0]), "feat_dim": int(c["fc1.weight"].shape[0])}
            if arch == "mlp" and "fc1.weight" in c and "fc.weight" in c:
                return {"hidden": int(c["fc1.weight"].shape[0])}
            if arch == "wrn-28-10" and "conv1.weight" in c and "fc.weight" in c and any(k.startswith("blocks.") for k in c):
                nblocks = len({k.split(".")[1] for k in c if k.startswith("blocks.")})
                if nblocks % 3 == 0 and int(c["conv1.weight"].shape[0]) == 16:
                    return {"depth": 6 * (nblocks // 3) + 4, "widen": int(c["fc.weight"].shape[1]) // 64}
            if arch == "cohen-cifar-resnet" and "layer1.0.conv1.weight" in c:
                return {"depth": 6 * _block_counts(c, 1)[0] + 2}
        except (KeyError, IndexError, ValueError):
            continue
    return {}


def _probe_sizes(arch: str, kwargs: dict[str, Any], sd: Mapping[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """(input channels, classes) read from the weights of the first conv / final linear layer of ``arch``.

    A probe instance of the architecture names those layers; falls back to storage order.
    """
    from .base import final_linear_name

    d = _default_shape(arch)
    try:
        probe = model_from_spec(ModelSpec(arch, 2, d, (0.0,) * d[0], (1.0,) * d[0], dict(kwargs))).net
    except Exception:
        return _first_conv_channels(sd), _last_linear_outputs(sd)
    conv = next((n for n, m in probe.named_modules() if isinstance(m, nn.Conv2d)), None)
    try:
        fc: str | None = final_linear_name(probe)
    except InputError:
        fc = None
    chans = classes = None
    for _, cand in _candidates(sd):
        if conv is not None and chans is None and cand.get(conv + ".weight") is not None and cand[conv + ".weight"].ndim == 4:
            chans = int(cand[conv + ".weight"].shape[1])
        if fc is not None and classes is None and cand.get(fc + ".weight") is not None and cand[fc + ".weight"].ndim == 2:
            classes = int(cand[fc + ".weight"].shape[0])
    return chans or _first_conv_channels(sd), classes or _last_linear_outputs(sd)


def _first_conv_channels(sd: Mapping[str, torch.Tensor]) -> int | None:
    for v in sd.values():
        if v.ndim == 4:
            return int(v.shape[1])
    return None


def _last_linear_outputs(sd: Mapping[str, torch.Tensor]) -> int | None:
    last = None
    for k, v in sd.items():
        if v.ndim == 2 and k.endswith("weight"):
            last = int(v.shape[0])
    return last


def _default_shape(arch: str) -> tuple[int, int, int]:
    try:
        factory = MODELS.get(arch)
    except Exception:
        return (3, 224, 224)
    try:
        d = inspect.signature(factory).parameters["input_shape"].default
        return tuple(int(v) for v in d)  # type: ignore[return-value]
    except (KeyError, TypeError, ValueError):
        return (3, 224, 224)


def _build(
    path: Path,
    sd: Mapping[str, torch.Tensor],
    *,
    arch: str | None,
    fmt: str,
    implicit_norm: tuple[tuple[float, ...], tuple[float, ...], str] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    options: dict[str, Any],
) -> tuple[RobrepModel, dict[str, Any]]:
    """Common tail of the foreign loaders: normalization, architecture, shape, fit."""
    mean, std, weights = split_normalization(sd)
    norm_src = "file"
    if mean is None:
        if options.get("mean") is not None and options.get("std") is not None:
            mean, std, norm_src = tuple(options["mean"]), tuple(options["std"]), "given"
        elif implicit_norm is not None:
            mean, std, norm_src = implicit_norm
        elif options.get("dataset"):
            from ..data import dataset_info

            info = dataset_info(str(options["dataset"]))
            mean, std, norm_src = info.mean, info.std, f"dataset {info.name}"
    kwargs = dict(arch_kwargs or {})
    if arch is None:
        guess = infer_arch(weights)
        if guess is None:
            raise CheckpointError(
                f"{path} is a {fmt} checkpoint whose architecture robrep cannot tell; pass --arch "
                "(e.g. --arch tv:resnet50, --arch resnet18, --arch wrn-28-10 with --model-arg depth=..)"
            )
        arch, guessed = guess
        kwargs = {**guessed, **kwargs}
    kwargs = {**_infer_kwargs(arch, weights), **kwargs, **(options.get("model_kwargs") or {})}
    try:
        MODELS.get(arch)
    except Exception as e:
        raise CheckpointError(f"{path}: {e}") from e
    c, inferred_classes = _probe_sizes(arch, kwargs, weights)
    shape = tuple(options["input_shape"]) if options.get("input_shape") else None
    if shape is None and options.get("dataset"):
        from ..data import dataset_info

        shape = tuple(dataset_info(str(options["dataset"])).input_shape)
    if shape is None:
        d = _default_shape(arch)
        shape = (c or d[0], d[1], d[2])
    num_classes = int(options.get("num_classes") or inferred_classes or 10)
    if mean is None or std is None:
        if (arch.startswith("tv:") or arch.startswith("timm:")) and shape[0] == 3:
            mean, std, norm_src = IMAGENET_MEAN, IMAGENET_STD, "default imagenet (not stored in the file)"
        else:
            mean, std, norm_src = (0.0,) * shape[0], (1.0,) * shape[0], "none (not stored in the file; inputs used as [0,1])"
    if len(mean) != shape[0]:
        raise CheckpointError(f"{path}: normalization has {len(mean)} channels but the weights take {shape[0]}")
    spec = ModelSpec(arch, num_classes, shape, tuple(float(v) for v in mean), tuple(float(v) for v in std), kwargs)  # type: ignore[arg-type]
    try:
        model = model_from_spec(spec)
    except InputError as e:
        raise CheckpointError(f"{path}: cannot build {arch!r}: {e}") from e
    transform = fit_state_dict(model, weights, path)
    _cache.clear()  # the weights now live in the model; do not keep a second copy
    meta = {"format": fmt, "arch": arch, "normalization": {"mean": list(spec.mean), "std": list(spec.std), "source": norm_src},
            "key_transform": transform}
    if options.get("dataset"):
        meta["dataset"] = str(options["dataset"])
    return model, meta


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
