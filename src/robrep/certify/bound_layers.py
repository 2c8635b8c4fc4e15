"""Layers of bound propagation: each supported ``nn.Module`` as an affine map, ReLU or max-pool
operation with its input and output shapes, and :func:`to_sequential` for robrep's models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models.base import Normalize, RobrepModel
from .semantic_encodings import PixelMix, ThetaToPixels

__all__ = ["AffineOp", "MaxPoolOp", "ReLUOp", "build_ops", "to_sequential"]


class AffineOp:
    """An affine layer y = L x + b, with L's positive and negative parts."""

    def __init__(self, fwd, lin, pos, neg, in_shape: tuple[int, ...], out_shape: tuple[int, ...], transpose=None) -> None:  # type: ignore[no-untyped-def]
        self.fwd, self.lin, self.pos, self.neg = fwd, lin, pos, neg
        self.in_shape, self.out_shape = in_shape, out_shape
        self._transpose = transpose
        self._bias: torch.Tensor | None = None

    def bias_map(self, like: torch.Tensor) -> torch.Tensor:
        if self._bias is None:
            self._bias = self.fwd(torch.zeros((1, *self.in_shape), dtype=like.dtype, device=like.device))[0]
        return self._bias

    def transpose(self, a: torch.Tensor) -> torch.Tensor:
        """a (M, *out_shape) -> a L (M, *in_shape)."""
        if self._transpose is not None:
            return self._transpose(a)
        x0 = torch.zeros((a.shape[0], *self.in_shape), dtype=a.dtype, device=a.device)
        _, vjp = torch.func.vjp(self.lin, x0)
        return vjp(a)[0]


class ReLUOp:
    pass


