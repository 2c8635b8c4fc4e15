"""Semantic robustness: verified ranges (input splitting) and attacked ranges (grid + gradient).

Mohapatra et al., *Towards Verifying Robustness of Neural Networks Against A Family of Semantic
Perturbations* (Semantify-NN, CVPR 2020), Sec. 3-4; official ``main_semantic_*.py`` and
``main_attack.py``.

- **Verification, explicit splitting** (colour and brightness/contrast): [-eps, eps] is cut into
  intervals of width ``delta``; each interval is a theta-box fed to the SP-layers in front of the
  network, and bounded with CROWN (or IBP). Going outward from 0 on each side, the verified
  range ends at the first interval whose margin lower bound is <= 0.
- **Verification, implicit splitting** (rotation): each interval is further cut into ``subdiv``
  pieces; each piece gives a per-pixel box (:func:`~robrep.certify.semantic.rotation_boxes`) and
  the bound of the interval takes the max/min over the pieces at the first layer and at every
  linear concretization (a union of boxes, :class:`~robrep.certify.bound_propagation.BoxSet`).
- **Attack** (upper bound on the safe range): a grid over theta (step ``attack_delta``) and a
  projected signed-gradient search on theta; the attacked range on each side ends at the
  smallest |theta| found that misclassifies.

The specification is untargeted: the margin f_y - f_t must be positive for *every* t != y
(stronger than the reference code's default ``top2`` target, so verified <= attacked holds
exactly). Ranges are reported per side (``lo <= 0 <= hi``) and as the symmetric radius
min(-lo, hi).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import InputError
from .bound_propagation import BoxSet, box, compute_bounds, margin_spec, to_sequential
from .semantic import SEMANTIC_TRANSFORMS
from .semantic_encodings import rotation_boxes, sp_layers

__all__ = [
    "RangeResult",
    "SemanticImageResult",
    "SemanticSummary",
    "attack_range",
    "gradient_attack",
    "grid_attack",
    "semantic_certify",
    "summarize_semantic",
    "verify_range",
]


@dataclass(frozen=True)
class RangeResult:
    """A contiguous parameter range ``[lo, hi]`` around 0 (``lo <= 0 <= hi``) for one image.

    Attributes:
        lo, hi: range ends in the transform's units.
        seconds: wall time spent.
        calls: bound computations (verification) or model evaluations (attack) used.
    """

    lo: float
    hi: float
    seconds: float
    calls: int

    @property
    def radius(self) -> float:
        """The symmetric range min(-lo, hi)."""
        return min(-self.lo, self.hi)


def _intervals(eps: float, delta: float) -> list[tuple[float, float]]:
    n = max(1, math.ceil(eps / delta - 1e-9))
    return [(t * delta, min((t + 1) * delta, eps)) for t in range(n)]


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def verify_range(
    model: nn.Module,
    image: torch.Tensor,
    label: int,
    transform: str,
    eps: float,
    delta: float,
    *,
    method: str = "crown",
    subdiv: int = 1,
    batch: int = 8,
    seq: nn.Sequential | None = None,
    crown_max_neurons: int = 512,
) -> RangeResult:
    """Verified range of ``transform`` for one image by explicit (and, for rotation, implicit) splitting.

    Args:
        model: a robrep model (inputs in [0,1]) or an ``nn.Sequential`` taking [0,1] images;
            converted with :func:`~robrep.certify.bound_propagation.to_sequential`. Must be in eval mode.
        image: (C, H, W) in [0, 1].
        label: the class that must stay the top logit.
        transform: a :data:`~robrep.certify.semantic.SEMANTIC_TRANSFORMS` name.
        eps: the largest |theta| searched.
        delta: interval width of the explicit splitting.
        method: ``"crown"`` or ``"ibp"``.
        subdiv: implicit sub-intervals per interval (rotation only; 1 = none).
        batch: intervals bounded together per side.
        seq: the converted network (to reuse across images).
        crown_max_neurons: see :func:`~robrep.certify.bound_propagation.compute_bounds`.

    Returns:
        :class:`RangeResult` with ``lo``/``hi`` multiples of ``delta`` (or +-eps): every theta in
        [lo, hi] is certified to keep ``label`` (0-width if theta = 0 is not).
    """
    tr = SEMANTIC_TRANSFORMS.get(transform)
    _check_args(image, tr.channels, eps, delta, tr.max_eps)
    if subdiv < 1:
        raise InputError(f"subdiv must be >= 1, got {subdiv}")
    t0 = time.perf_counter()
    net = seq if seq is not None else to_sequential(model)
    with torch.no_grad():
        ncls = int(net(image.unsqueeze(0)).shape[1])
    sp = list(sp_layers(transform, image)) if tr.encoding == "sp" else []
    ivs = _intervals(eps, delta)
    ends = {1: 0.0, -1: 0.0}
    calls = 0
    for sign in (1, -1):
        for s in range(0, len(ivs), batch):
            chunk = ivs[s: s + batch]
            lows = [min(sign * a, sign * b) for a, b in chunk]
            highs = [max(sign * a, sign * b) for a, b in chunk]
            if tr.encoding == "sp":
                inp: BoxSet = box(torch.tensor(lows, dtype=image.dtype, device=image.device).view(-1, 1),
                                  torch.tensor(highs, dtype=image.dtype, device=image.device).view(-1, 1))
                layers: list[nn.Module] = sp + list(net)
            else:
                los, ups = zip(*(rotation_boxes(image, lo, hi, subdiv) for lo, hi in zip(lows, highs)))
                inp = BoxSet(torch.stack(los), torch.stack(ups))
                layers = list(net)
            spec = margin_spec(ncls, torch.full((len(chunk),), int(label), device=image.device))
            with torch.no_grad():
                b = compute_bounds(layers, inp, spec, method, crown_max_neurons=crown_max_neurons)
            calls += 1
            ok = (b.lower.amin(1) > 0).tolist()
            stop = False
            for (_a, bnd), good in zip(chunk, ok):
                if not good:
                    stop = True
                    break
                ends[sign] = bnd
            if stop:
                break
    return RangeResult(-ends[-1], ends[1], time.perf_counter() - t0, calls)


def _check_args(image: torch.Tensor, channels: int | None, eps: float, delta: float, max_eps: float) -> None:
    if image.dim() != 3:
        raise InputError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    if channels is not None and image.shape[0] != channels:
        raise InputError(f"this transform needs {channels}-channel images, got {image.shape[0]}")
    if not 0 < delta <= eps:
        raise InputError(f"need 0 < delta <= eps, got delta={delta}, eps={eps}")
    if eps > max_eps:
        raise InputError(f"eps={eps} exceeds this transform's supported range {max_eps}")


def grid_attack(model: nn.Module, image: torch.Tensor, label: int, transform: str, eps: float, delta: float, *, batch: int = 256) -> RangeResult:
    """Grid search over theta = +-t delta (Semantify-NN ``main_attack.py``).

    On each side the range ends at the first grid point that is misclassified (an upper bound on
    the safe range), or at +-eps if none is.

    Args:
        model: a model taking [0,1] images.
        image: (C, H, W) in [0, 1].
        label: the class to keep.
        transform: transform name.
        eps: the largest |theta| tried.
        delta: grid step.
        batch: images per forward pass.

    Returns:
        :class:`RangeResult`.
    """
    tr = SEMANTIC_TRANSFORMS.get(transform)
    _check_args(image, tr.channels, eps, delta, tr.max_eps)
    t0 = time.perf_counter()
    n = max(1, math.ceil(eps / delta - 1e-9))
    grid = torch.tensor([min((t + 1) * delta, eps) for t in range(n)], dtype=image.dtype, device=image.device)
    ends = {}
    calls = 0
    for sign in (1, -1):
        ends[sign] = eps
        for s in range(0, n, batch):
            th = sign * grid[s: s + batch]
            pred = _predict(model, tr(image.unsqueeze(0).expand(len(th), -1, -1, -1), th))
            calls += len(th)
            bad = (pred != label).nonzero()
            if len(bad):
                ends[sign] = float(grid[s + int(bad[0])])
                break
    return RangeResult(-ends[-1], ends[1], time.perf_counter() - t0, calls)


def gradient_attack(
    model: nn.Module,
    image: torch.Tensor,
    label: int,
    transform: str,
    eps: float,
    *,
    starts: int = 8,
    steps: int = 20,
    generator: torch.Generator | None = None,
) -> RangeResult:
    """Projected signed-gradient search on theta for the smallest misclassifying |theta| per side.

    From ``starts`` points on each side (evenly spaced in (0, eps], jittered with ``generator``),
    theta moves against the sign of d margin / d theta (margin = f_y - max_{t != y} f_t) while
    the prediction is correct and towards 0 once it is wrong (so iterates settle on the decision
    boundary), with a step shrinking linearly from eps / (2 starts), projected to the side's
    interval; every misclassified iterate is a witness, and the range ends at the smallest
    |theta| witnessed (else eps).

    Args:
        model: a model taking [0,1] images.
        image: (C, H, W) in [0, 1].
        label: the class to keep.
        transform: transform name (differentiable in theta).
        eps: the largest |theta| searched.
        starts: starting points per side.
        steps: gradient steps.
        generator: randomness of the start jitter.

    Returns:
        :class:`RangeResult`.
    """
    # Not robrep.attacks.pgd: the search runs over the transform parameter theta (one scalar per
    # start, in the interval [0, eps] of one side), not over images in an l_p ball and [0,1]; its
    # step switches per start between descending the margin (still correct) and moving towards
    # theta = 0 (already wrong: boundary seeking), with a linearly shrinking step; and what it
    # returns is the smallest misclassifying |theta| seen, not a worst-case input.
    tr = SEMANTIC_TRANSFORMS.get(transform)
    _check_args(image, tr.channels, eps, eps, tr.max_eps)
    t0 = time.perf_counter()
    ends = {}
    calls = 0
    x = image.unsqueeze(0).expand(starts, -1, -1, -1)
    for sign in (1, -1):
        jitter = torch.rand(starts, generator=generator, dtype=image.dtype, device="cpu").to(image.device)
        th = (torch.arange(starts, dtype=image.dtype, device=image.device) + jitter) / starts * eps
        best = eps
        step0 = eps / (2 * starts)
        for k in range(steps + 1):
            th = th.detach().requires_grad_(True)
            out = model(tr(x, sign * th))
            calls += starts
            other = out.clone()
            other[:, label] = -math.inf
            margin = out[:, label] - other.amax(1)
            wrong = (out.argmax(1) != label)
            if bool(wrong.any()):
                best = min(best, float(th.detach()[wrong].min()))
            if k == steps:
                break
            (g,) = torch.autograd.grad(margin.sum(), th)
            step = step0 * (1 - k / steps)
            # correctly classified: descend the margin; misclassified: move towards 0 (boundary seeking)
            direction = torch.where(wrong, torch.ones_like(g), torch.sign(g))
            th = (th.detach() - step * direction).clamp(0.0, eps)
        ends[sign] = best
    return RangeResult(-ends[-1], ends[1], time.perf_counter() - t0, calls)


def attack_range(model: nn.Module, image: torch.Tensor, label: int, transform: str, eps: float, delta: float,
                 *, gradient: bool = True, generator: torch.Generator | None = None) -> RangeResult:
    """The tighter of :func:`grid_attack` and :func:`gradient_attack` on each side."""
    g = grid_attack(model, image, label, transform, eps, delta)
    if not gradient:
        return g
    d = gradient_attack(model, image, label, transform, eps, generator=generator)
    return RangeResult(max(g.lo, d.lo), min(g.hi, d.hi), g.seconds + d.seconds, g.calls + d.calls)


@dataclass(frozen=True)
class SemanticImageResult:
    """Per-image verified and attacked ranges.

    Attributes:
        index: image index in the evaluated set.
        label: true class.
        correct: whether the clean image is classified correctly (else both ranges are 0).
        verified: verified :class:`RangeResult`.
        attacked: attacked :class:`RangeResult`.
    """

    index: int
    label: int
    correct: bool
    verified: RangeResult
    attacked: RangeResult

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["verified"]["radius"] = self.verified.radius
        d["attacked"]["radius"] = self.attacked.radius
        return d


@dataclass(frozen=True)
class SemanticSummary:
    """Means over the correctly classified images.

    Attributes:
        transform, method: what was run.
        n, n_correct: images evaluated / correctly classified.
        verified_radius, attacked_radius: mean symmetric ranges min(-lo, hi).
        verified_lo, verified_hi, attacked_lo, attacked_hi: mean range ends.
        verify_seconds, attack_seconds: mean time per image.
        violations: images whose verified range exceeds the attacked one on some side (must be 0).
    """

    transform: str
    method: str
    n: int
    n_correct: int
    verified_radius: float
    attacked_radius: float
    verified_lo: float
    verified_hi: float
    attacked_lo: float
    attacked_hi: float
    verify_seconds: float
    attack_seconds: float
    violations: int


def summarize_semantic(results: Sequence[SemanticImageResult], transform: str, method: str) -> SemanticSummary:
    """Average :class:`SemanticImageResult` over the correctly classified images."""
    ok = [r for r in results if r.correct]
    m = max(1, len(ok))

    def mean(f) -> float:  # type: ignore[no-untyped-def]
        return sum(f(r) for r in ok) / m

    viol = sum(1 for r in ok if r.verified.hi > r.attacked.hi + 1e-9 or r.verified.lo < r.attacked.lo - 1e-9)
    return SemanticSummary(
        transform, method, len(results), len(ok),
        mean(lambda r: r.verified.radius), mean(lambda r: r.attacked.radius),
        mean(lambda r: r.verified.lo), mean(lambda r: r.verified.hi),
        mean(lambda r: r.attacked.lo), mean(lambda r: r.attacked.hi),
        mean(lambda r: r.verified.seconds), mean(lambda r: r.attacked.seconds), viol,
    )


def semantic_certify(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    transform: str,
    eps: float,
    delta: float,
    *,
    method: str = "crown",
    subdiv: int = 1,
    attack_delta: float | None = None,
    gradient: bool = True,
    seed: int = 0,
    batch: int = 8,
    verify: bool = True,
    progress=None,  # type: ignore[no-untyped-def]
) -> list[SemanticImageResult]:
    """Verified and attacked ranges of ``transform`` for each image (Semantify-NN protocol).

    Args:
        model: robrep model (inputs in [0,1]), eval mode.
        x: (N, C, H, W) images in [0, 1].
        y: (N,) labels.
        transform: transform name.
        eps, delta: search range and explicit interval width.
        method: ``"crown"`` or ``"ibp"``.
        subdiv: implicit sub-intervals (rotation).
        attack_delta: grid step of the attack (default ``delta / 4``).
        gradient: also run the gradient attack.
        seed: seed of the gradient attack's start jitter.
        batch: intervals bounded together.
        verify: False to run the attack only.
        progress: optional callable(i, result) called after each image.

    Returns:
        One :class:`SemanticImageResult` per image.
    """
    if x.dim() != 4 or y.shape != (x.shape[0],):
        raise InputError(f"x must be (N, C, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    seq = to_sequential(model).eval()
    gen = torch.Generator().manual_seed(seed)
    ad = attack_delta if attack_delta is not None else delta / 4
    preds = _predict(model, x)
    out = []
    for i in range(x.shape[0]):
        lab = int(y[i])
        if int(preds[i]) != lab:
            zero = RangeResult(0.0, 0.0, 0.0, 0)
            res = SemanticImageResult(i, lab, False, zero, zero)
        else:
            att = attack_range(model, x[i], lab, transform, eps, ad, gradient=gradient, generator=gen)
            ver = (verify_range(model, x[i], lab, transform, eps, delta, method=method, subdiv=subdiv, batch=batch, seq=seq)
                   if verify else RangeResult(0.0, 0.0, 0.0, 0))
            res = SemanticImageResult(i, lab, True, ver, att)
        out.append(res)
        if progress is not None:
            progress(i, res)
    return out
