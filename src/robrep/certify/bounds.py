"""Bound propagation through sequential ReLU networks: interval (IBP) and CROWN-style linear bounds.

Written for robrep (``auto_LiRPA`` does not install with robrep's torch). Supports any
``nn.Sequential`` of ``Linear``, ``Conv2d``, ``ReLU``, ``BatchNorm1d/2d`` (eval mode),
``MaxPool2d``, ``AvgPool2d``, ``Flatten``, ``Unflatten``, ``Identity``, robrep's ``Normalize`` and
the Semantify-NN SP-layers (:class:`~robrep.certify.semantic.ThetaToPixels`,
:class:`~robrep.certify.semantic.PixelMix`); :func:`to_sequential` rebuilds robrep's
``small-cnn``, ``mnist-cnn``, ``mlp`` and ``linear`` models as such a sequence.

Methods:

- IBP (Gowal et al. 2018): intervals layer by layer.
- CROWN (Zhang et al., NeurIPS 2018): backward linear relaxation; ReLU upper line through
  (l, 0) and (u, u), adaptive lower slope (1 if u >= -l else 0); max-pool relaxed by its
  dominant input (lower: the input with the largest lower bound; upper: that input when it
  dominates, else the constant max upper bound). Pre-activation bounds of intermediate layers
  come from forward-mode linear bounds when the input is low-dimensional (the SP-layer case:
  theta in R^1 or R^2), from backward CROWN for layers with at most ``crown_max_neurons``
  neurons (when forward mode is not used), else from IBP; every intermediate bound is
  intersected with IBP's.

Input sets: :class:`BoxSet`, a box or a *union* of K boxes (Semantify-NN's implicit splitting:
at the first affine layers and at every linear concretization the bound is the max over the K
boxes); :class:`ThreatBall`, the set a :class:`~robrep.threats.ThreatModel` allows around each
image -- the same object the attacks use -- i.e. the l_p ball intersected with the [0,1] box
(:func:`ball`). Linear functions are concretized over it with the dual norm and, with the box,
also over the ball's bounding box clipped to [0,1]; the smaller of the two bounds is taken (for
linf the clipped box *is* the set, so the bound is exact). :func:`LpBall` is the plain ball
without the box (inputs that are not images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models.base import Normalize, RobrepModel
from ..threats import ThreatModel, threat
from .semantic import PixelMix, ThetaToPixels

__all__ = ["BoxSet", "ThreatBall", "LpBall", "Bounds", "ball", "box", "compute_bounds", "ibp", "crown", "margin_spec",
           "to_sequential"]


# ---------------------------------------------------------------------------------------------
# Input sets


@dataclass(frozen=True)
class BoxSet:
    """A union of K boxes per example: ``lower``, ``upper`` of shape (N, K, *input_shape)."""

    lower: torch.Tensor
    upper: torch.Tensor

    def __post_init__(self) -> None:
        if self.lower.shape != self.upper.shape or self.lower.dim() < 3:
            raise InputError(f"BoxSet needs lower/upper of equal shape (N, K, ...), got {tuple(self.lower.shape)} and {tuple(self.upper.shape)}")
        if bool((self.lower > self.upper).any()):
            raise InputError("BoxSet lower bound exceeds upper bound somewhere")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.lower.shape[2:])

    @property
    def n(self) -> int:
        return self.lower.shape[0]


@dataclass(frozen=True)
class ThreatBall:
    """The perturbation set of a threat model around each example.

    ``{x' : ||x' - center||_p <= threat.eps}``, intersected with the [0,1] box when ``clip`` (what
    the threat model means for images, and what the attacks search). ``center`` is
    (N, *input_shape); with ``clip`` it must lie in [0,1].

    Attributes:
        threat: the :class:`~robrep.threats.ThreatModel` (its ``eps`` and ``p`` are used).
        center: the clean inputs.
        clip: intersect with [0,1] (False: the plain l_p ball, e.g. for inputs that are not images).
    """

    threat: ThreatModel
    center: torch.Tensor
    clip: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.threat, ThreatModel):
            raise InputError(f"threat must be a robrep ThreatModel (robrep.threat('linf', eps)), got {type(self.threat).__name__}")
        if self.threat.p not in (1.0, 2.0, math.inf):
            raise InputError(f"p must be 1, 2 or inf, got {self.threat.p}")
        if self.center.dim() < 2:
            raise InputError(f"center must be (N, *input_shape), got {tuple(self.center.shape)}; add a batch dimension")
        if self.clip and bool(((self.center < 0) | (self.center > 1)).any()):
            raise InputError("with clip=True the center must be images in [0,1]; rescale the inputs or pass clip=False "
                             "(a plain l_p ball)")

    @property
    def eps(self) -> float:
        return float(self.threat.eps)

    @property
    def p(self) -> float:
        return float(self.threat.p)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.center.shape[1:])

    @property
    def n(self) -> int:
        return self.center.shape[0]

    def interval(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinate-wise bounds of the set: ``center -+ eps`` (clipped to [0,1] with ``clip``)."""
        lo, up = self.center - self.eps, self.center + self.eps
        return (lo.clamp(0.0, 1.0), up.clamp(0.0, 1.0)) if self.clip else (lo, up)


