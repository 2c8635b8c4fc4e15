"""Memory of a batch: activation bytes per image, batch sizes within a memory cap, and
:class:`ChunkedGrad`, which bounds the memory of a forward+backward pass through an encoder.

A forward-only pass (features, under ``inference_mode``) frees each intermediate as the pass goes
on, so its batch is sized by the bytes of all module outputs of one image
(:func:`activation_bytes_per_image`). A pass that back-propagates to the input (an attack, a
gradient of a representation) keeps every intermediate of the batch until the backward pass:
its batch is sized by :data:`GRAD_FACTOR` times that (the saved activations, their gradients and
the workspace), :func:`grad_batch_size`. Where an objective couples the whole batch (a batch MI
estimate), :class:`ChunkedGrad` computes the encoder's output and its input gradient chunk by
chunk, so only one chunk's activations are alive at any time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputError

__all__ = ["DEFAULT_MEMORY_CAP", "GRAD_FACTOR", "ChunkedGrad", "activation_bytes_per_image", "auto_batch_size",
           "grad_batch_size"]

#: memory cap of one batch (activations of all modules, inputs included), bytes
DEFAULT_MEMORY_CAP = 1 << 30
#: a forward+backward pass is sized as this many times the forward activations
GRAD_FACTOR = 3


def activation_bytes_per_image(fn: nn.Module, input_shape: tuple[int, int, int], device: torch.device | str = "cpu") -> int:
    """Bytes of all module outputs (and the input) of one forward pass of one image: an upper
    bound on the memory a forward-only pass needs per image (intermediates are freed as the
    pass goes on). Measured with forward hooks on a zero image under ``inference_mode``."""
    total = [int(torch.Size(input_shape).numel()) * 4]

    def hook(_m: nn.Module, _a: object, out: Any) -> None:
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    mods = [m for m in fn.modules() if not list(m.children())]
    hs = [m.register_forward_hook(hook) for m in mods]
    try:
        with torch.inference_mode():
            try:
                fn(torch.zeros(1, *input_shape, device=device))
            except Exception as e:  # noqa: BLE001 - a representation stops its forward with its own exception
                if type(e).__name__ != "_Stop":
                    raise
    finally:
        for h in hs:
            h.remove()
    return max(total[0], 1)


def auto_batch_size(fn: nn.Module, input_shape: tuple[int, int, int], *, memory_cap: int = DEFAULT_MEMORY_CAP,
                    max_batch: int = 512, device: torch.device | str = "cpu") -> int:
    """The largest power of two ``b <= max_batch`` with ``b * activation_bytes_per_image <= memory_cap``
    (at least 1)."""
    if memory_cap <= 0 or max_batch < 1:
        raise InputError(f"memory_cap and max_batch must be positive, got {memory_cap}, {max_batch}")
    per = activation_bytes_per_image(fn, input_shape, device)
    b = 1
    while b * 2 <= max_batch and b * 2 * per <= memory_cap:
        b *= 2
    return b


def grad_batch_size(fn: nn.Module, input_shape: tuple[int, int, int], *, memory_cap: int = DEFAULT_MEMORY_CAP,
                    max_batch: int = 500, device: torch.device | str = "cpu", factor: int = GRAD_FACTOR) -> int:
    """Batch size of a pass that back-propagates through ``fn`` to its input: ``max_batch`` when
    ``factor`` (:data:`GRAD_FACTOR`) times its forward activations fit in ``memory_cap``, else the
    largest power of two that does (at least 1). ``factor=1`` sizes a forward-only pass."""
    if memory_cap <= 0 or max_batch < 1 or factor < 1:
        raise InputError(f"memory_cap, max_batch and factor must be positive, got {memory_cap}, {max_batch}, {factor}")
    per = activation_bytes_per_image(fn, input_shape, device)
    if factor * per * max_batch <= memory_cap:
        return max_batch
    b = 1
    while b * 2 <= max_batch and b * 2 * factor * per <= memory_cap:
        b *= 2
    return b


class _Chunked(torch.autograd.Function):
    """Output of ``fn`` on ``x`` computed ``chunk`` images at a time without a graph; the input
    gradient recomputes one chunk's forward at a time (activation checkpointing per chunk)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: nn.Module, chunk: int) -> torch.Tensor:  # type: ignore[override]
        ctx.fn, ctx.chunk = fn, chunk
        ctx.save_for_backward(x)
        with torch.no_grad():
            return torch.cat([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)])

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        out = torch.empty_like(x)
        for i in range(0, len(x), ctx.chunk):
            with torch.enable_grad():
                xc = x[i : i + ctx.chunk].detach().requires_grad_(True)
                (gx,) = torch.autograd.grad(ctx.fn(xc), xc, g[i : i + ctx.chunk])
            out[i : i + ctx.chunk] = gx
        return out, None, None


class ChunkedGrad(nn.Module):
    """``fn`` (a per-image map, e.g. a representation in eval mode) run ``chunk`` images at a
    time: a forward pass of any batch holds one chunk's activations, and a gradient with respect
    to the input recomputes each chunk's forward and back-propagates it on its own, so a
    forward+backward pass of a batch of any size holds one chunk's activations, not the batch's.

    The output equals ``fn`` on the whole batch wherever ``fn`` treats the images independently
    (up to the rounding of another batch size); a batch of at most ``chunk`` images calls ``fn``
    directly. Gradients reach the input only, never ``fn``'s parameters.
    """

    def __init__(self, fn: nn.Module, chunk: int) -> None:
        super().__init__()
        if chunk < 1:
            raise InputError(f"chunk must be >= 1, got {chunk}")
        self.fn, self.chunk = fn, int(chunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) <= self.chunk:
            return self.fn(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _Chunked.apply(x, self.fn, self.chunk)
        with torch.no_grad():
            return torch.cat([self.fn(x[i : i + self.chunk]) for i in range(0, len(x), self.chunk)])