class MaxPoolOp:
    def __init__(self, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int], in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        self.k, self.s, self.p = k, s, p
        self.in_shape, self.out_shape = in_shape, out_shape

    @property
    def tiled(self) -> bool:
        """Non-overlapping windows that tile the input exactly (the usual 2x2 / stride 2 pool)."""
        return (self.k == self.s and not any(self.p) and self.in_shape[1] % self.k[0] == 0
                and self.in_shape[2] % self.k[1] == 0)

    def windows(self, t: torch.Tensor, fill: float) -> torch.Tensor:
        """(M, C, H, W) -> (M, C, k*k, L) windows (padding filled with ``fill``)."""
        m, c = t.shape[:2]
        if self.tiled:
            (kh, kw), (ho, wo) = self.k, (self.in_shape[1] // self.k[0], self.in_shape[2] // self.k[1])
            return t.reshape(m, c, ho, kh, wo, kw).permute(0, 1, 3, 5, 2, 4).reshape(m, c, kh * kw, ho * wo)
        if any(self.p):
            t = F.pad(t, (self.p[1], self.p[1], self.p[0], self.p[0]), value=fill)
        u = F.unfold(t, self.k, stride=self.s)
        return u.view(m, c, self.k[0] * self.k[1], -1)

    def scatter(self, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Put window values v (M, C, L) at window positions idx (M, C, L) -> (M, C, H, W) (summing overlaps)."""
        m, c, nl = v.shape
        full = torch.zeros(m, c, self.k[0] * self.k[1], nl, dtype=v.dtype, device=v.device)
        full.scatter_(2, idx.unsqueeze(2), v.unsqueeze(2))
        if self.tiled:
            (kh, kw), (ho, wo) = self.k, (self.in_shape[1] // self.k[0], self.in_shape[2] // self.k[1])
            return full.view(m, c, kh, kw, ho, wo).permute(0, 1, 4, 2, 5, 3).reshape(m, c, *self.in_shape[1:])
        h, w = self.in_shape[1] + 2 * self.p[0], self.in_shape[2] + 2 * self.p[1]
        out = F.fold(full.view(m, c * self.k[0] * self.k[1], nl), (h, w), self.k, stride=self.s)
        if any(self.p):
            out = out[:, :, self.p[0]: h - self.p[0], self.p[1]: w - self.p[1]]
        return out


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _make_op(m: nn.Module, in_shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and (m.training or m.running_mean is None):
        raise InputError("BatchNorm must be in eval mode with running statistics: call model.eval()")
    with torch.no_grad():
        out_shape = tuple(m(torch.zeros((1, *in_shape), dtype=_dtype_of(m), device=_device_of(m))).shape[1:])
    if isinstance(m, nn.ReLU):
        return ReLUOp()
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != (1, 1) or m.ceil_mode:
            raise InputError("MaxPool2d with dilation or ceil_mode is not supported by the verifier")
        return MaxPoolOp(_pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding), in_shape, out_shape)
    if isinstance(m, nn.Linear):
        w = m.weight
        return AffineOp(m, lambda x: F.linear(x, w), lambda x: F.linear(x, w.clamp(min=0)), lambda x: F.linear(x, w.clamp(max=0)),
                       in_shape, out_shape, transpose=lambda a: a @ w)
    if isinstance(m, nn.Conv2d):
        w = m.weight
        kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
        if m.padding_mode != "zeros":
            raise InputError("only zero-padded Conv2d is supported by the verifier")
        return AffineOp(m, lambda x: F.conv2d(x, w, None, **kw), lambda x: F.conv2d(x, w.clamp(min=0), None, **kw),
                       lambda x: F.conv2d(x, w.clamp(max=0), None, **kw), in_shape, out_shape,
                       transpose=lambda a: torch.nn.grad.conv2d_input((a.shape[0], *in_shape), w, a, **kw))
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.training or m.running_mean is None:
            raise InputError("BatchNorm must be in eval mode with running statistics: call model.eval()")
        scale = (m.weight if m.weight is not None else 1.0) / torch.sqrt(m.running_var + m.eps)
        view = (1, -1) + (1,) * (len(in_shape) - 1)
        sc = scale.view(view)
        return AffineOp(m, lambda x: x * sc, lambda x: x * sc.clamp(min=0), lambda x: x * sc.clamp(max=0), in_shape, out_shape,
                       transpose=lambda a: a * sc)
    if isinstance(m, Normalize):
        inv = 1.0 / m.std
        return AffineOp(m, lambda x: x * inv, lambda x: x * inv, lambda x: torch.zeros_like(x), in_shape, out_shape,
                       transpose=lambda a: a * inv)
    if isinstance(m, (nn.Flatten, nn.Unflatten, nn.Identity)):
        return AffineOp(m, m, m, lambda x: torch.zeros_like(m(x)), in_shape, out_shape,
                       transpose=lambda a: a.reshape(a.shape[0], *in_shape))
    if isinstance(m, nn.AvgPool2d):
        return AffineOp(m, m, m, lambda x: torch.zeros_like(m(x)), in_shape, out_shape)
    if isinstance(m, ThetaToPixels):
        wt = m.weight
        return AffineOp(m, lambda x: torch.einsum("jdhw,nd->njhw", wt, x), lambda x: torch.einsum("jdhw,nd->njhw", wt.clamp(min=0), x),
                       lambda x: torch.einsum("jdhw,nd->njhw", wt.clamp(max=0), x), in_shape, out_shape,
                       transpose=lambda a: torch.einsum("mjhw,jdhw->md", a, wt))
    if isinstance(m, PixelMix):
        wt = m.weight
        return AffineOp(m, lambda x: torch.einsum("cjhw,njhw->nchw", wt, x), lambda x: torch.einsum("cjhw,njhw->nchw", wt.clamp(min=0), x),
                       lambda x: torch.einsum("cjhw,njhw->nchw", wt.clamp(max=0), x), in_shape, out_shape,
                       transpose=lambda a: torch.einsum("mchw,cjhw->mjhw", a, wt))
    raise InputError(
        f"the verifier does not support layer {type(m).__name__}; supported: Linear, Conv2d, ReLU, BatchNorm (eval), "
        "MaxPool2d, AvgPool2d, Flatten, Unflatten, Identity, Normalize and the SP-layers"
    )


def _dtype_of(m: nn.Module) -> torch.dtype:
    for t in list(m.parameters()) + list(m.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _device_of(m: nn.Module) -> torch.device:
    for t in list(m.parameters()) + list(m.buffers()):
        return t.device
    return torch.device("cpu")


def _flatten_layers(layers: nn.Module | list[nn.Module]) -> list[nn.Module]:
    mods = list(layers) if isinstance(layers, (list, tuple, nn.Sequential)) else [layers]
    out: list[nn.Module] = []
    for m in mods:
        if isinstance(m, nn.Sequential):
            out.extend(_flatten_layers(m))
        elif isinstance(m, RobrepModel):
            out.extend(_flatten_layers(to_sequential(m)))
        else:
            out.append(m)
    return out


def build_ops(layers: nn.Module | list[nn.Module], in_shape: tuple[int, ...]) -> list:  # type: ignore[type-arg]
    ops, shape = [], in_shape
    for m in _flatten_layers(layers):
        op = _make_op(m, shape)
        ops.append(op)
        if isinstance(op, (AffineOp, MaxPoolOp)):
            shape = op.out_shape
    return ops


# ---------------------------------------------------------------------------------------------
# Converting robrep models


def to_sequential(model: nn.Module) -> nn.Sequential:
    """An ``nn.Sequential`` computing the same logits as ``model`` (sharing its parameters).

    Supports robrep's ``small-cnn``, ``mnist-cnn``, ``mlp`` and ``linear`` nets (whose ``forward``
    calls ``F.relu`` / ``F.max_pool2d`` functionally, invisible to a module-walking verifier),
    :class:`RobrepModel` wrappers of these or of an ``nn.Sequential`` (the ``Normalize`` layer is
    kept as the first layer, so the sequence takes [0,1] images), and any ``nn.Sequential``.

    Args:
        model: the network.

    Returns:
        The equivalent ``nn.Sequential`` (input (N, C, H, W), output logits).
    """
    from ..models.zoo import LinearNet, MadryMnistCNN, MLPNet, SmallCNN

    if isinstance(model, RobrepModel):
        return nn.Sequential(model.normalize, *to_sequential(model.net))
    if isinstance(model, nn.Sequential):
        return nn.Sequential(*_flatten_layers(model))
    if isinstance(model, (SmallCNN, MadryMnistCNN)):
        return nn.Sequential(model.conv1, nn.ReLU(), nn.MaxPool2d(2), model.conv2, nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), model.fc1, nn.ReLU(), model.fc)
    if isinstance(model, MLPNet):
        return nn.Sequential(nn.Flatten(), model.fc1, nn.ReLU(), model.fc)
    if isinstance(model, LinearNet):
        return nn.Sequential(nn.Flatten(), model.fc)
    raise InputError(
        f"cannot convert {type(model).__name__} to a sequential network; the verifier supports robrep's small-cnn, "
        "mnist-cnn, mlp and linear models, or an nn.Sequential of supported layers"
    )