def ball(threat_model: ThreatModel, x: torch.Tensor, *, clip: bool = True) -> ThreatBall:
    """The set ``threat_model`` allows around the images ``x`` (N, *input_shape): ball and [0,1] box."""
    return ThreatBall(threat_model, x, clip)


_NORM_OF_P = {math.inf: "linf", 2.0: "l2", 1.0: "l1"}


def LpBall(center: torch.Tensor, eps: float, p: float) -> ThreatBall:  # noqa: N802 - the former class name
    """The plain l_p ball ``{x : ||x - center||_p <= eps}`` (no [0,1] box); p in {1, 2, inf}."""
    if p not in _NORM_OF_P:
        raise InputError(f"p must be 1, 2 or inf, got {p}")
    return ThreatBall(threat(_NORM_OF_P[p], eps), center, clip=False)


def box(lower: torch.Tensor, upper: torch.Tensor) -> BoxSet:
    """A single box per example: lower/upper (N, *input_shape) -> :class:`BoxSet` with K = 1."""
    return BoxSet(lower.unsqueeze(1), upper.unsqueeze(1))


@dataclass(frozen=True)
class Bounds:
    """Elementwise bounds ``lower <= f(x) <= upper`` for every x in the input set, each (N, S)."""

    lower: torch.Tensor
    upper: torch.Tensor


def _dual(p: float) -> float:
    return 1.0 if p == math.inf else (math.inf if p == 1.0 else p / (p - 1.0))


def _concretize(a: torch.Tensor, inp: BoxSet | ThreatBall, upper: bool) -> torch.Tensor:
    """max (upper) or min over the input set of <a, x>; a (N, S, *input_shape) -> (N, S)."""
    n, s = a.shape[:2]
    af = a.reshape(n, s, -1)
    if isinstance(inp, ThreatBall):
        q = _dual(inp.p)
        ax = torch.einsum("nsd,nd->ns", af, inp.center.reshape(n, -1))
        norm = af.abs().amax(-1) if q == math.inf else af.norm(p=q, dim=-1)
        v = ax + inp.eps * norm if upper else ax - inp.eps * norm
        if not inp.clip:
            return v
        vb = _concretize(a, box(*inp.interval()), upper)  # the set lies in its clipped bounding box too
        return torch.minimum(v, vb) if upper else torch.maximum(v, vb)
    c = ((inp.lower + inp.upper) / 2).reshape(n, inp.lower.shape[1], -1)
    r = ((inp.upper - inp.lower) / 2).reshape(n, inp.lower.shape[1], -1)
    ac = torch.einsum("nsd,nkd->nsk", af, c)
    ar = torch.einsum("nsd,nkd->nsk", af.abs(), r)
    return (ac + ar).amax(-1) if upper else (ac - ar).amin(-1)


# ---------------------------------------------------------------------------------------------
# Layer operations


class _Affine:
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


class _ReLU:
    pass


