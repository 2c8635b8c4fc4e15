"""The model contract: inputs in [0,1], normalization inside, representations by layer name.

A :class:`RobrepModel` wraps any classifier ``net`` (robrep's own, torchvision's, timm's) behind a
:class:`Normalize` layer, so that every attack, noise and threat model works in pixel space and
normalization cannot be applied twice or forgotten. The *representation* of any named layer is
read through forward hooks (:func:`representation`), so user architectures need no special
``forward`` arguments.

Layer names are those of ``net.named_modules()``, plus the *aliases* of the representation
contract (:func:`layer_taps`): ``"penultimate"`` (the default: what the classifier reads, or the
pooled output of an encoder without a head), ``"pooled"``, ``"features"`` (the map before
pooling), ``"cls"`` (the class token of a vision transformer), source-specific names such as
``"hidden_states.3"``, and ``"logits"`` (the model output).

A net states its representations through the contract of :mod:`robrep.models.taps`
(``representation_taps()``, timm's ``forward_features``/``forward_head``, or the input of the final
``nn.Linear``); :class:`Representation` reads one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .taps import Tap, final_linear_name, head_name, layer_taps

_log = logging.getLogger("robrep")

__all__ = [
    "ModelSpec",
    "Normalize",
    "Tap",
    "layer_taps",
    "RobrepModel",
    "Representation",
    "representation",
    "list_layers",
    "final_linear_name",
    "head_name",
    "check_images",
    "channel_message",
    "describe_layers",
    "resize_images",
]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean/std as buffers (saved with the weights)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise InputError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise InputError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model (stored in checkpoints as JSON).

    Attributes:
        arch: registry name (``robrep list models``), e.g. ``"mnist-cnn"`` or ``"tv:resnet18"``.
        num_classes: output size.
        input_shape: (C, H, W) the model expects.
        mean, std: normalization applied inside the model.
        kwargs: extra architecture arguments (JSON-serializable only).
        preprocess: how inputs of another form are adapted before normalization (empty for
            robrep's own models: inputs must have ``input_shape``). Keys: ``resize``
            (``"resize"``: inputs of another height/width are resized to ``input_shape`` inside
            the model, logged once; ``"error"``: refused), ``interpolation`` (``bilinear``,
            ``bicubic``, ``nearest``: the source's resize filter), ``adapt_channels`` (True:
            1-channel images are repeated to 3 channels), ``crop_pct`` and ``source`` (where
            size, mean and std came from, e.g. ``"timm pretrained_cfg"``).
    """

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kwargs: dict[str, object] = field(default_factory=dict)
    preprocess: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ModelSpec:
        try:
            return cls(
                arch=str(d["arch"]),
                num_classes=int(d["num_classes"]),  # type: ignore[arg-type]
                input_shape=tuple(int(v) for v in d["input_shape"]),  # type: ignore[union-attr,attr-defined]
                mean=tuple(float(v) for v in d["mean"]),  # type: ignore[union-attr,attr-defined]
                std=tuple(float(v) for v in d["std"]),  # type: ignore[union-attr,attr-defined]
                kwargs=dict(d.get("kwargs") or {}),  # type: ignore[arg-type]
                preprocess=dict(d.get("preprocess") or {}),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"invalid model spec {d!r}: {e}") from e


