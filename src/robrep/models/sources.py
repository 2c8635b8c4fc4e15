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
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, InputError, UnknownNameError
from .base import ModelSpec, RobrepModel, Tap
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

_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar", ".npz")


# ---------------------------------------------------------------------------------------------
# Shared helpers.


def _looks_like_file(text: str) -> bool:
    return Path(text).exists() or text.lower().endswith(_FILE_SUFFIXES) or "/" in text or os.sep in text


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or torch file, read without unpickling code."""
    from .formats import _is_tensor_map, read_torch_file

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
    from .formats import _cache, fit_state_dict

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


# ---------------------------------------------------------------------------------------------
# timm.


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:
        raise InputError("timm is not installed: pip install 'robrep[timm]'") from e
    return timm


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
# Hugging Face transformers.

# Model types whose token 0 is a class token.
_CLS_TYPES = {"vit", "deit", "dinov2", "dinov2_with_registers", "clip_vision_model", "beit", "data2vec-vision", "vit_msn",
              "vit_mae", "dinov3_vit", "clip", "vit_hybrid"}
# Full multimodal models whose vision tower robrep loads.
_TOWERS = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel", "siglip2": "Siglip2VisionModel",
           "clip_vision_model": "CLIPVisionModel", "siglip_vision_model": "SiglipVisionModel",
           "siglip2_vision_model": "Siglip2VisionModel"}
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise InputError("transformers is not installed: pip install 'robrep[hf]'") from e
    if os.environ.get("ROBREP_PROGRESS", "1") == "0":
        transformers.utils.logging.disable_progress_bar()
    return transformers


class HFVisionModel(nn.Module):
    """A Hugging Face vision model as a robrep net (input: normalized pixel values).

    Output: the classifier's logits for ``*ForImageClassification`` models, else the pooled
    representation (``pooler_output``; the class token, or the mean token, where the model has
    no pooler). Representations (:func:`robrep.models.base.layer_taps`): ``penultimate``
    (the classifier's input; = ``pooled`` without a head), ``pooled``, ``features``
    (``last_hidden_state``), ``cls`` (token 0, for models with a class token) and
    ``hidden_states.<i>`` (``i`` = 0: embeddings, ``i`` = k: after block k, as in
    ``output_hidden_states=True``).
    """

    def __init__(self, model: nn.Module, *, task: str, cls_token: bool, num_hidden: int) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.cls_token_at_0 = cls_token
        self.num_hidden = num_hidden

    def _base(self) -> nn.Module:
        if self.task == "classification":
            return self.model.base_model  # type: ignore[return-value]
        return self.model

    def _out(self, x: torch.Tensor, hidden: bool = False) -> Any:
        return self._base()(pixel_values=x, output_hidden_states=hidden, return_dict=True)

    def _pool(self, out: Any) -> torch.Tensor:
        p = getattr(out, "pooler_output", None)
        if p is None:
            t = out.last_hidden_state
            p = t[:, 0] if self.cls_token_at_0 else (t.mean(1) if t.ndim == 3 else t.mean((2, 3)))
        return p.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return self.model(pixel_values=x, return_dict=True).logits
        return self._pool(self._out(x))

    def get_classifier(self) -> nn.Module:
        head = getattr(self.model, "classifier", None) if self.task == "classification" else None
        return head if isinstance(head, nn.Linear) else nn.Identity()

    def representation_taps(self) -> dict[str, Tap]:
        taps: dict[str, Tap] = {}
        if isinstance(self.get_classifier(), nn.Linear):
            taps["penultimate"] = Tap("input of the classifier (model.classifier)", module="model.classifier", at="input")
        taps["pooled"] = Tap("pooler_output of the base model (class token or mean token where it has no pooler)",
                             fn=lambda net, x: net._pool(net._out(x)))
        taps["features"] = Tap("last_hidden_state: the token sequence or feature map", fn=lambda net, x: net._out(x).last_hidden_state)
        if self.cls_token_at_0:
            taps["cls"] = Tap("the class token: last_hidden_state[:, 0]", fn=lambda net, x: net._out(x).last_hidden_state[:, 0])
        for i in range(self.num_hidden):
            taps[f"hidden_states.{i}"] = Tap("embeddings (output_hidden_states[0])" if i == 0 else f"hidden state after block {i}",
                                             fn=_hidden(i))
        return taps


def _hidden(i: int) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    def f(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        hs = net._out(x, hidden=True).hidden_states  # type: ignore[operator]
        return hs[i]

    return f


def _hf_num_hidden(config: Any) -> int:
    n = getattr(config, "num_hidden_layers", None)
    if n is None and getattr(config, "depths", None):
        n = len(config.depths)
    return int(n or 0) + 1


def _hf_build(config: Any, task: str) -> nn.Module:
    tf = _transformers()
    if task == "classification":
        return tf.AutoModelForImageClassification.from_config(config)
    if task.startswith("tower:"):
        cls = getattr(tf, task.split(":", 1)[1])
        return cls(config)
    return tf.AutoModel.from_config(config)


def _hf_task(config: Any) -> str:
    if config.model_type in _TOWERS:
        return "tower:" + _TOWERS[config.model_type]
    if any(str(a).endswith("ForImageClassification") for a in (getattr(config, "architectures", None) or [])):
        return "classification"
    return "vision"


def _hf_factory(rest: str) -> Callable[..., nn.Module]:
    def factory(num_classes: int = 0, input_shape: Sequence[int] = (3, 224, 224), config: dict[str, Any] | None = None,
                task: str = "vision", **_: Any) -> nn.Module:
        if config is None:
            raise InputError(f"hf:{rest} is built from its config; load it with robrep.load('hf:{rest}')")
        tf = _transformers()
        d = dict(config)
        cfg = tf.AutoConfig.for_model(d.pop("model_type"), **d)
        net = _hf_build(cfg, task)
        return _wrap_hf(net, cfg, task)

    return factory


def _wrap_hf(net: nn.Module, config: Any, task: str) -> HFVisionModel:
    mtype = getattr(config, "model_type", "")
    return HFVisionModel(net.float().eval(), task="classification" if task == "classification" else "vision",
                         cls_token=mtype in _CLS_TYPES, num_hidden=_hf_num_hidden(config))


def _hf_size(d: Any, fallback: int) -> tuple[int, int] | None:
    if d is None:
        return None
    if isinstance(d, (int, float)):
        return int(d), int(d)
    if isinstance(d, (list, tuple)):
        return int(d[0]), int(d[-1])
    if isinstance(d, Mapping):
        if "height" in d and "width" in d:
            return int(d["height"]), int(d["width"])
        if "shortest_edge" in d:
            return int(d["shortest_edge"]), int(d["shortest_edge"])
    return (fallback, fallback) if fallback else None


def _hf_processor(cfg_file: str | None, config: Any) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...], dict[str, Any]]:
    """Input size, mean, std and (interpolation, source) from ``preprocessor_config.json``, else
    from the default image processor of the model type (``transformers``' defaults)."""
    vision_cfg = getattr(config, "vision_config", None) or config
    image_size = getattr(vision_cfg, "image_size", None)
    image_size = int(image_size[0] if isinstance(image_size, (list, tuple)) else image_size) if image_size else 224
    d: dict[str, Any]
    if cfg_file is not None:
        d = json.loads(Path(cfg_file).read_text())
        source = "preprocessor_config.json"
    else:
        d, source = {}, "transformers defaults (no preprocessor_config.json)"
        try:
            from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

            names = IMAGE_PROCESSOR_MAPPING_NAMES.get(config.model_type)
            name = (names.get("pil") or names.get("torchvision")) if isinstance(names, Mapping) else (
                names[0] if isinstance(names, (list, tuple)) else names)
            proc = getattr(_transformers(), str(name))()
            d = {k: getattr(proc, k, None) for k in ("image_mean", "image_std", "size", "crop_size", "do_center_crop",
                                                      "do_normalize", "resample", "crop_pct")}
            d = {k: (dict(v) if hasattr(v, "keys") else v) for k, v in d.items() if v is not None}
            source = f"transformers {name} defaults (no preprocessor_config.json)"
        except Exception:  # noqa: BLE001 - keep the ImageNet fallback below
            pass
    crop = _hf_size(d.get("crop_size"), 0) if d.get("do_center_crop", "crop_size" in d) else None
    size = crop or _hf_size(d.get("size"), image_size) or (image_size, image_size)
    if d.get("do_normalize", True):
        mean = tuple(float(v) for v in (d.get("image_mean") or IMAGENET_MEAN))
        std = tuple(float(v) for v in (d.get("image_std") or IMAGENET_STD))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    r = d.get("resample", d.get("interpolation", 2))
    interp = _PIL_RESAMPLE.get(int(r), "bilinear") if isinstance(r, (int, float)) or str(r).isdigit() else str(r).lower()
    pre: dict[str, Any] = {"interpolation": interp, "source": source}
    rf = d.get("rescale_factor")
    if rf is not None and abs(float(rf) - 1 / 255) > 1e-9 and d.get("do_rescale", True):
        pre["note"] = f"the processor rescales by {rf}, not 1/255; robrep feeds [0,1] pixels"
    return size, mean, std, pre


def _hf_is_hub_id(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", text) is not None and not text.endswith(_FILE_SUFFIXES)


@SOURCES.register("hf", help="hf:<local dir or hub id>: a transformers vision model (ViT, DeiT, DINOv2, CLIP/SigLIP tower, ConvNeXt, Swin)")
def load_hf(rest: str, *, download: bool = False, **_: Any) -> tuple[RobrepModel, dict[str, Any]]:
    """Hugging Face vision models from a ``save_pretrained`` folder or a hub id (from the
    ``$HF_HOME`` cache; downloaded only with ``download=True``).

    ``*ForImageClassification`` checkpoints keep their head (output: logits); others are
    encoders without a head (output: pooled representation). For CLIP and SigLIP checkpoints the
    vision tower is loaded. Preprocessing: the folder's ``preprocessor_config.json``
    (``crop_size`` or ``size``, ``image_mean``/``image_std``, ``resample``).
    """
    tf = _transformers()
    local = Path(rest).expanduser()
    is_dir = local.is_dir()
    if not is_dir:
        if local.exists() or not _hf_is_hub_id(rest):
            raise InputError(f"hf:{rest}: folder {local} does not exist; give a folder written by save_pretrained or a hub id (org/name)")
    src = str(local) if is_dir else rest
    try:
        config = tf.AutoConfig.from_pretrained(src, local_files_only=not download)
    except (OSError, ValueError) as e:
        if is_dir:
            raise InputError(f"hf:{rest}: {local / 'config.json'} is missing or unreadable ({str(e).splitlines()[0][:120]}); "
                             "write the folder with model.save_pretrained(folder)") from e
        try:
            from huggingface_hub import constants

            hub = str(constants.HF_HUB_CACHE)
        except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
            hub = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
        raise _cache_missing(f"hf:{rest}", f"config.json of {rest} in the Hugging Face cache ({hub})",
                             "pass --download (download=True), or save the model with save_pretrained and give hf:<folder>") from e
    task = _hf_task(config)
    try:
        if task == "classification":
            net = tf.AutoModelForImageClassification.from_pretrained(src, local_files_only=not download, dtype=torch.float32)
        elif task.startswith("tower:"):
            net = getattr(tf, task.split(":", 1)[1]).from_pretrained(src, local_files_only=not download, dtype=torch.float32)
        else:
            net = tf.AutoModel.from_pretrained(src, local_files_only=not download, dtype=torch.float32)
    except OSError as e:
        raise _cache_missing(f"hf:{rest} weights", f"the weights file of {src}",
                             "pass --download (download=True), or copy model.safetensors into the folder") from e
    except ValueError as e:
        raise InputError(f"hf:{rest} is a {config.model_type!r} model that robrep cannot load as a vision model ({str(e)[:160]})") from e
    mconfig = net.config
    wrapped = _wrap_hf(net, mconfig, task)
    cfg_file: str | None = None
    if is_dir:
        cand = local / "preprocessor_config.json"
        cfg_file = str(cand) if cand.is_file() else None
    else:
        try:
            from transformers.utils import cached_file

            cfg_file = cached_file(rest, "preprocessor_config.json", local_files_only=not download,
                                   _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
        except Exception:  # noqa: BLE001 - a model without a processor config uses the defaults
            cfg_file = None
    size, mean, std, pre = _hf_processor(cfg_file, mconfig)
    if task == "classification":
        num_classes = int(mconfig.num_labels)
    else:
        with torch.no_grad():
            num_classes = int(wrapped(torch.zeros(1, 3, *size)).shape[1])
    arch = f"hf:{rest}"
    config_d = json.loads(mconfig.to_json_string(use_diff=True))  # JSON-normal, only what differs from the defaults
    config_d["model_type"] = mconfig.model_type
    kwargs = {"config": config_d, "task": task}
    spec = _spec(arch, num_classes, size, mean, std, kwargs, pre)
    model = RobrepModel(wrapped, spec)
    meta = {"arch": arch, "pretrained": True, "weights": src, "model_type": mconfig.model_type, "task": task,
            "normalization": _norm_meta(spec, pre["source"]), "preprocess": dict(spec.preprocess)}
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


MODELS.register_prefix("hf", _hf_factory, help="a Hugging Face vision model: load it with robrep.load('hf:<dir or hub id>')")
MODELS.register_prefix("open_clip", _open_clip_factory, help="an open_clip image tower: robrep.load('open_clip:<arch>@<file>')")
