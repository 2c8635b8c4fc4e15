"""The ``hf:`` model source: Hugging Face ``transformers`` vision models (ViT, DeiT, DINOv2,
CLIP/SigLIP vision towers, ConvNeXt, Swin) from a local folder or the hub cache, wrapped as a
:class:`~robrep.models.RobrepModel` with the processor's preprocessing (see
:mod:`robrep.models.sources`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .base import RobrepModel, Tap
from .source_common import _FILE_SUFFIXES, _cache_missing, _norm_meta, _spec
from .source_registry import SOURCES
from .zoo import IMAGENET_MEAN, IMAGENET_STD, MODELS

__all__ = ["HFVisionModel", "load_hf"]


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


MODELS.register_prefix("hf", _hf_factory, help="a Hugging Face vision model: load it with robrep.load('hf:<dir or hub id>')")