class _MaxPool:
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
        return _ReLU()
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != (1, 1) or m.ceil_mode:
            raise InputError("MaxPool2d with dilation or ceil_mode is not supported by the verifier")
        return _MaxPool(_pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding), in_shape, out_shape)
    if isinstance(m, nn.Linear):
        w = m.weight
        return _Affine(m, lambda x: F.linear(x, w), lambda x: F.linear(x, w.clamp(min=0)), lambda x: F.linear(x, w.clamp(max=0)),
                       in_shape, out_shape, transpose=lambda a: a @ w)
    if isinstance(m, nn.Conv2d):
        w = m.weight
        kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
        if m.padding_mode != "zeros":
            raise InputError("only zero-padded Conv2d is supported by the verifier")
        return _Affine(m, lambda x: F.conv2d(x, w, None, **kw), lambda x: F.conv2d(x, w.clamp(min=0), None, **kw),
                       lambda x: F.conv2d(x, w.clamp(max=0), None, **kw), in_shape, out_shape,
                       transpose=lambda a: torch.nn.grad.conv2d_input((a.shape[0], *in_shape), w, a, **kw))
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.training or m.running_mean is None:
            raise InputError("BatchNorm must be in eval mode with running statistics: call model.eval()")
        scale = (m.weight if m.weight is not None else 1.0) / torch.sqrt(m.running_var + m.eps)
        view = (1, -1) + (1,) * (len(in_shape) - 1)
        sc = scale.view(view)
        return _Affine(m, lambda x: x * sc, lambda x: x * sc.clamp(min=0), lambda x: x * sc.clamp(max=0), in_shape, out_shape,
                       transpose=lambda a: a * sc)
    if isinstance(m, Normalize):
        inv = 1.0 / m.std
        return _Affine(m, lambda x: x * inv, lambda x: x * inv, lambda x: torch.zeros_like(x), in_shape, out_shape,
                       transpose=lambda a: a * inv)
    if isinstance(m, (nn.Flatten, nn.Unflatten, nn.Identity)):
        return _Affine(m, m, m, lambda x: torch.zeros_like(m(x)), in_shape, out_shape,
                       transpose=lambda a: a.reshape(a.shape[0], *in_shape))
    if isinstance(m, nn.AvgPool2d):
        return _Affine(m, m, m, lambda x: torch.zeros_like(m(x)), in_shape, out_shape)
    if isinstance(m, ThetaToPixels):
        wt = m.weight
        return _Affine(m, lambda x: torch.einsum("jdhw,nd->njhw", wt, x), lambda x: torch.einsum("jdhw,nd->njhw", wt.clamp(min=0), x),
                       lambda x: torch.einsum("jdhw,nd->njhw", wt.clamp(max=0), x), in_shape, out_shape,
                       transpose=lambda a: torch.einsum("mjhw,jdhw->md", a, wt))
    if isinstance(m, PixelMix):
        wt = m.weight
        return _Affine(m, lambda x: torch.einsum("cjhw,njhw->nchw", wt, x), lambda x: torch.einsum("cjhw,njhw->nchw", wt.clamp(min=0), x),
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


def _build(layers: nn.Module | list[nn.Module], in_shape: tuple[int, ...]) -> list:  # type: ignore[type-arg]
    ops, shape = [], in_shape
    for m in _flatten_layers(layers):
        op = _make_op(m, shape)
        ops.append(op)
        if isinstance(op, (_Affine, _MaxPool)):
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


# ---------------------------------------------------------------------------------------------
# IBP


def _ibp_affine(op: _Affine, lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c, r = (lo + up) / 2, (up - lo) / 2
    yc = op.fwd(c)
    yr = op.pos(r) - op.neg(r)
    return yc - yr, yc + yr


def _relu_relax(lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CROWN ReLU relaxation: (upper slope, upper intercept, lower slope) for pre-activation bounds."""
    active = lo >= 0
    dead = up <= 0
    unstable = ~(active | dead)
    den = torch.where(unstable, up - lo, torch.ones_like(up))
    su = torch.where(active, torch.ones_like(up), torch.where(unstable, up / den, torch.zeros_like(up)))
    bu = torch.where(unstable, -su * lo, torch.zeros_like(up))
    sl = torch.where(active, torch.ones_like(up), torch.where(unstable & (up >= -lo), torch.ones_like(up), torch.zeros_like(up)))
    return su, bu, sl


def _maxpool_relax(op: _MaxPool, lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(index of the lower-bound input, dominant mask, constant upper) per output, shapes (N, C, L)."""
    wl = op.windows(lo, -math.inf)
    wu = op.windows(up, -math.inf)
    idx = wl.argmax(2)  # (N, C, L)
    lj = wl.gather(2, idx.unsqueeze(2)).squeeze(2)
    others = wu.scatter(2, idx.unsqueeze(2), -math.inf).amax(2)
    dominant = lj >= others
    cu = wu.amax(2)
    return idx, dominant, cu


def _ibp_step(op, lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    if isinstance(op, _Affine):
        return _ibp_affine(op, lo, up)
    if isinstance(op, _ReLU):
        return lo.clamp(min=0), up.clamp(min=0)
    n = lo.shape[0]
    shape = (n, *op.out_shape)
    return (op.windows(lo, -math.inf).amax(2).view(shape), op.windows(up, -math.inf).amax(2).view(shape))


def _input_bounds(inp: BoxSet | ThreatBall) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(inp, ThreatBall):
        return inp.interval()
    return inp.lower.amin(1), inp.upper.amax(1)


def _prefix_bounds(ops: list, inp: BoxSet | ThreatBall, chunk: int = 16) -> tuple[int, torch.Tensor, torch.Tensor]:  # type: ignore[type-arg]
    """Exact-per-box bounds through the leading affine layers: (number of layers, lower, upper).

    For a union of K boxes each box goes through the affine prefix separately and the max/min is
    taken after it (Semantify-NN's implicit splitting at the first layer); for an l_p ball the
    first ``Linear`` (after an optional ``Flatten``) is bounded with the dual norm.
    """
    j = 0
    while j < len(ops) and isinstance(ops[j], _Affine):
        j += 1
    if isinstance(inp, ThreatBall):
        if inp.p != math.inf:
            k = 0
            while k < j and isinstance(ops[k].fwd, (nn.Flatten, nn.Identity)):
                k += 1
            if k < j and isinstance(ops[k].fwd, nn.Linear):
                w = ops[k].fwd.weight
                x = inp.center
                for op in ops[:k]:
                    x = op.fwd(x)
                yc = ops[k].fwd(x)
                q = _dual(inp.p)
                rad = inp.eps * (w.abs().amax(1) if q == math.inf else w.norm(p=q, dim=1))
                lo, up = yc - rad, yc + rad
                if inp.clip:  # also bound the layer over the ball's clipped bounding box
                    blo, bup = _input_bounds(inp)
                    for op in ops[: k + 1]:
                        blo, bup = _ibp_affine(op, blo, bup)
                    lo, up = torch.maximum(lo, blo), torch.minimum(up, bup)
                for op in ops[k + 1: j]:
                    lo, up = _ibp_affine(op, lo, up)
                return j, lo, up
        lo, up = _input_bounds(inp)
        for op in ops[:j]:
            lo, up = _ibp_affine(op, lo, up)
        return j, lo, up
    n, kk = inp.lower.shape[:2]
    lo_all: torch.Tensor | None = None
    up_all: torch.Tensor | None = None
    for s in range(0, kk, chunk):
        lo = inp.lower[:, s: s + chunk].reshape(-1, *inp.input_shape)
        up = inp.upper[:, s: s + chunk].reshape(-1, *inp.input_shape)
        for op in ops[:j]:
            lo, up = _ibp_affine(op, lo, up)
        m = lo.shape[0] // n
        lo, up = lo.view(n, m, *lo.shape[1:]).amin(1), up.view(n, m, *up.shape[1:]).amax(1)
        lo_all = lo if lo_all is None else torch.minimum(lo_all, lo)
        up_all = up if up_all is None else torch.maximum(up_all, up)
    assert lo_all is not None and up_all is not None
    return j, lo_all, up_all


# ---------------------------------------------------------------------------------------------
# Backward (CROWN) and forward-mode linear bounds


def _backward(ops: list, upto: int, a: torch.Tensor, pre: dict[int, tuple[torch.Tensor, torch.Tensor]], inp: BoxSet | ThreatBall) -> Bounds:  # type: ignore[type-arg]
    """CROWN bounds of ``a . z_upto`` (z_upto = output of ops[upto]); a (N, S, *out_shape)."""
    n, s = a.shape[:2]
    au, al = a, a
    cu = torch.zeros(n, s, dtype=a.dtype, device=a.device)
    cl = torch.zeros_like(cu)
    for j in range(upto, -1, -1):
        op = ops[j]
        if isinstance(op, _Affine):
            bm = op.bias_map(a)
            cu = cu + (au * bm).flatten(2).sum(-1)
            cl = cl + (al * bm).flatten(2).sum(-1)
            au = op.transpose(au.reshape(n * s, *op.out_shape)).reshape(n, s, *op.in_shape)
            al = op.transpose(al.reshape(n * s, *op.out_shape)).reshape(n, s, *op.in_shape)
        elif isinstance(op, _ReLU):
            lo, up = pre[j]
            su, bu, sl = (t.unsqueeze(1) for t in _relu_relax(lo, up))
            cu = cu + (au.clamp(min=0) * bu).flatten(2).sum(-1)
            cl = cl + (al.clamp(max=0) * bu).flatten(2).sum(-1)
            au = au.clamp(min=0) * su + au.clamp(max=0) * sl
            al = al.clamp(min=0) * sl + al.clamp(max=0) * su
        else:  # max-pool
            lo, up = pre[j]
            idx, dom, cmax = _maxpool_relax(op, lo, up)  # (N, C, L)
            c_out = op.out_shape[0]
            au_f = au.reshape(n, s, c_out, -1)
            al_f = al.reshape(n, s, c_out, -1)
            idx_e, dom_e, cmax_e = idx.unsqueeze(1), dom.unsqueeze(1), cmax.unsqueeze(1)
            # upper bound of a . y: a > 0 uses y's upper relaxation (z_idx if dominant else const), a < 0 uses z_idx
            pu = au_f.clamp(min=0)
            cu = cu + (pu * torch.where(dom_e, torch.zeros_like(cmax_e), cmax_e)).flatten(2).sum(-1)
            coef_u = torch.where(dom_e, pu, torch.zeros_like(pu)) + au_f.clamp(max=0)
            nl = al_f.clamp(max=0)
            cl = cl + (nl * torch.where(dom_e, torch.zeros_like(cmax_e), cmax_e)).flatten(2).sum(-1)
            coef_l = torch.where(dom_e, nl, torch.zeros_like(nl)) + al_f.clamp(min=0)
            ie = idx_e.expand(n, s, *idx.shape[1:]).reshape(n * s, *idx.shape[1:])
            au = op.scatter(coef_u.reshape(n * s, *coef_u.shape[2:]), ie).reshape(n, s, *op.in_shape)
            al = op.scatter(coef_l.reshape(n * s, *coef_l.shape[2:]), ie).reshape(n, s, *op.in_shape)
    return Bounds(_concretize(al, inp, upper=False) + cl, _concretize(au, inp, upper=True) + cu)


@dataclass
class _Lin:
    """Forward-mode linear bounds: al . x + bl <= z <= au . x + bu, coefficients (N, d, *shape)."""

    al: torch.Tensor
    bl: torch.Tensor
    au: torch.Tensor
    bu: torch.Tensor

    def concretize(self, inp: BoxSet) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = self.al.shape[:2]
        shape = self.bl.shape[1:]
        al = self.al.reshape(n, d, -1).transpose(1, 2)
        au = self.au.reshape(n, d, -1).transpose(1, 2)
        lo = _concretize(al, inp, upper=False).view(n, *shape) + self.bl
        up = _concretize(au, inp, upper=True).view(n, *shape) + self.bu
        return lo, up


def _forward_step(op, lin: _Lin, lo_in: torch.Tensor, up_in: torch.Tensor) -> _Lin:  # type: ignore[no-untyped-def]
    n, d = lin.al.shape[:2]
    if isinstance(op, _Affine):
        def apply(f, t):  # type: ignore[no-untyped-def]
            return f(t.reshape(n * d, *t.shape[2:])).reshape(n, d, *op.out_shape)
        bm = op.bias_map(lin.bl)
        al = apply(op.pos, lin.al) + apply(op.neg, lin.au)
        au = apply(op.pos, lin.au) + apply(op.neg, lin.al)
        bl = op.pos(lin.bl) + op.neg(lin.bu) + bm
        bu = op.pos(lin.bu) + op.neg(lin.bl) + bm
        return _Lin(al, bl, au, bu)
    if isinstance(op, _ReLU):
        su, bu_, sl = _relu_relax(lo_in, up_in)
        return _Lin(lin.al * sl.unsqueeze(1), lin.bl * sl, lin.au * su.unsqueeze(1), lin.bu * su + bu_)
    idx, dom, cmax = _maxpool_relax(op, lo_in, up_in)
    c_out = op.out_shape[0]

    def pick(t: torch.Tensor, lead: int) -> torch.Tensor:
        w = op.windows(t.reshape(-1, *op.in_shape), 0.0)  # (M, C, kk, L)
        ii = idx.repeat_interleave(lead, 0) if lead > 1 else idx
        return w.gather(2, ii.unsqueeze(2)).squeeze(2)

    al = pick(lin.al, d).view(n, d, c_out, -1)
    bl = pick(lin.bl, 1).view(n, c_out, -1)
    au_p = pick(lin.au, d).view(n, d, c_out, -1)
    bu_p = pick(lin.bu, 1).view(n, c_out, -1)
    au = torch.where(dom.unsqueeze(1), au_p, torch.zeros_like(au_p))
    bu = torch.where(dom, bu_p, cmax)
    sh = op.out_shape
    return _Lin(al.reshape(n, d, *sh), bl.reshape(n, *sh), au.reshape(n, d, *sh), bu.reshape(n, *sh))


# ---------------------------------------------------------------------------------------------
# Public API


def margin_spec(num_classes: int, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Spec matrices C with rows e_y - e_t: (N, S, num_classes).

    Args:
        num_classes: number of logits.
        labels: (N,) predicted / true classes y.
        targets: (N,) single targets t (S = 1); None for all t != y (S = num_classes - 1).
    """
    n = labels.shape[0]
    eye = torch.eye(num_classes, device=labels.device)
    if targets is not None:
        return (eye[labels] - eye[targets]).unsqueeze(1)
    rows = []
    for i in range(n):
        others = [t for t in range(num_classes) if t != int(labels[i])]
        rows.append(eye[labels[i]].unsqueeze(0) - eye[others])
    return torch.stack(rows)


def compute_bounds(
    layers: nn.Module | list[nn.Module],
    inp: BoxSet | ThreatBall,
    spec: torch.Tensor | None = None,
    method: str = "crown",
    *,
    forward_max_dim: int = 16,
    crown_max_neurons: int = 512,
) -> Bounds:
    """Bounds on ``spec @ f(x)`` for every x in the input set.

    Args:
        layers: an ``nn.Sequential`` (or list) of supported layers, or a robrep model
            (converted with :func:`to_sequential`). Put it in eval mode first.
        inp: the input set: :class:`BoxSet` (:func:`box`), or :class:`ThreatBall` (:func:`ball`:
            a threat model around the images, with the [0,1] box; :func:`LpBall`: without it).
        spec: (N, S, out_dim) linear specification (e.g. :func:`margin_spec`); None for the outputs.
        method: ``"ibp"`` or ``"crown"``.
        forward_max_dim: use forward-mode linear bounds for intermediate layers when the input has
            at most this many dimensions (cheap and tight for the SP-layers' theta input).
        crown_max_neurons: otherwise compute intermediate pre-activation bounds by backward CROWN
            for layers with at most this many neurons, and IBP for larger ones.

    Returns:
        :class:`Bounds` with (N, S) tensors.
    """
    if method not in ("ibp", "crown"):
        raise InputError(f"method must be 'ibp' or 'crown', got {method!r}")
    ops = _build(layers, inp.input_shape)
    if not ops:
        raise InputError("the network has no layers")
    n = inp.n
    out_shape = ops[-1].out_shape if isinstance(ops[-1], (_Affine, _MaxPool)) else None
    j0, lo, up = _prefix_bounds(ops, inp)
    shapes = []
    shape = inp.input_shape
    for op in ops:
        if isinstance(op, (_Affine, _MaxPool)):
            shape = op.out_shape
        shapes.append(shape)
    if out_shape is None:
        out_shape = shapes[-1]
    pre: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    d_in = int(torch.tensor(inp.input_shape).prod().item())
    use_fwd = method == "crown" and isinstance(inp, BoxSet) and inp.lower.shape[1] == 1 and d_in <= forward_max_dim
    lin: _Lin | None = None
    if use_fwd:
        assert isinstance(inp, BoxSet)
        eye = torch.eye(d_in, dtype=inp.lower.dtype, device=inp.lower.device).view(1, d_in, *inp.input_shape).expand(n, -1, *[-1] * len(inp.input_shape))
        zero = torch.zeros((n, *inp.input_shape), dtype=inp.lower.dtype, device=inp.lower.device)
        lin = _Lin(eye, zero, eye, zero)
        for op in ops[:j0]:
            lin = _forward_step(op, lin, zero, zero)
    # bounds of the output of ops[j0-1] (or of the input if j0 == 0)
    cur = (lo, up)
    last_fold = spec is not None and isinstance(ops[-1], _Affine) and isinstance(ops[-1].fwd, nn.Linear) and len(ops) > j0
    for j in range(j0, len(ops)):
        op = ops[j]
        if j == len(ops) - 1 and method == "ibp" and last_fold:
            break
        if isinstance(op, (_ReLU, _MaxPool)):
            lo_in, up_in = cur
            if method == "crown" and j > 0:
                if lin is not None:
                    fl, fu = lin.concretize(inp)  # type: ignore[arg-type]
                    lo_in, up_in = torch.maximum(lo_in, fl), torch.minimum(up_in, fu)
                elif (j - 1 >= j0 and isinstance(ops[j - 1], _Affine)
                      and int(torch.tensor(shapes[j - 1]).prod().item()) <= crown_max_neurons):
                    k = int(torch.tensor(shapes[j - 1]).prod().item())
                    eye = torch.eye(k, dtype=lo_in.dtype, device=lo_in.device).view(1, k, *shapes[j - 1]).expand(n, -1, *[-1] * len(shapes[j - 1]))
                    b = _backward(ops, j - 1, eye, pre, inp)
                    lo_in = torch.maximum(lo_in, b.lower.view(n, *shapes[j - 1]))
                    up_in = torch.minimum(up_in, b.upper.view(n, *shapes[j - 1]))
                up_in = torch.maximum(up_in, lo_in)  # guard against rounding
            pre[j] = (lo_in, up_in)
            cur = _ibp_step(op, lo_in, up_in)
            if lin is not None:
                lin = _forward_step(op, lin, lo_in, up_in)
        else:
            cur = _ibp_step(op, *cur)
            if lin is not None:
                lin = _forward_step(op, lin, cur[0], cur[1])
    if method == "ibp":
        if last_fold:
            assert spec is not None
            w, b = ops[-1].fwd.weight, ops[-1].fwd.bias
            cw = torch.einsum("nso,oi->nsi", spec, w)
            cb = torch.einsum("nso,o->ns", spec, b) if b is not None else 0.0
            c, r = (cur[0] + cur[1]) / 2, (cur[1] - cur[0]) / 2
            yc = torch.einsum("nsi,ni->ns", cw, c) + cb
            yr = torch.einsum("nsi,ni->ns", cw.abs(), r)
            return Bounds(yc - yr, yc + yr)
        lo_o, up_o = cur[0].reshape(n, -1), cur[1].reshape(n, -1)
        if spec is None:
            return Bounds(lo_o, up_o)
        c, r = (lo_o + up_o) / 2, (up_o - lo_o) / 2
        return Bounds(torch.einsum("nso,no->ns", spec, c) - torch.einsum("nso,no->ns", spec.abs(), r),
                      torch.einsum("nso,no->ns", spec, c) + torch.einsum("nso,no->ns", spec.abs(), r))
    k = int(torch.tensor(out_shape).prod().item())
    if spec is None:
        a = torch.eye(k, dtype=lo.dtype, device=lo.device).view(1, k, *out_shape).expand(n, -1, *[-1] * len(out_shape))
    else:
        a = spec.to(lo.dtype).reshape(n, spec.shape[1], *out_shape)
    return _backward(ops, len(ops) - 1, a, pre, inp)


def ibp(layers: nn.Module | list[nn.Module], inp: BoxSet | ThreatBall, spec: torch.Tensor | None = None) -> Bounds:
    """Interval bound propagation (Gowal et al. 2018): ``compute_bounds(..., method="ibp")``."""
    return compute_bounds(layers, inp, spec, "ibp")


def crown(layers: nn.Module | list[nn.Module], inp: BoxSet | ThreatBall, spec: torch.Tensor | None = None, **kw: int) -> Bounds:
    """CROWN linear relaxation (Zhang et al. 2018): ``compute_bounds(..., method="crown")``."""
    return compute_bounds(layers, inp, spec, "crown", **kw)
