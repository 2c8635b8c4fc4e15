"""Input sets of bound propagation: boxes, unions of boxes, and threat-model balls.

:class:`BoxSet` is a box or a *union* of K boxes per example (Semantify-NN's implicit
splitting); :class:`ThreatBall` is the set a :class:`~robrep.threats.ThreatModel` allows around
each image -- the object the attacks use -- i.e. the l_p ball intersected with the [0,1] box
(:func:`ball`), or the plain ball (:func:`LpBall`). :func:`concretize` bounds a linear function
over a set (dual norm for balls, and the clipped bounding box where the [0,1] box applies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..threats import ThreatModel, threat

__all__ = ["BoxSet", "LpBall", "ThreatBall", "ball", "box", "concretize", "dual_exponent"]


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


def dual_exponent(p: float) -> float:
    return 1.0 if p == math.inf else (math.inf if p == 1.0 else p / (p - 1.0))


def concretize(a: torch.Tensor, inp: BoxSet | ThreatBall, upper: bool) -> torch.Tensor:
    """max (upper) or min over the input set of <a, x>; a (N, S, *input_shape) -> (N, S)."""
    n, s = a.shape[:2]
    af = a.reshape(n, s, -1)
    if isinstance(inp, ThreatBall):
        q = dual_exponent(inp.p)
        ax = torch.einsum("nsd,nd->ns", af, inp.center.reshape(n, -1))
        norm = af.abs().amax(-1) if q == math.inf else af.norm(p=q, dim=-1)
        v = ax + inp.eps * norm if upper else ax - inp.eps * norm
        if not inp.clip:
            return v
        vb = concretize(a, box(*inp.interval()), upper)  # the set lies in its clipped bounding box too
        return torch.minimum(v, vb) if upper else torch.maximum(v, vb)
    c = ((inp.lower + inp.upper) / 2).reshape(n, inp.lower.shape[1], -1)
    r = ((inp.upper - inp.lower) / 2).reshape(n, inp.lower.shape[1], -1)
    ac = torch.einsum("nsd,nkd->nsk", af, c)
    ar = torch.einsum("nsd,nkd->nsk", af.abs(), r)
    return (ac + ar).amax(-1) if upper else (ac - ar).amin(-1)
