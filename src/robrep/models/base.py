"""The model contract: inputs in [0,1], normalization inside, representations by layer name.

A :class:`RobrepModel` wraps any classifier ``net`` (robrep's own, torchvision's, timm's) behind a
:class:`Normalize` layer, so that every attack, noise and threat model works in pixel space and
normalization cannot be applied twice or forgotten. The *representation* of any named layer is
read through forward hooks (:func:`representation`), so user architectures need no special
``forward`` arguments.

Layer names are those of ``net.named_modules()``, plus two aliases:
``"penultimate"`` (the input of the final linear classifier, the default) and ``"logits"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import InputError

__all__ = [
    "ModelSpec",
    "Normalize",
    "RobrepModel",
    "Representation",
    "representation",
    "list_layers",
    "final_linear_name",
    "check_images",
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
    """

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kwargs: dict[str, object] = field(default_factory=dict)

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
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"invalid model spec {d!r}: {e}") from e


class RobrepModel(nn.Module):
    """A classifier taking images in [0,1]: ``logits = net(normalize(x))``.

    Args:
        net: any ``nn.Module`` mapping normalized (N, C, H, W) images to (N, num_classes) logits.
        spec: the :class:`ModelSpec` (architecture name, classes, shape, normalization).

    Shape:
        - Input: (N, C, H, W), values in [0, 1].
        - Output: (N, num_classes) logits.
    """

    def __init__(self, net: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.normalize = Normalize(spec.mean, spec.std)
        self.net = net
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def layer(self, name: str) -> nn.Module:
        """The sub-module of ``net`` called ``name`` (``robrep.models.list_layers``)."""
        name = _resolve_alias(self, name)
        mods = dict(self.net.named_modules())
        if name not in mods:
            raise InputError(
                f"model {self.spec.arch!r} has no layer {name!r}; choose one of "
                f"'penultimate', 'logits' or {', '.join(list_layers(self)[:40])}"
            )
        return mods[name]


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
    matching ``model``'s input channels."""
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
            raise InputError(f"{what} have {x.shape[1]} channels but model {model.spec.arch!r} expects {c}")


def final_linear_name(net: nn.Module) -> str:
    """Name of the final linear classifier in ``net`` (the last ``nn.Linear`` registered)."""
    getter = getattr(net, "get_classifier", None)  # timm
    if callable(getter):
        head = getter()
        for n, m in net.named_modules():
            if m is head and isinstance(m, nn.Linear):
                return n
    last = None
    for n, m in net.named_modules():
        if isinstance(m, nn.Linear):
            last = n
    if last is None:
        raise InputError("the model has no nn.Linear layer, so 'penultimate' is undefined; name a layer")
    return last


def _resolve_alias(model: RobrepModel, name: str) -> str:
    return final_linear_name(model.net) if name in ("penultimate", "logits") else name


def list_layers(model: RobrepModel) -> list[str]:
    """Names usable as ``layer=`` (besides the aliases ``penultimate`` and ``logits``)."""
    return [n for n, _ in model.net.named_modules() if n]


class _Stop(Exception):
    pass


class Representation(nn.Module):
    """``x in [0,1] -> R(x)``: the activation of one layer of a :class:`RobrepModel`.

    ``"penultimate"`` is the *input* of the final linear layer; ``"logits"`` the model output;
    any other name the *output* of that sub-module. Forward stops at the layer (no wasted
    compute after it). With ``flatten=True`` the result is (N, D).

    Args:
        model: the wrapped classifier.
        layer: layer name or alias.
        flatten: flatten all but the batch dimension.
    """

    def __init__(self, model: RobrepModel, layer: str = "penultimate", flatten: bool = True) -> None:
        super().__init__()
        if not isinstance(model, RobrepModel):
            raise InputError("representation() needs a RobrepModel; wrap your net with robrep.models.wrap(...)")
        self.model = model
        self.layer_name = layer
        self.flatten = flatten
        self._module = None if layer == "logits" else model.layer(layer)
        self._pre = layer == "penultimate"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._module is None:
            z = self.model(x)
        else:
            box: list[torch.Tensor] = []

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
            if isinstance(z, (tuple, list)):
                z = z[0]
        return z.flatten(1) if self.flatten else z

    def extra_repr(self) -> str:
        return f"layer={self.layer_name!r}"


def representation(model: RobrepModel, layer: str = "penultimate", flatten: bool = True) -> Representation:
    """The representation map of ``model`` at ``layer`` (see :class:`Representation`)."""
    return Representation(model, layer, flatten)
