"""Shapes of a model's named representations (what ``robrep list-layers`` prints)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import RobrepError
from .base import RobrepModel, _first_tensor, layer_taps, representation

__all__ = ["LayerInfo", "layer_shapes"]


@dataclass(frozen=True)
class LayerInfo:
    """One name usable as ``layer=``.

    Attributes:
        name: the alias (``penultimate``, ``pooled``, ``features``, ``cls``, ``hidden_states.<i>``,
            ``logits``) or the sub-module name.
        kind: ``alias`` or ``module``.
        shape: the output shape for one image, batch dimension left out (None where the forward
            pass does not reach the module or the alias does not apply to this net).
        help: what the alias is (the module's class for a module).
    """

    name: str
    kind: str
    shape: list[int] | None
    help: str


def layer_shapes(model: RobrepModel, input_shape: Sequence[int] | None = None, *, modules: bool = True) -> list[LayerInfo]:
    """Every representation name of ``model`` with its output shape for one input of
    ``input_shape`` (default: the model's): the aliases of the contract first (each read with
    :func:`robrep.representation`, unflattened), then, with ``modules``, every sub-module
    (forward hooks on one forward pass of a zero image, in eval mode, under ``inference_mode``)."""
    shape = tuple(int(v) for v in (input_shape or model.input_shape))
    dev = next(iter(model.parameters()), torch.empty(0)).device
    x = torch.zeros(1, *shape, device=dev)
    was_training = model.training
    model.eval()
    out: list[LayerInfo] = []
    try:
        with torch.inference_mode():
            for name, tap in layer_taps(model.net).items():
                try:
                    z = representation(model, name, flatten=False)(x)
                    shp: list[int] | None = list(z.shape[1:])
                except (RobrepError, RuntimeError):  # an alias that does not apply to this net / input
                    shp = None
                out.append(LayerInfo(name, "alias", shp, tap.help))
            if modules:
                shapes: dict[str, list[int]] = {}
                hooks = []
                named = [(n, m) for n, m in model.net.named_modules() if n]

                def make(n: str) -> Any:
                    def hook(_m: nn.Module, _a: object, o: Any) -> None:
                        if n not in shapes:
                            try:
                                shapes[n] = list(_first_tensor(o).shape[1:])
                            except RobrepError:
                                pass
                    return hook

                hooks = [m.register_forward_hook(make(n)) for n, m in named]
                try:
                    model(x)
                finally:
                    for h in hooks:
                        h.remove()
                out += [LayerInfo(n, "module", shapes.get(n), type(m).__name__) for n, m in named]
    finally:
        model.train(was_training)
    return out
