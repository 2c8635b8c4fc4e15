"""Bound propagation through sequential ReLU networks: interval (IBP) and CROWN-style linear bounds.

Written for robrep (``auto_LiRPA`` does not install with robrep's torch). Supports any
``nn.Sequential`` of ``Linear``, ``Conv2d``, ``ReLU``, ``BatchNorm1d/2d`` (eval mode),
``MaxPool2d``, ``AvgPool2d``, ``Flatten``, ``Unflatten``, ``Identity``, robrep's ``Normalize`` and
the Semantify-NN SP-layers (:class:`~robrep.certify.semantic_encodings.ThetaToPixels`,
:class:`~robrep.certify.semantic_encodings.PixelMix`); :func:`to_sequential` rebuilds robrep's
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
from torch import nn

from ..errors import InputError
from .bound_layers import AffineOp, MaxPoolOp, ReLUOp, build_ops, to_sequential
from .input_sets import BoxSet, LpBall, ThreatBall, ball, box, concretize, dual_exponent

__all__ = ["BoxSet", "ThreatBall", "LpBall", "Bounds", "ball", "box", "compute_bounds", "ibp", "crown", "margin_spec",
           "to_sequential"]


@dataclass(frozen=True)
class Bounds:
    """Elementwise bounds ``lower <= f(x) <= upper`` for every x in the input set, each (N, S)."""

    lower: torch.Tensor
    upper: torch.Tensor


# ---------------------------------------------------------------------------------------------
# IBP


def _ibp_affine(op: AffineOp, lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def _maxpool_relax(op: MaxPoolOp, lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    if isinstance(op, AffineOp):
        return _ibp_affine(op, lo, up)
    if isinstance(op, ReLUOp):
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
    while j < len(ops) and isinstance(ops[j], AffineOp):
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
                q = dual_exponent(inp.p)
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
        if isinstance(op, AffineOp):
            bm = op.bias_map(a)
            cu = cu + (au * bm).flatten(2).sum(-1)
            cl = cl + (al * bm).flatten(2).sum(-1)
            au = op.transpose(au.reshape(n * s, *op.out_shape)).reshape(n, s, *op.in_shape)
            al = op.transpose(al.reshape(n * s, *op.out_shape)).reshape(n, s, *op.in_shape)
        elif isinstance(op, ReLUOp):
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
    return Bounds(concretize(al, inp, upper=False) + cl, concretize(au, inp, upper=True) + cu)


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
        lo = concretize(al, inp, upper=False).view(n, *shape) + self.bl
        up = concretize(au, inp, upper=True).view(n, *shape) + self.bu
        return lo, up


def _forward_step(op, lin: _Lin, lo_in: torch.Tensor, up_in: torch.Tensor) -> _Lin:  # type: ignore[no-untyped-def]
    n, d = lin.al.shape[:2]
    if isinstance(op, AffineOp):
        def apply(f, t):  # type: ignore[no-untyped-def]
            return f(t.reshape(n * d, *t.shape[2:])).reshape(n, d, *op.out_shape)
        bm = op.bias_map(lin.bl)
        al = apply(op.pos, lin.al) + apply(op.neg, lin.au)
        au = apply(op.pos, lin.au) + apply(op.neg, lin.al)
        bl = op.pos(lin.bl) + op.neg(lin.bu) + bm
        bu = op.pos(lin.bu) + op.neg(lin.bl) + bm
        return _Lin(al, bl, au, bu)
    if isinstance(op, ReLUOp):
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
    ops = build_ops(layers, inp.input_shape)
    if not ops:
        raise InputError("the network has no layers")
    n = inp.n
    out_shape = ops[-1].out_shape if isinstance(ops[-1], (AffineOp, MaxPoolOp)) else None
    j0, lo, up = _prefix_bounds(ops, inp)
    shapes = []
    shape = inp.input_shape
    for op in ops:
        if isinstance(op, (AffineOp, MaxPoolOp)):
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
    last_fold = spec is not None and isinstance(ops[-1], AffineOp) and isinstance(ops[-1].fwd, nn.Linear) and len(ops) > j0
    for j in range(j0, len(ops)):
        op = ops[j]
        if j == len(ops) - 1 and method == "ibp" and last_fold:
            break
        if isinstance(op, (ReLUOp, MaxPoolOp)):
            lo_in, up_in = cur
            if method == "crown" and j > 0:
                if lin is not None:
                    fl, fu = lin.concretize(inp)  # type: ignore[arg-type]
                    lo_in, up_in = torch.maximum(lo_in, fl), torch.minimum(up_in, fu)
                elif (j - 1 >= j0 and isinstance(ops[j - 1], AffineOp)
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
