"""The input-space optimizer of Engstrom et al. (2019): l2 steps along the normalized gradient.

This is MadryLab ``robustness``' ``L2Step`` as used by the ``robust_representations`` notebooks
(docs/methods/visualization.md), i.e. untargeted or targeted PGD in the l2 ball without random start, run by
:func:`robrep.attacks.pgd` with the objective as its loss::

    g_k     = grad_x [ m * loss(x_k) ]          m = -1 if targeted (minimise), +1 otherwise
    x_{k+1} = x_k + eta * g_k / ||g_k||_2       per example
    x_{k+1} = x_0 + renorm_{||.||_2 <= eps}(x_{k+1} - x_0), then clamp to [0, 1]

There is no random start; the start ``x_0`` itself is *not* clipped (the paper's noise seed
``0.5 + N(0, 0.05^2)`` is used as is for the first gradient), every later iterate lies in
[0, 1]. With ``use_best=False`` (the inversion notebook) the final iterate is returned, else the
best-loss iterate per example. A zero gradient gives a zero step (a saturated loss stops).

Also here: the straight-through ("fake") ReLU of the paper, for any model, through a
``TorchFunctionMode`` that makes the *last ReLU evaluated before the representation is read*
pass gradients as the identity (docs/methods/visualization.md, ``fake_relu=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..attacks.pgd import pgd
from ..errors import InputError
from ..models.base import RobrepModel, representation
from ..threats import L2Ball

__all__ = [
    "OptimizationResult",
    "optimize_inputs",
    "noise_seed",
    "FakeReLU",
    "as_representation",
    "PAPER_NOISE_STD",
]

PAPER_NOISE_STD = 0.05  # NOISE_SCALE = 20 in the notebooks: x0 = 0.5 + N(0, 1) / 20


@dataclass(frozen=True)
class OptimizationResult:
    """Outcome of :func:`optimize_inputs`.

    Attributes:
        x: (B, C, H, W) the returned iterate (final, or best with ``use_best``), in [0, 1]
            (when ``steps == 0`` it is the unclipped start).
        loss: (B,) objective value at ``x``.
        start: (B, C, H, W) the start ``x_0``.
        history: (steps + 1,) batch-mean loss at every iterate ``x_0 .. x_steps``.
    """

    x: torch.Tensor
    loss: torch.Tensor
    start: torch.Tensor
    history: torch.Tensor


def _check_start(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise InputError("the start must be a float tensor of shape (N, C, H, W)")
    if x.numel() == 0:
        raise InputError("the start is empty")
    if not torch.isfinite(x).all():
        raise InputError("the start contains NaN or inf")


def optimize_inputs(
    objective: Callable[[torch.Tensor], torch.Tensor],
    x_start: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    eps: float = 1000.0,
    targeted: bool = True,
    use_best: bool = False,
) -> OptimizationResult:
    """Minimise (``targeted``) or maximise a per-example objective over inputs in [0, 1].

    Engstrom et al. (2019), docs/methods/visualization.md: normalized-gradient l2 steps of length exactly
    ``step_size`` before projection onto the l2 ball of radius ``eps`` around the start and
    onto the [0, 1] box (:func:`robrep.attacks.pgd` with the objective as its loss).

    Args:
        objective: maps (B, C, H, W) inputs to (B,) losses, one per example (examples must be
            independent: the gradient is normalized per example).
        x_start: (B, C, H, W) start ``x_0`` (not clipped; finite).
        steps: number of gradient steps (>= 0).
        step_size: ``eta``, the l2 length of each step in pixel units (> 0).
        eps: l2 radius around the start (the paper uses 1000 or 500, i.e. inactive).
        targeted: minimise the objective (else maximise).
        use_best: return the best iterate per example instead of the final one.

    Returns:
        :class:`OptimizationResult`.
    """
    _check_start(x_start)
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    if not step_size > 0:
        raise InputError(f"step_size must be positive, got {step_size}")
    if not eps > 0:
        raise InputError(f"eps must be positive, got {eps}")
    x0 = x_start.detach()
    wrapped = _PerExample(objective)
    # PGD from the (unclipped) start, projected onto the l2 ball around it and onto [0, 1]
    res = pgd(wrapped, x0, x0.new_zeros(x0.shape[0]), L2Ball(float(eps)), steps=steps, step_size=float(step_size),
              loss=_identity_loss, random_start=False, targeted=targeted, keep_best=use_best, check=False)
    x = res.x_adv.detach()
    # the loss at the returned point in the objective's own dtype (PGD's tracker keeps float32)
    loss = wrapped.last if not use_best else objective(x).detach()
    return OptimizationResult(x=x, loss=loss, start=x0, history=torch.stack(wrapped.history).cpu())


def _identity_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out


class _PerExample(nn.Module):
    """The objective as a "model" for :func:`robrep.attacks.pgd` (its output is the loss):
    checks one value per example and records the batch-mean loss of every evaluated iterate."""

    def __init__(self, objective: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.objective = objective
        self.history: list[torch.Tensor] = []
        self.last = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lval = self.objective(x)
        if lval.shape != (x.shape[0],):
            raise InputError(f"the objective must return one value per example, shape ({x.shape[0]},), got {tuple(lval.shape)}")
        self.last = lval.detach()
        self.history.append(self.last.float().mean())
        return lval


def noise_seed(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, std: float = PAPER_NOISE_STD) -> torch.Tensor:
    """The paper's noise start ``0.5 + N(0, std^2)`` per pixel, *not* clipped (docs/methods/visualization.md).

    Args:
        shape: (N, C, H, W).
        generator: random source (its device is used to draw; the result goes to ``device``).
        device: where the result lives (default: the generator's device, else CPU).
        std: noise standard deviation (paper: 0.05).
    """
    gdev = generator.device if generator is not None else torch.device(device or "cpu")
    z = torch.randn(tuple(shape), generator=generator, device=gdev)
    return (0.5 + std * z).to(device or gdev)


# ---------------------------------------------------------------------------------------------
# straight-through ("fake") ReLU


class _Tape:
    def __init__(self) -> None:
        self.count = 0
        self.straight = -1


class _SwitchReLU(torch.autograd.Function):
    """ReLU forward; backward is the identity for the ReLU chosen (after the forward) as the
    straight-through one, the usual ``g * 1[x > 0]`` for every other."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, tape: _Tape, idx: int) -> torch.Tensor:  # type: ignore[override]
        ctx.tape, ctx.idx = tape, idx
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        if ctx.idx == ctx.tape.straight:
            return g, None, None
        return g * (x > 0).to(g.dtype), None, None


_RELUS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu_}