class RobrepModel(nn.Module):
    """A classifier or encoder taking images in [0,1]: ``out = net(normalize(adapt(x)))``.

    Args:
        net: any ``nn.Module`` mapping normalized (N, C, H, W) images to (N, num_classes)
            outputs (logits of a classifier, or the representation of an encoder without a head).
        spec: the :class:`ModelSpec` (architecture name, classes, shape, normalization,
            preprocessing).

    ``adapt`` is the identity unless ``spec.preprocess`` asks for it: images of another
    height/width are resized to ``input_shape`` with the source's interpolation
    (``preprocess["resize"] == "resize"``; logged once and listed in :attr:`adaptations`), and
    1-channel images are repeated to 3 channels only with ``preprocess["adapt_channels"]``.

    Shape:
        - Input: (N, C, H, W), values in [0, 1].
        - Output: (N, num_classes).
    """

    def __init__(self, net: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.normalize = Normalize(spec.mean, spec.std)
        self.net = net
        self.adaptations: dict[str, Any] = {}
        if len(spec.mean) != spec.input_shape[0]:
            raise InputError(
                f"normalization has {len(spec.mean)} channels but the model takes {spec.input_shape[0]}"
            )

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """Bring [0,1] images to the model's channels and size as ``spec.preprocess`` allows
        (identity for models without a ``preprocess`` policy); refuse anything else."""
        pre = self.spec.preprocess
        if not pre:
            return x
        c, h, w = self.spec.input_shape
        if x.ndim == 4 and x.shape[1] != c:
            if x.shape[1] == 1 and c == 3 and pre.get("adapt_channels"):
                if "channels" not in self.adaptations:
                    self.adaptations["channels"] = {"from": 1, "to": 3, "how": "repeat"}
                    _log.info("robrep: repeating the channel of 1-channel images to feed the 3-channel model %s", self.spec.arch)
                x = x.expand(-1, 3, -1, -1)
            else:
                raise InputError(channel_message(int(x.shape[1]), self))
        if x.ndim == 4 and tuple(x.shape[-2:]) != (h, w):
            how = str(pre.get("resize", "resize"))
            if how != "resize":
                raise InputError(
                    f"images are {x.shape[-2]}x{x.shape[-1]} but model {self.spec.arch!r} takes {h}x{w}; resize the data "
                    "(e.g. imagefolder:<path>@<size>) or load the model with resize=True (CLI: drop --no-resize)"
                )
            mode = str(pre.get("interpolation") or "bilinear")
            key = f"{x.shape[-2]}x{x.shape[-1]}"
            if key not in self.adaptations.setdefault("resize", {}):
                self.adaptations["resize"][key] = {"to": [h, w], "interpolation": mode}
                _log.warning("robrep: resizing %sx%s images to %sx%s (%s, the model's preprocessing) inside %s",
                             x.shape[-2], x.shape[-1], h, w, mode, self.spec.arch)
            x = resize_images(x, (h, w), mode)
        return x

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What ``net`` receives: ``normalize(adapt(x))``."""
        return self.normalize(self.adapt(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))

    def layer(self, name: str) -> nn.Module:
        """The sub-module of ``net`` called ``name`` (``robrep.models.list_layers``)."""
        taps = layer_taps(self.net)
        if name in taps and taps[name].module is not None:
            name = taps[name].module  # type: ignore[assignment]
        mods = dict(self.net.named_modules())
        if name not in mods:
            raise InputError(
                f"model {self.spec.arch!r} has no layer {name!r}; choose one of " + _names_hint(self)
            )
        return mods[name]


def _names_hint(model: RobrepModel, limit: int = 40) -> str:
    names = list_layers(model)
    more = f" ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more + " (all with their shapes: robrep list-layers SOURCE)"


def channel_message(got: int, model: RobrepModel) -> str:
    """The error for images with ``got`` channels fed to ``model`` (says how to adapt them)."""
    c = model.input_shape[0]
    msg = f"images have {got} channel{'s' if got != 1 else ''} but model {model.spec.arch!r} expects {c}"
    if got == 1 and c == 3:
        return msg + ("; to repeat the gray channel 3 times pass --gray-to-rgb (Python: robrep.load(..., adapt_channels=True)), "
                      "or use 3-channel data")
    return msg + "; use data with the model's channels"


_INTERPOLATIONS = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic", "area": "area", "box": "area",
                   "lanczos": "bicubic", "hamming": "bilinear"}


def resize_images(x: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """Resize [0,1] images (N, C, H, W) to ``size`` with ``interpolation`` (antialiased when
    shrinking, like PIL and torchvision's ``Resize``); the result stays in [0,1].

    PIL's ``lanczos``/``hamming`` filters, which tensors lack, fall back to ``bicubic``/``bilinear``.
    """
    mode = _INTERPOLATIONS.get(str(interpolation).lower())
    if mode is None:
        raise InputError(f"unknown interpolation {interpolation!r}; choose one of {sorted(_INTERPOLATIONS)}")
    if mode in ("nearest", "area"):
        y = F.interpolate(x, size=size, mode=mode)
    else:
        y = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
    return y.clamp(0.0, 1.0) if mode == "bicubic" else y


@torch.no_grad()
def flush_denormals_(module: nn.Module, *, count: bool = True) -> int:
    """Set subnormal ("denormal") floating-point parameters and buffers of ``module`` to zero, in
    place; returns how many were flushed.

    Weights that decay towards zero (weight decay on inputs that are always zero, e.g. the borders
    of MNIST digits) become subnormal floats, and x86 CPUs process subnormal operands up to ~30x
    slower: a trained MNIST model with 12 % subnormal fc weights ran its fc layer 36x slower.
    Their values (< 1.2e-38 in float32) change no output measurably. :func:`robrep.train.train`
    calls this after every optimizer step on CPU and :func:`robrep.load` after loading.
    ``count=False`` skips the count (no host synchronisation; returns 0).
    """
    n = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point() and t.numel():
            sub = (t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)
            if count:
                n += int(sub.sum())
            t.masked_fill_(sub, 0.0)
    return n


def check_images(x: torch.Tensor, model: nn.Module | None = None, *, what: str = "images") -> None:
    """Raise :class:`InputError` unless ``x`` is a finite (N, C, H, W) float batch in [0,1]
    matching ``model``'s input channels (1-channel images pass for a 3-channel model loaded
    with ``adapt_channels=True``)."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise InputError(f"{what} must have shape (N, C, H, W), got {tuple(x.shape)}; add a batch dimension with x[None]")
    if not x.is_floating_point():
        raise InputError(f"{what} must be float in [0,1], got dtype {x.dtype}; divide uint8 images by 255")
    if x.numel() == 0:
        raise InputError(f"{what} is empty")
    if not torch.isfinite(x).all():
        raise InputError(f"{what} contain NaN or inf; clean the input")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InputError(
            f"{what} must lie in [0,1] (models normalize inside), got range [{lo:.3g}, {hi:.3g}]; "
            "pass unnormalized pixels"
        )
    if isinstance(model, RobrepModel):
        c = model.input_shape[0]
        if x.shape[1] != c:
            if x.shape[1] == 1 and c == 3 and model.spec.preprocess.get("adapt_channels"):
                return
            raise InputError(channel_message(int(x.shape[1]), model).replace("images", what, 1))


def list_layers(model: RobrepModel) -> list[str]:
    """Names usable as ``layer=``: the aliases of :func:`layer_taps` (``penultimate``,
    ``pooled``, ``features``, ``cls``, ..., ``logits``) then every sub-module name of ``model.net``."""
    aliases = list(layer_taps(model.net))
    return aliases + [n for n, _ in model.net.named_modules() if n and n not in aliases]


def describe_layers(model: RobrepModel) -> list[tuple[str, str]]:
    """(alias, what it is) for the representation aliases of ``model`` (for ``list-layers``)."""
    return [(k, t.help) for k, t in layer_taps(model.net).items()]


class _Stop(Exception):
    pass


class Representation(nn.Module):
    """``x in [0,1] -> R(x)``: one named representation of a :class:`RobrepModel`.

    ``layer`` is an alias of the model's contract (:func:`layer_taps`: ``"penultimate"``,
    ``"pooled"``, ``"features"``, ``"cls"``, ..., ``"logits"``) or a module name, whose *output*
    is read. Forward stops at the layer (no wasted compute after it). With ``flatten=True`` the
    result is (N, D).

    Args:
        model: the wrapped model.
        layer: alias or module name (``robrep.list_layers(model)``).
        flatten: flatten all but the batch dimension.
    """

    def __init__(self, model: RobrepModel, layer: str = "penultimate", flatten: bool = True) -> None:
        super().__init__()
        if not isinstance(model, RobrepModel):
            raise InputError("representation() needs a RobrepModel; wrap your net with robrep.models.wrap(...)")
        self.model = model
        self.layer_name = layer
        self.flatten = flatten
        taps = layer_taps(model.net)
        self._tap: Tap | None = None
        self._module: nn.Module | None = None
        self._pre = False
        if layer == "logits":
            pass
        elif layer in taps:
            self._tap = taps[layer]
            if self._tap.fn is None:
                self._module = model.layer(self._tap.module)  # type: ignore[arg-type]
                self._pre = self._tap.at == "input"
        elif layer == "penultimate":
            raise InputError(
                f"model {model.spec.arch!r} has no classification head, so 'penultimate' is undefined; "
                "choose one of " + _names_hint(model)
            )
        else:
            self._module = model.layer(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._tap is not None and self._tap.fn is not None:
            z = self._tap.fn(self.model.net, self.model.prepare(x))
        elif self._module is None:
            z = self.model(x)
        else:
            box: list[Any] = []

            def pre_hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                box.append(args[0])
                raise _Stop

            def hook(_m: nn.Module, _a: object, out: torch.Tensor) -> None:
                box.append(out)
                raise _Stop

            h = self._module.register_forward_pre_hook(pre_hook) if self._pre else self._module.register_forward_hook(hook)
            try:
                self.model(x)
            except _Stop:
                pass
            finally:
                h.remove()
            if not box:
                raise InputError(f"layer {self.layer_name!r} was not reached in the forward pass")
            z = box[0]
        z = _first_tensor(z)
        return z.flatten(1) if self.flatten else z

    def extra_repr(self) -> str:
        return f"layer={self.layer_name!r}"


def _first_tensor(z: Any) -> torch.Tensor:
    """The tensor of a layer output: itself, the first item of a tuple/list, or the first field
    of a Hugging Face ``ModelOutput``."""
    if isinstance(z, torch.Tensor):
        return z
    if hasattr(z, "to_tuple"):
        z = z.to_tuple()
    if isinstance(z, (tuple, list)) and z:
        return _first_tensor(z[0])
    raise InputError(f"the layer's output is a {type(z).__name__}, not a tensor; choose another layer")


def representation(model: RobrepModel, layer: str = "penultimate", flatten: bool = True) -> Representation:
    """The representation map of ``model`` at ``layer`` (see :class:`Representation`)."""
    return Representation(model, layer, flatten)
