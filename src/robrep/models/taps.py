"""The representation contract of a net: which named representations it offers and how to read them.

A net states its representations in one of three ways, tried in this order:

1. ``net.representation_taps() -> {name: Tap}`` (robrep's wrappers of Hugging Face and
   open_clip encoders);
2. timm's methods ``forward_features(x)`` and ``forward_head(f, pre_logits=False)`` (timm models
   and every robrep architecture): ``features`` = ``forward_features(x)``, ``pooled`` =
   ``penultimate`` = ``forward_head(forward_features(x), pre_logits=True)``, ``cls`` = token 0 of
   the features when the net has a ``cls_token``;
3. otherwise (torchvision nets, wrapped custom nets): ``penultimate`` = ``pooled`` = the input of
   the final ``nn.Linear`` (``get_classifier()`` when the net has one), and ``features`` = the
   output of a sub-module named ``features``, ``layer4`` or ``encoder`` when there is one.

:func:`layer_taps` returns them; :class:`~robrep.models.Representation` (in
:mod:`robrep.models.base`) reads one of them from a :class:`~robrep.models.RobrepModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError

__all__ = ["Tap", "final_linear_name", "head_name", "layer_taps"]


def head_name(net: nn.Module) -> str | None:
    """Name of ``net``'s final linear classifier, or None for an encoder without a head.

    The classifier is ``net.get_classifier()`` where the net has that method (timm and robrep's
    source wrappers; an ``nn.Identity`` there means "no head"), else the last ``nn.Linear``.
    """
    getter = getattr(net, "get_classifier", None)
    if callable(getter):
        head = getter()
        if isinstance(head, nn.Linear):
            for n, m in net.named_modules():
                if m is head:
                    return n
        return None
    last = None
    for n, m in net.named_modules():
        if isinstance(m, nn.Linear):
            last = n
    return last


def final_linear_name(net: nn.Module) -> str:
    """Name of the final linear classifier in ``net`` (see :func:`head_name`); InputError when
    the net has none (an encoder without a classification head)."""
    name = head_name(net)
    if name is None:
        raise InputError(
            "the model has no final linear classifier (an encoder without a head): name a representation "
            "(robrep.list_layers), or fit a probe on it (robrep.evaluate.linear_probe)"
        )
    return name


@dataclass(frozen=True)
class Tap:
    """How to read one named representation of a net.

    Either ``fn(net, x)`` on the normalized input ``x`` (the forward is cut where ``fn`` ends),
    or the ``input``/``output`` (``at``) of the sub-module ``module`` read with a forward hook
    (the forward stops there).
    """

    help: str
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    module: str | None = None
    at: str = "output"


def _timm_pooled(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.forward_head(net.forward_features(x), pre_logits=True)  # type: ignore[operator]


def _timm_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.forward_features(x)  # type: ignore[operator]


def _timm_cls(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    f = net.forward_features(x)  # type: ignore[operator]
    if f.ndim != 3:
        raise InputError("'cls' needs a token sequence (N, T, D) from forward_features; this net gives a feature map")
    return f[:, 0]


def layer_taps(net: nn.Module) -> dict[str, Tap]:
    """The representation aliases of ``net`` (the contract of this module).

    Returns an ordered mapping name -> :class:`Tap`; ``penultimate`` (when the net has a
    representation) first, ``logits`` (the model output) last.
    """
    own = getattr(net, "representation_taps", None)
    taps: dict[str, Tap] = {}
    if callable(own):
        taps = dict(own())
    elif callable(getattr(net, "forward_features", None)) and callable(getattr(net, "forward_head", None)):
        taps["pooled"] = Tap("forward_head(forward_features(x), pre_logits=True): the pooled features the classifier reads",
                             fn=_timm_pooled)
        taps["features"] = Tap("forward_features(x): the feature map or token sequence before pooling", fn=_timm_features)
        if isinstance(getattr(net, "cls_token", None), torch.Tensor):
            taps["cls"] = Tap("the class token: forward_features(x)[:, 0]", fn=_timm_cls)
    else:
        head = head_name(net)
        if head is not None:
            taps["pooled"] = Tap(f"input of the final linear classifier {head!r}", module=head, at="input")
        mods = dict(net.named_modules())
        for name in ("features", "layer4", "encoder"):
            if name in mods and name != head:
                taps["features"] = Tap(f"output of {name!r}: the feature map or token sequence before pooling", module=name)
                break
    if "penultimate" not in taps and "pooled" in taps:
        p = taps["pooled"]
        taps = {"penultimate": Tap("= pooled: " + p.help, p.fn, p.module, p.at), **taps}
    elif "penultimate" in taps:
        taps = {"penultimate": taps.pop("penultimate"), **taps}
    taps["logits"] = Tap("the model output (logits of a classifier, the representation of an encoder without a head)")
    return taps
