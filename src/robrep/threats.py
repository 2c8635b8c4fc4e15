"""Threat models: the perturbation sets shared by attacks, training, vulnerability, SynBench
and certification.

A threat model is a frozen object: an lp ball of radius ``eps`` in pixel space ([0,1] images),
intersected with the [0,1] box. It knows its geometry (MadryLab's ``AttackerStep`` idea):
exact projection onto the ball, the steepest-ascent step for its norm, uniform random starts
and the dual norm (for closed forms such as ``eps * ||w||_*`` on linear models).

Projection onto ball-and-box is done as ball projection followed by box clipping. For an input
``x`` in the box, clipping only shrinks every coordinate of the perturbation towards 0, so the
result is always feasible (inside the ball *and* the box); for linf it is the exact projection
onto the intersection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from ._registry import Registry
from .errors import InputError

__all__ = ["THREATS", "ThreatModel", "LinfBall", "L2Ball", "L1Ball", "threat", "check_eps_units", "list_threats", "project_l1_ball"]


def _bshape(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-example (B,) tensor to broadcast against (B, ...)."""
    return t.view(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class ThreatModel:
    """An lp ball of radius ``eps`` (pixel units) intersected with the [0,1] box.

    Attributes:
        eps: radius, >= 0.
    """

    eps: float
    norm: ClassVar[str] = ""
    p: ClassVar[float] = 0.0

    def __post_init__(self) -> None:
        e = self.eps
        if not isinstance(e, (int, float)) or math.isnan(e) or e < 0 or math.isinf(e):
            raise InputError(f"eps must be a finite number >= 0, got {e!r}")

    def with_eps(self, eps: float) -> ThreatModel:
        return replace(self, eps=float(eps))

    # --- geometry -----------------------------------------------------------------------
    def norm_of(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-example norm (B,) of ``delta`` (B, ...)."""
        return delta.flatten(1).norm(p=self.p, dim=1)

    def dual_norm(self, w: torch.Tensor) -> torch.Tensor:
        """Dual norm along the last dimension (``max_{||d||<=1} w.d``)."""
        q = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[self.p]
        return w.norm(p=q, dim=-1)

    def project_delta(self, delta: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Euclidean projection of each example's perturbation onto the ball."""
        raise NotImplementedError

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Bring ``x_adv`` back into the ball around ``x`` and into [0,1]."""
        return (x + self.project_delta(x_adv - x)).clamp_(0.0, 1.0)

    def ascent(self, grad: torch.Tensor, step_size: float | torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """The steepest-ascent step of length ``step_size`` (in this norm) along ``grad``."""
        raise NotImplementedError

    def random_delta(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        """A perturbation drawn uniformly from the ball."""
        raise NotImplementedError

    def random_start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` plus a uniform random perturbation, clipped to [0,1]."""
        return (x + self.random_delta(x, generator)).clamp_(0.0, 1.0)

    def attack_start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The random start of iterative attacks (PGD): :meth:`random_start` unless a ball
        overrides it (l2: radius uniform in [0, eps], see :class:`L2Ball`)."""
        return self.random_start(x, generator)

    def contains(self, x_adv: torch.Tensor, x: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
        """Per-example bool: inside the ball (with tolerance) and the box."""
        inside = self.norm_of(x_adv - x) <= self.eps * (1 + tol) + tol
        box = (x_adv >= -tol).flatten(1).all(1) & (x_adv <= 1 + tol).flatten(1).all(1)
        return inside & box

    def describe(self) -> str:
        return f"{self.norm}(eps={self.eps:g})"

    def to_dict(self) -> dict[str, object]:
        return {"norm": self.norm, "eps": self.eps}


def _rand(shape: tuple[int, ...], x: torch.Tensor, generator: torch.Generator | None, kind: str) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    fn = torch.rand if kind == "u" else torch.randn
    return fn(shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


THREATS: Registry[type[ThreatModel]] = Registry("threat")


@THREATS.register("linf", help="l-infinity ball: |delta_i| <= eps")
@dataclass(frozen=True)
class LinfBall(ThreatModel):
    norm: ClassVar[str] = "linf"
    p: ClassVar[float] = math.inf

    def project_delta(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.clamp(-self.eps, self.eps)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # exact projection onto the intersection (both sets are boxes)
        return torch.max(torch.min(x_adv, x + self.eps), x - self.eps).clamp_(0.0, 1.0)

    def ascent(self, grad: torch.Tensor, step_size: float | torch.Tensor) -> torch.Tensor:
        s = step_size if isinstance(step_size, float) or step_size.ndim == 0 else _bshape(step_size, grad)
        return grad.sign() * s

    def random_delta(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return (2 * _rand(tuple(x.shape), x, generator, "u") - 1) * self.eps


@THREATS.register("l2", help="l2 ball: ||delta||_2 <= eps")
@dataclass(frozen=True)
class L2Ball(ThreatModel):
    norm: ClassVar[str] = "l2"
    p: ClassVar[float] = 2.0

    def project_delta(self, delta: torch.Tensor) -> torch.Tensor:
        n = delta.flatten(1).norm(dim=1)
        factor = torch.where(n > self.eps, self.eps / n.clamp_min(1e-12), torch.ones_like(n))
        return delta * _bshape(factor, delta)

    def ascent(self, grad: torch.Tensor, step_size: float | torch.Tensor) -> torch.Tensor:
        n = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        s = step_size if isinstance(step_size, float) else _bshape(step_size.expand(len(n)), grad)
        return grad / _bshape(n, grad) * s

    def random_delta(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, d = x.shape[0], x[0].numel()
        g = _rand(tuple(x.shape), x, generator, "n")
        r = _rand((b,), x, generator, "u").pow(1.0 / d) * self.eps
        return g / _bshape(g.flatten(1).norm(dim=1).clamp_min(1e-12), g) * _bshape(r, g)

    def attack_start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random direction at a radius uniform in [0, eps] (as torchattacks' PGDL2), not uniform
        in the ball's volume: in high dimension the latter puts every start at the surface
        (radius u^(1/d) eps), which measured weaker on an MNIST model (PGD-10, 3 restarts, eps 2:
        84.5 % robust accuracy vs 83.5 % from this start; docs/benchmarks/cpu-attacks.md)."""
        b = x.shape[0]
        g = _rand(tuple(x.shape), x, generator, "n")
        r = _rand((b,), x, generator, "u") * self.eps
        delta = g / _bshape(g.flatten(1).norm(dim=1).clamp_min(1e-12), g) * _bshape(r, g)
        return (x + delta).clamp_(0.0, 1.0)


def project_l1_ball(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Exact Euclidean projection of each row of ``v`` (B, D) onto the l1 ball, by sorting
    (Duchi et al., ICML 2008)."""
    if radius == 0:
        return torch.zeros_like(v)
    a = v.abs()
    inside = a.sum(1) <= radius
    mu = torch.sort(a, dim=1, descending=True).values
    cs = mu.cumsum(1)
    k = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    cond = mu - (cs - radius) / k > 0
    # cond holds on a prefix; rho is its last index
    rho = (cond * torch.arange(v.shape[1], device=v.device)).argmax(1, keepdim=True)
    theta = (cs.gather(1, rho) - radius) / (rho + 1).to(v.dtype)
    w = torch.sign(v) * (a - theta).clamp_min(0)
    return torch.where(inside[:, None], v, w)


@THREATS.register("l1", help="l1 ball: sum |delta_i| <= eps (sparse steps, exact projection by sorting)")
@dataclass(frozen=True)
class L1Ball(ThreatModel):
    """l1 ball. Steps follow SLIDE (Tramer & Boneh 2019): the sign of the top ``1 - sparsity``
    fraction of gradient coordinates, scaled to l1 length ``step_size``."""

    sparsity: float = 0.99
    norm: ClassVar[str] = "l1"
    p: ClassVar[float] = 1.0

    def project_delta(self, delta: torch.Tensor) -> torch.Tensor:
        return project_l1_ball(delta.flatten(1), self.eps).view_as(delta)

    def ascent(self, grad: torch.Tensor, step_size: float | torch.Tensor) -> torch.Tensor:
        g = grad.flatten(1)
        d = g.shape[1]
        k = max(1, int(round((1 - self.sparsity) * d)))
        thr = g.abs().topk(k, dim=1).values[:, -1:]
        mask = (g.abs() >= thr) & (g != 0)
        e = g.sign() * mask
        e = e / e.abs().sum(1, keepdim=True).clamp_min(1.0)
        s = step_size if isinstance(step_size, float) else _bshape(step_size.expand(len(g)), g)
        return e.view_as(grad) * s

    def random_delta(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # uniform in the l1 ball: signed Dirichlet(1,...,1) coordinates with one slack term
        b, d = x.shape[0], x[0].numel()
        e = -torch.log(_rand((b, d + 1), x, generator, "u").clamp_min(1e-12))
        sgn = torch.where(_rand((b, d), x, generator, "u") < 0.5, -1.0, 1.0).to(x.dtype)
        u = e[:, :d] / e.sum(1, keepdim=True) * sgn
        return (u * self.eps).view_as(x)


def check_eps_units(norm: str, eps: float | None) -> None:
    """Reject a user-given linf radius above 1 (the whole [0,1] box): almost always 8 meant 8/255.

    The threat classes accept any eps >= 0 (eps >= 1 is a valid, if trivial, ball); this check is
    for user entry points (the CLI, training configurations).
    """
    if norm == "linf" and eps is not None and isinstance(eps, (int, float)) and eps > 1:
        raise InputError(f"linf eps is in [0,1] pixel units, got {eps:g}; did you mean {eps:g}/255 = {eps / 255:.4f}?")


def threat(norm: str, eps: float, **kwargs: object) -> ThreatModel:
    """Build a threat model by name: ``threat("linf", 8/255)``."""
    key = {"inf": "linf", "Linf": "linf", "L2": "l2", "L1": "l1", "2": "l2", "1": "l1"}.get(norm, norm)
    cls = THREATS.get(key)
    try:
        return cls(float(eps), **kwargs)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"invalid eps {eps!r} for threat {norm!r}: give a number >= 0") from e


def list_threats() -> list[str]:
    return THREATS.names()
