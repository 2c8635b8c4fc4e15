"""The new classification head of a transferred model: replacement, freezing, cached head inputs."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data import ImageData
from ..errors import InputError
from ..models import ModelSpec, RobrepModel, final_linear_name

__all__ = ["head_name", "replace_head", "trainable_parameters"]


def head_name(model: RobrepModel) -> str:
    """Name (in ``model.net``) of the final linear classifier that transfer replaces."""
    return final_linear_name(model.net)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    *path, last = name.split(".")
    parent = root
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def replace_head(model: RobrepModel, num_classes: int, *, additional_hidden: int = 0, seed: int = 0) -> RobrepModel:
    """A copy of ``model`` whose final ``nn.Linear`` is a fresh head for ``num_classes`` classes.

    The head is ``Linear(feat_dim, C)`` (``additional_hidden=0``) or ``Sequential(
    [Linear(feat, feat), ReLU] * k, Linear(feat, C))``, initialized with PyTorch's default
    initialization under ``torch.manual_seed(seed)`` (the global RNG state is restored).
    ``model`` itself is not modified.

    Returns:
        a :class:`RobrepModel` with the same normalization and input shape, ``num_classes`` outputs.
    """
    if not isinstance(model, RobrepModel):
        raise InputError("transfer needs a RobrepModel; load a checkpoint with robrep.load or wrap your net")
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    name = head_name(model)
    new_net = copy.deepcopy(model.net)
    old = dict(new_net.named_modules())[name]
    assert isinstance(old, nn.Linear)
    feat = old.in_features
    ref = next(iter(old.parameters()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for _ in range(additional_hidden):
            layers += [nn.Linear(feat, feat), nn.ReLU()]
        layers.append(nn.Linear(feat, num_classes))
        head: nn.Module = layers[0] if additional_hidden == 0 else nn.Sequential(*layers)
    head = head.to(device=ref.device, dtype=ref.dtype)
    _set_module(new_net, name, head)
    # The spec rebuilds the architecture with a linear head of C classes (pretrained-weight options
    # dropped: the weights are in the state dict). A model with hidden head layers is not
    # rebuildable from its spec; save its state dict yourself.
    kwargs = {k: v for k, v in model.spec.kwargs.items() if k not in ("weights", "pretrained")}
    spec = ModelSpec(model.spec.arch, int(num_classes), model.spec.input_shape, model.spec.mean, model.spec.std, kwargs,
                     preprocess=dict(model.spec.preprocess))  # keep the source's resize policy
    out = RobrepModel(new_net, spec)
    out.load_state_dict({**out.state_dict(), "normalize.mean": model.normalize.mean, "normalize.std": model.normalize.std})
    return out


def trainable_parameters(model: nn.Module) -> int:
    """Number of scalar parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _head_module(model: RobrepModel, name: str) -> nn.Module:
    return dict(model.net.named_modules())[name]


class _Stop(Exception):
    pass


@torch.no_grad()
def _head_inputs(model: RobrepModel, head: nn.Module, data: ImageData, batch_size: int, dev: torch.device) -> torch.Tensor:
    """Inputs of ``head`` for all of ``data`` (the frozen features), model in eval mode."""
    box: list[torch.Tensor] = []

    def pre(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        box.append(args[0].detach())
        raise _Stop

    h = head.register_forward_pre_hook(pre)
    try:
        for xb, _ in data.batches(batch_size, device=dev):
            try:
                model(xb)
            except _Stop:
                pass
    finally:
        h.remove()
    return torch.cat(box)
