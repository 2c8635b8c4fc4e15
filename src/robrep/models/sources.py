"""Model sources: one syntax for every model robrep loads.

``robrep.load(SOURCE)`` and every command's ``--checkpoint SOURCE`` accept

============================================  ===============================================
``path/to/file``                              a robrep ``.safetensors`` file or another tool's
                                              checkpoint (:data:`~robrep.models.LOADERS`)
``tv:<name>[@<weights enum or file>]``        a torchvision classifier; ``@IMAGENET1K_V1`` /
                                              ``@DEFAULT`` (cache ``$TORCH_HOME``) or a file
``timm:<name>[@<file or tag>]``               a timm model; ``@file`` or a pretrained tag
                                              (cache ``$HF_HOME`` / ``$TORCH_HOME``)
``hf:<local dir or hub id>``                  a Hugging Face ``transformers`` vision model:
                                              ViT, DeiT, DINOv2, CLIP/SigLIP vision tower,
                                              ConvNeXt, Swin (``pip install 'robrep[hf]'``)
``open_clip:<arch>@<file or tag>``            an open_clip image tower
                                              (``pip install 'robrep[open_clip]'``)
============================================  ===============================================

Without ``@`` the ``tv:``/``timm:`` models are randomly initialized (``meta["pretrained"]`` is
False). Loading is offline first: local files and the standard caches; a download happens only
with ``download=True`` (CLI ``--download``), and a file that is neither there nor allowed to be
downloaded is an :class:`~robrep.errors.InputError` naming the file and how to get it.

The source's own preprocessing (input size, mean/std, resize interpolation, from timm's
``pretrained_cfg``, the Hugging Face ``preprocessor_config.json`` or the torchvision weights'
``transforms()``) goes into the model's :class:`~robrep.models.ModelSpec` (``mean``, ``std``,
``input_shape``, ``preprocess``): inputs stay in [0,1] and are normalized inside the model;
inputs of another size are resized inside the model with that interpolation (logged once), or
refused with ``resize=False``; 1-channel images are repeated to 3 channels only with
``adapt_channels=True`` (CLI ``--gray-to-rgb``). Files are read without unpickling code
(``safetensors`` or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, UnknownNameError
from .base import RobrepModel, Tap
from .source_common import (
    _cache_missing,
    _classes_from,
    _fit,
    _hub_cached,
    _hub_download,
    _looks_like_file,
    _norm_meta,
    _read_weights,
    _spec,
)
from .source_hf import HFVisionModel  # importing it registers hf:
from .source_registry import SOURCES, load_source, set_input_policy, source_schemes, split_source
from .zoo import IMAGENET_MEAN, IMAGENET_STD, MODELS

__all__ = [
    "SOURCES",
    "HFVisionModel",
    "OpenCLIPVisual",
    "load_source",
    "set_input_policy",
    "split_source",
    "source_schemes",
]


# ---------------------------------------------------------------------------------------------
# torchvision.


def _tv_weights_enum(name: str) -> Any:
    from torchvision import models as tvm

    try:
        return tvm.get_model_weights(name)
    except (ValueError, KeyError):
        return None


def _tv_weight(name: str, text: str) -> Any:
    enum = _tv_weights_enum(name)
    if enum is None:
        raise InputError(f"torchvision publishes no weights for {name!r}; pass a weights file: tv:{name}@path/to/file.pth")
    key = text.split(".")[-1]
    try:
        return enum[key]
    except KeyError:
        names = [w.name for w in enum] + ["DEFAULT"]
        raise UnknownNameError(f"torchvision has no weights {text!r} for {name!r}; choose one of {', '.join(names)}") from None


def _tv_preprocess(weight: Any) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...], dict[str, Any]]:
    t = weight.transforms()
    crop = list(getattr(t, "crop_size", [224]))
    resize = list(getattr(t, "resize_size", crop) or crop)
    size = (int(crop[0]), int(crop[-1]))
    interp = getattr(getattr(t, "interpolation", None), "value", "bilinear")
    pre = {"interpolation": str(interp), "crop_pct": round(float(crop[0]) / float(resize[0]), 4),
           "source": f"torchvision {weight} transforms()"}
    return size, tuple(t.mean), tuple(t.std), pre


@SOURCES.register("tv", help="tv:<name>[@<weights enum or file>]: a torchvision classifier (cache: $TORCH_HOME)")
def load_torchvision(rest: str, *, download: bool = False, **_: Any) -> tuple[RobrepModel, dict[str, Any]]:
    """torchvision classifiers: ``tv:resnet50`` (random init), ``tv:resnet50@IMAGENET1K_V2`` (the
    weights enum, from ``$TORCH_HOME/hub/checkpoints``), ``tv:resnet50@file.pth`` (a state dict).

    Preprocessing: the weights' ``transforms()`` (crop size, mean/std, interpolation); for a file
    or random init, those of the architecture's ``DEFAULT`` weights when torchvision has any.
    """
    from torchvision import models as tvm

    name, _, w = rest.partition("@")
    known = tvm.list_models(module=tvm)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        raise UnknownNameError(f"torchvision has no classifier {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                               + " (torchvision.models.list_models())")
    weight = None
    file: Path | None = None
    if w and _looks_like_file(w):
        file = Path(w).expanduser()
    elif w:
        weight = _tv_weight(name, w)
    ref = weight
    if ref is None:
        enum = _tv_weights_enum(name)
        ref = getattr(enum, "DEFAULT", None) if enum is not None else None
    if ref is not None:
        size, mean, std, pre = _tv_preprocess(ref)
        if weight is None:
            pre["source"] = f"torchvision {ref} transforms() (the architecture's default weights)"
    else:
        size, mean, std, pre = (224, 224), IMAGENET_MEAN, IMAGENET_STD, {"interpolation": "bilinear", "source": "ImageNet defaults"}

    sd: dict[str, torch.Tensor] | None = None
    weights_meta: str | None = None
    if weight is not None:
        from torch.hub import download_url_to_file, get_dir

        cached = Path(get_dir()) / "checkpoints" / os.path.basename(weight.url)
        if not cached.is_file():
            if not download:
                raise _cache_missing(f"torchvision weights {weight}", str(cached),
                                     f"pass --download (download=True) to fetch {weight.url}, or copy that file there")
            cached.parent.mkdir(parents=True, exist_ok=True)
            download_url_to_file(weight.url, str(cached), hash_prefix=None, progress=True)
        sd, weights_meta, file = _read_weights(cached), str(weight), cached
        num_classes = len(weight.meta.get("categories") or []) or 1000
    elif file is not None:
        sd, weights_meta = _read_weights(file), str(file)
        num_classes = _classes_from(sd, ("fc.weight", "classifier.weight", "head.weight", "heads.head.weight"), default=1000)
    else:
        num_classes = 1000
    arch = f"tv:{name}"
    spec = _spec(arch, num_classes, size, mean, std, {}, pre)
    from .zoo import model_from_spec

    model = model_from_spec(spec)
    if sd is not None:
        assert file is not None
        _fit(model, sd, file, f"tv:{rest}")
    meta = {"arch": arch, "pretrained": sd is not None, "weights": weights_meta,
            "normalization": _norm_meta(spec, pre["source"]), "preprocess": dict(spec.preprocess)}
    return model, meta


# ---------------------------------------------------------------------------------------------
# timm.


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:
        raise InputError("timm is not installed: pip install 'robrep[timm]'") from e
    return timm


_TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


@SOURCES.register("timm", help="timm:<name>[@<file or pretrained tag>]: a timm model (cache: $HF_HOME, $TORCH_HOME)")
def load_timm(rest: str, *, download: bool = False, **_: Any) -> tuple[RobrepModel, dict[str, Any]]:
    """timm models: ``timm:vit_small_patch16_224`` (random init), ``timm:resnet50@file`` (a state
    dict saved from ``timm.create_model``), ``timm:vit_small_patch16_224@augreg_in21k_ft_in1k``
    (a pretrained tag: its file from the Hugging Face or torch hub cache).

    Preprocessing: ``timm.data.resolve_data_config(model=...)`` of the model's ``pretrained_cfg``
    (input size, mean/std, interpolation, crop_pct).
    """
    timm = _timm()
    from timm.data import resolve_data_config

    name, _, w = rest.partition("@")
    if "." in name and not w:
        name, w = name.split(".", 1)  # timm's own name.tag form
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise UnknownNameError(f"timm has no model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                               + " (timm.list_models())")
    sd: dict[str, torch.Tensor] | None = None
    file: Path | None = None
    full = name
    if w and _looks_like_file(w):
        file = Path(w).expanduser()
        sd = _read_weights(file)
    elif w:
        full = f"{name}.{w}"
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(full, allow_unregistered=False)
        if cfg is None:
            tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")]
            raise UnknownNameError(f"timm has no pretrained tag {w!r} for {name!r}; choose a file or one of {', '.join(tags) or '(none)'}")
        found = None
        if cfg.file and Path(cfg.file).is_file():
            found = cfg.file
        if found is None and cfg.hf_hub_id:
            found = _hub_cached(cfg.hf_hub_id, _TIMM_FILES)
        if found is None and cfg.url:
            from torch.hub import get_dir

            cand = Path(get_dir()) / "checkpoints" / os.path.basename(cfg.url)
            found = str(cand) if cand.is_file() else None
        if found is None:
            where = (f"the Hugging Face cache ($HF_HOME) copy of {cfg.hf_hub_id}" if cfg.hf_hub_id
                     else f"{Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(cfg.url or '?')}")
            if not download:
                raise _cache_missing(f"timm weights {full}", where,
                                     f"pass --download (download=True), or give a file: timm:{name}@path/to/weights.safetensors")
            if cfg.hf_hub_id:
                found = _hub_download(cfg.hf_hub_id, _TIMM_FILES)
            else:
                from torch.hub import download_url_to_file, get_dir

                cand = Path(get_dir()) / "checkpoints" / os.path.basename(str(cfg.url))
                cand.parent.mkdir(parents=True, exist_ok=True)
                download_url_to_file(str(cfg.url), str(cand), progress=True)
                found = str(cand)
        file = Path(found)
        sd = _read_weights(file)
    probe = timm.create_model(full, pretrained=False)
    if sd is not None:
        clf = str(probe.pretrained_cfg.get("classifier") or "fc")
        keys = (clf + ".weight", clf + ".fc.weight")
        num_classes = _classes_from(sd, keys, default=0) if any(k in sd or "module." + k in sd for k in keys) else 0
    else:
        num_classes = int(getattr(probe, "num_classes", 1000))
    dc = resolve_data_config({}, model=probe)
    pre = {"interpolation": str(dc.get("interpolation") or "bicubic"), "crop_pct": dc.get("crop_pct"),
           "source": f"timm pretrained_cfg of {full}" + (" (random-init weights)" if sd is None else "")}
    _, h, w_ = dc["input_size"]
    arch = f"timm:{full}"
    kwargs: dict[str, Any] = {}
    if num_classes == 0:  # a file without a classifier: an encoder whose output is the pooled representation
        kwargs["headless"] = True
        num_classes = int(getattr(probe, "head_hidden_size", None) or getattr(probe, "num_features", 0))
    del probe
    spec = _spec(arch, num_classes, (h, w_), dc["mean"], dc["std"], kwargs, pre)
    from .zoo import model_from_spec

    model = model_from_spec(spec)
    if sd is not None:
        assert file is not None
        _fit(model, sd, file, f"timm:{rest}")
    meta = {"arch": arch, "pretrained": sd is not None, "weights": str(file) if file else None,
            "normalization": _norm_meta(spec, pre["source"]), "preprocess": dict(spec.preprocess)}
    if w and file is not None and not _looks_like_file(w):
        meta["weights_tag"] = w
    return model, meta


# ---------------------------------------------------------------------------------------------
# open_clip.


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as e:
        raise InputError("open_clip is not installed: pip install 'robrep[open_clip]'") from e
    return open_clip


class OpenCLIPVisual(nn.Module):
    """An open_clip image tower as a robrep encoder without a head.

    Output: the image embedding ``visual(x)`` (before CLIP's L2 normalization). Representations:
    ``penultimate`` = ``pooled`` = that embedding, ``features`` = the output of the vision
    transformer's blocks (ViT towers).
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    def representation_taps(self) -> dict[str, Tap]:
        taps = {"pooled": Tap("the image embedding visual(x) (before L2 normalization)", fn=lambda net, x: net(x))}
        if isinstance(getattr(self.visual, "transformer", None), nn.Module):
            taps["features"] = Tap("output of the vision transformer's blocks (tokens)", module="visual.transformer")
        elif isinstance(getattr(self.visual, "trunk", None), nn.Module):
            taps["features"] = Tap("output of the timm trunk", module="visual.trunk")
        return taps


def _open_clip_factory(rest: str) -> Callable[..., nn.Module]:
    def factory(num_classes: int = 0, input_shape: Sequence[int] = (3, 224, 224), model_cfg: dict[str, Any] | None = None,
                **_: Any) -> nn.Module:
        oc = _open_clip()
        cfg = model_cfg or oc.get_model_config(rest.split("@")[0])
        if cfg is None:
            raise UnknownNameError(f"open_clip has no model {rest!r}; see open_clip.list_models()")
        from open_clip.model import _build_vision_tower

        visual = _build_vision_tower(int(cfg["embed_dim"]), cfg["vision_cfg"], quick_gelu=bool(cfg.get("quick_gelu", False)),
                                     cast_dtype=None)
        return OpenCLIPVisual(visual)

    return factory


_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@SOURCES.register("open_clip", help="open_clip:<arch>@<file or pretrained tag>: an open_clip image tower")
def load_open_clip(rest: str, *, download: bool = False, **_: Any) -> tuple[RobrepModel, dict[str, Any]]:
    """open_clip image towers: ``open_clip:ViT-B-32@file`` (a CLIP or image-tower state dict) or
    ``open_clip:ViT-B-32@laion2b_s34b_b79k`` (a pretrained tag, from the Hugging Face cache).

    Preprocessing: the architecture's image size and the tag's (else open_clip's default)
    mean/std and interpolation.
    """
    oc = _open_clip()
    arch_name, _, w = rest.partition("@")
    cfg = oc.get_model_config(arch_name)
    if cfg is None:
        close = difflib.get_close_matches(arch_name, oc.list_models(), n=3)
        raise UnknownNameError(f"open_clip has no model {arch_name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                               + " (open_clip.list_models())")
    if not w:
        raise InputError(f"open_clip:{arch_name} needs weights: open_clip:{arch_name}@<file or pretrained tag> "
                         f"(tags: {', '.join(oc.list_pretrained_tags_by_model(arch_name)) or 'none'})")
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    pre_cfg: dict[str, Any] = {"mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD, "interpolation": "bicubic"}
    pre_cfg.update({k: v for k, v in (cfg.get("preprocess_cfg") or {}).items() if k in ("mean", "std", "interpolation")})
    source = "open_clip model config (defaults: OpenAI mean/std, bicubic)"
    if _looks_like_file(w):
        file = Path(w).expanduser()
    else:
        pcfg = oc.get_pretrained_cfg(arch_name, w)
        if not pcfg:
            raise UnknownNameError(f"open_clip has no pretrained tag {w!r} for {arch_name!r}; choose a file or one of "
                                   f"{', '.join(oc.list_pretrained_tags_by_model(arch_name)) or '(none)'}")
        pre_cfg.update({k: v for k, v in pcfg.items() if k in ("mean", "std", "interpolation") and v})
        source = f"open_clip pretrained cfg {arch_name}/{w}"
        found = None
        hub = str(pcfg.get("hf_hub") or "").strip("/")
        if hub:
            found = _hub_cached(hub, _OPEN_CLIP_FILES)
        if found is None and pcfg.get("url"):
            cand = Path("~/.cache/clip").expanduser() / os.path.basename(str(pcfg["url"]))
            found = str(cand) if cand.is_file() else None
        if found is None:
            if not download or not hub:
                raise _cache_missing(f"open_clip weights {arch_name}@{w}",
                                     f"the Hugging Face cache ($HF_HOME) copy of {hub}" if hub else str(pcfg.get("url")),
                                     f"pass --download (download=True), or give a file: open_clip:{arch_name}@path/to/open_clip_model.safetensors")
            found = _hub_download(hub, _OPEN_CLIP_FILES)
        file = Path(found)
    sd = _read_weights(file)
    if any(k.startswith(("visual.", "module.visual.")) for k in sd):
        sd = {k: v for k, v in sd.items() if k.split("module.", 1)[-1].startswith("visual.")}
    else:
        sd = {"visual." + k: v for k, v in sd.items()}
    image_size = cfg["vision_cfg"].get("image_size", 224)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    arch = f"open_clip:{arch_name}"
    pre = {"interpolation": str(pre_cfg["interpolation"]), "source": source}
    spec = _spec(arch, int(cfg["embed_dim"]), size, pre_cfg["mean"], pre_cfg["std"], {"model_cfg": cfg}, pre)
    from .zoo import model_from_spec

    model = model_from_spec(spec)
    _fit(model, sd, file, f"open_clip:{rest}")
    meta = {"arch": arch, "pretrained": True, "weights": str(file), "normalization": _norm_meta(spec, source),
            "preprocess": dict(spec.preprocess)}
    return model, meta


MODELS.register_prefix("open_clip", _open_clip_factory, help="an open_clip image tower: robrep.load('open_clip:<arch>@<file>')")