class _ReluMode(TorchFunctionMode):
    def __init__(self, tape: _Tape) -> None:
        super().__init__()
        self.tape = tape

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _RELUS:
            x = args[0] if args else kwargs["input"]
            idx = self.tape.count
            self.tape.count += 1
            return _SwitchReLU.apply(x, self.tape, idx)
        return func(*args, **kwargs)


class FakeReLU(nn.Module):
    """Wrap a representation map so that its last ReLU is straight-through (Engstrom et al.
    2019, ``fake_relu=True``; docs/methods/visualization.md).

    The forward value is unchanged. In the backward pass, the last ReLU evaluated before the
    representation is read (for ``penultimate`` of robrep nets and ResNets: the ReLU before the
    final pooling / linear layer) passes the gradient as the identity, so inactive units still
    receive gradient. ReLUs called through ``F.relu``, ``torch.relu``, ``Tensor.relu``,
    ``nn.ReLU`` (in-place variants included: they are run out of place) are recognised; other
    activations are left alone.

    Args:
        rep: maps (N, C, H, W) inputs in [0,1] to representations.
    """

    def __init__(self, rep: nn.Module) -> None:
        super().__init__()
        self.rep = rep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tape = _Tape()
        with _ReluMode(tape):
            z = self.rep(x)
        if tape.count == 0:
            raise InputError("fake_relu: no ReLU runs before this representation layer; use fake_relu=False")
        tape.straight = tape.count - 1
        return z


def as_representation(model: nn.Module, layer: str = "penultimate", fake_relu: bool = False) -> nn.Module:
    """The map ``x -> R(x)`` (N, D) used by the visualization operations.

    Args:
        model: a :class:`RobrepModel` (its ``layer`` is read through hooks) or any module that
            already maps [0,1] images to features (then ``layer`` is ignored).
        layer: ``"penultimate"``, ``"logits"`` or a module name (``robrep.list_layers``).
        fake_relu: make the last ReLU before the layer straight-through (:class:`FakeReLU`).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be an nn.Module, got {type(model).__name__}")
    rep: nn.Module = representation(model, layer, flatten=True) if isinstance(model, RobrepModel) else _Flatten(model)
    return FakeReLU(rep) if fake_relu else rep


class _Flatten(nn.Module):
    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x).flatten(1)
