"""Other tools' state dicts: read a file safely, find the normalization stored in it, map its
weight names onto a robrep architecture, and infer the architecture when none is given.

The format loaders of :mod:`robrep.models.formats` are built on these pieces (the transforms
and the normalization order are described there).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from .base import ModelSpec, RobrepModel
from .checkpoint import safe_torch_load
from .zoo import IMAGENET_MEAN, IMAGENET_STD, MODELS, model_from_spec

__all__ = ["fit_state_dict", "infer_arch", "read_torch_file", "split_normalization"]

_ZIP_MAGIC = b"PK\x03\x04"


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
    from .taps import final_linear_name

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
