"""The model-source dispatch: scheme registry, ``split_source``, ``load_source``, input policy.

The loaders of each scheme live in :mod:`robrep.models.sources` and register themselves in
:data:`SOURCES` when it is imported (``robrep.models`` imports it); this module depends on
nothing else in ``models`` but :mod:`~robrep.models.base`, so the checkpoint loaders can
dispatch to it without an import cycle.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._registry import Registry
from ..errors import InputError, UnknownNameError
from .base import RobrepModel, flush_denormals_

__all__ = ["SOURCES", "load_source", "set_input_policy", "source_schemes", "split_source"]

SourceLoader = Callable[..., "tuple[RobrepModel, dict[str, Any]]"]
SOURCES: Registry[SourceLoader] = Registry("model source")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]+):(.*)$", re.S)
_SCHEME_ALIASES = {"torchvision": "tv", "huggingface": "hf", "transformers": "hf", "hf-hub": "hf", "openclip": "open_clip",
                   "open-clip": "open_clip"}


def source_schemes() -> list[str]:
    """The registered schemes (``tv``, ``timm``, ``hf``, ``open_clip``)."""
    return SOURCES.names()


def split_source(source: str | os.PathLike[str]) -> tuple[str | None, str]:
    """``"timm:resnet50@f.pt"`` -> ``("timm", "resnet50@f.pt")``; an existing path or a text
    without a scheme (one letter before ``:`` is a Windows drive) -> ``(None, text)``."""
    text = str(source)
    if Path(text).exists():
        return None, text
    m = _SCHEME.match(text)
    if m is None:
        return None, text
    return m.group(1), m.group(2)


def load_source(
    source: str | os.PathLike[str],
    *,
    download: bool = False,
    adapt_channels: bool = False,
    resize: bool = True,
    device: str | torch.device = "cpu",
    **options: Any,
) -> tuple[RobrepModel, dict[str, Any]]:
    """Load a model from a source string (module docstring); return (model in eval mode, meta).

    Args:
        source: a checkpoint path or ``tv:``/``timm:``/``hf:``/``open_clip:`` source.
        download: allow downloading weights that are not in the local cache.
        adapt_channels: repeat the channel of 1-channel images for a 3-channel model.
        resize: resize inputs of another size inside the model (False: refuse them).
        device: where to put the model.
        options: passed to the checkpoint loaders (``arch``, ``trust``, ``dataset``, ...).

    ``meta`` holds ``source``, ``scheme``, ``arch``, ``pretrained``, ``weights`` (enum, tag
    or file), ``normalization`` and ``preprocess`` (size, mean, std, interpolation and where
    they came from), so a run record says exactly which model and preprocessing it measured.
    """
    scheme, rest = split_source(source)
    if scheme is None:  # checkpoint files are read by robrep.models.load_with_meta, which calls this for sources
        raise InputError(f"{str(source)!r} names no source scheme; load checkpoint files with robrep.load / load_with_meta")
    if scheme not in SOURCES:
        close = [_SCHEME_ALIASES[scheme.lower()]] if scheme.lower() in _SCHEME_ALIASES else difflib.get_close_matches(
            scheme, SOURCES.names(), n=1)
        hint = f" (did you mean {close[0]}:?)" if close else ""
        raise UnknownNameError(
            f"unknown model source scheme {scheme!r} in {str(source)!r}{hint}; use a checkpoint path or one of "
            + ", ".join(s + ":" for s in SOURCES.names())
            + " (e.g. timm:resnet50@weights.safetensors, hf:facebook/dinov2-small); if it is a file, check the path"
        )
    if not rest:
        raise InputError(f"model source {str(source)!r} names no model; write {scheme}:<name> (see docs/guides/load-models.md)")
    options = {k: v for k, v in options.items() if k not in ("arch", "trust")}
    model, meta = SOURCES.get(scheme)(rest, download=download, **options)
    model = set_input_policy(model, adapt_channels=adapt_channels, resize=resize)
    meta = {"format": "source", "source": str(source), "scheme": scheme, **meta}
    meta["preprocess"] = {**dict(meta.get("preprocess") or {}), **model.spec.preprocess}
    flush_denormals_(model)
    return model.to(device).eval(), meta


def set_input_policy(model: RobrepModel, *, adapt_channels: bool = False, resize: bool | None = None) -> RobrepModel:
    """Set how ``model`` treats 1-channel and other-size inputs (in ``model.spec.preprocess``).

    ``adapt_channels=True`` repeats the channel of 1-channel images for a 3-channel model.
    ``resize`` applies to models whose source states an input size (``spec.preprocess`` has
    ``resize``): True resizes inside the model, False refuses other sizes. Returns ``model``.
    """
    pre = dict(model.spec.preprocess)
    if adapt_channels:
        if model.input_shape[0] != 3:
            raise InputError(f"adapt_channels repeats 1 channel to 3, but model {model.spec.arch!r} takes {model.input_shape[0]}")
        pre["adapt_channels"] = True
    if resize is not None and "resize" in pre:
        pre["resize"] = "resize" if resize else "error"
    if pre != model.spec.preprocess:
        model.spec = dataclasses.replace(model.spec, preprocess=pre)
    return model
