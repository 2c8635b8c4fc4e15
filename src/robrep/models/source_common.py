"""What every model source shares: reading a weights file safely, fitting it onto the model,
building the :class:`~robrep.models.ModelSpec` with the source's preprocessing, and the
Hugging Face hub cache (offline first)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, InputError
from .base import ModelSpec, RobrepModel

_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar", ".npz")


# ---------------------------------------------------------------------------------------------
# Files, specs and messages.


def _looks_like_file(text: str) -> bool:
    return Path(text).exists() or text.lower().endswith(_FILE_SUFFIXES) or "/" in text or os.sep in text


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or torch file, read without unpickling code."""
    from .state_dicts import _is_tensor_map, read_torch_file

    if not path.is_file():
        raise InputError(f"weights file {path} does not exist; check the path")
    try:
        obj = read_torch_file(path, trust=False)
    except CheckpointError as e:
        raise InputError(str(e)) from e
    if _is_tensor_map(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "net", "module"):
            if _is_tensor_map(obj.get(key)):
                return dict(obj[key])
    raise InputError(f"{path} holds no state dict (a mapping of parameter names to tensors); save model.state_dict()")


def _fit(model: RobrepModel, sd: Mapping[str, torch.Tensor], path: Path, syntax: str) -> str:
    from .state_dicts import _cache, fit_state_dict

    try:
        how = fit_state_dict(model, sd, path)
    except CheckpointError as e:
        raise InputError(f"{e} (loading {syntax})") from e
    finally:
        _cache.clear()
    return how


def _cache_missing(what: str, where: str, how: str) -> InputError:
    return InputError(f"{what} is not available offline: {where} is missing; {how}")


def _spec(arch: str, num_classes: int, size: Sequence[int], mean: Sequence[float], std: Sequence[float],
          kwargs: dict[str, Any], preprocess: dict[str, Any]) -> ModelSpec:
    h, w = (int(size[0]), int(size[-1]))
    pre = {"resize": "resize", **preprocess, "size": [h, w]}
    return ModelSpec(arch, int(num_classes), (len(mean), h, w), tuple(float(v) for v in mean), tuple(float(v) for v in std),
                     kwargs, pre)


def _norm_meta(spec: ModelSpec, src: str) -> dict[str, Any]:
    return {"mean": list(spec.mean), "std": list(spec.std), "source": src}


def _classes_from(sd: Mapping[str, torch.Tensor], keys: Sequence[str], default: int) -> int:
    for k in keys:
        for cand in (k, "module." + k, "model." + k):
            v = sd.get(cand)
            if v is not None and v.ndim == 2:
                return int(v.shape[0])
    last = None
    for k, v in sd.items():
        if v.ndim == 2 and k.endswith("weight"):
            last = int(v.shape[0])
    return last or default


def _hub_cached(repo_id: str, filenames: Sequence[str]) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for f in filenames:
        got = try_to_load_from_cache(repo_id, f)
        if isinstance(got, str) and Path(got).is_file():
            return got
    return None


def _hub_download(repo_id: str, filenames: Sequence[str]) -> str:
    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    for f in filenames:
        try:
            return str(hf_hub_download(repo_id, f))
        except Exception as e:  # noqa: BLE001 - try the next file name
            last = e
    raise InputError(f"could not download {' or '.join(filenames)} from {repo_id} ({str(last)[:160]}); check the name and the network")
