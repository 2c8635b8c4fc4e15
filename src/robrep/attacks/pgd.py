"""Projected gradient descent (Madry et al., ICLR 2018) on any differentiable objective.

Cost: ``steps`` forward+backward passes w.r.t. the input per restart (parameter gradients are
never computed), plus one forward pass for the last iterate when ``keep_best`` is on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..models.base import check_images
from ..threats import ThreatModel
from .losses import AttackLoss, get_loss, is_classification_loss

__all__ = ["AttackResult", "pgd", "fgsm", "default_step_size", "Tracker"]


@dataclass(frozen=True)
class AttackResult:
    """Outcome of an attack on a batch.

    Attributes:
        x_adv: (B, C, H, W) adversarial inputs, inside the threat model's ball and [0,1].
        loss: (B,) objective value at ``x_adv`` (the attack's own loss, un-negated).
        success: (B,) bool: misclassified (untargeted) or classified as the target (targeted);
            all False when the objective has no notion of success (e.g. representation loss).
        queries: forward passes per example spent.
    """

    x_adv: torch.Tensor
    loss: torch.Tensor
    success: torch.Tensor
    queries: int


def default_step_size(threat: ThreatModel, steps: int) -> float:
    """Madry et al.'s rule ``2.5 * eps / steps`` (reaches the boundary from any start)."""
    return 2.5 * threat.eps / max(steps, 1)


class Tracker:
    """Keeps, per example, the best iterate seen: a successful one beats an unsuccessful one;
    otherwise the larger (untargeted) or smaller (targeted) loss wins."""

    def __init__(self, x: torch.Tensor, targeted: bool) -> None:
        self.sign = -1.0 if targeted else 1.0
        self.x = x.clone()
        self.score = torch.full((x.shape[0],), float("-inf"), device=x.device)
        self.loss = torch.full((x.shape[0],), float("nan"), device=x.device)
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    @torch.no_grad()
    def update(self, x_new: torch.Tensor, loss: torch.Tensor, success: torch.Tensor, idx: torch.Tensor | None = None) -> None:
        score = self.sign * loss.detach().float()
        if idx is None:
            better = (success & ~self.success) | ((success == self.success) & (score > self.score))
            self.x[better] = x_new[better].detach()
            self.score[better], self.loss[better], self.success[better] = score[better], loss.detach().float()[better], success[better]
        else:
            cur_s, cur = self.success[idx], self.score[idx]
            better = (success & ~cur_s) | ((success == cur_s) & (score > cur))
            j = idx[better]
            self.x[j] = x_new[better].detach()
            self.score[j], self.loss[j], self.success[j] = score[better], loss.detach().float()[better], success[better]


def _success_fn(loss: str | AttackLoss, target: torch.Tensor, targeted: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    if is_classification_loss(loss) and target.dtype == torch.long and target.ndim == 1:
        if targeted:
            return lambda out: out.argmax(1) == target
        return lambda out: out.argmax(1) != target
    return lambda out: torch.zeros(out.shape[0], dtype=torch.bool, device=out.device)


def _validate(model: nn.Module, x: torch.Tensor, threat: ThreatModel, steps: int, restarts: int) -> None:
    check_images(x, model)
    if not isinstance(threat, ThreatModel):
        raise InputError(f"threat must be a ThreatModel (robrep.threat('linf', eps)), got {type(threat).__name__}")
    if steps < 0 or restarts < 1:
        raise InputError(f"steps must be >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 10,
    step_size: float | None = None,
    loss: str | AttackLoss = "ce",
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    keep_best: bool = True,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> AttackResult:
    """PGD: ``x_{k+1} = Proj(x_k + step * ascent_direction(grad))`` under ``threat``.

    Args:
        model: maps (B, C, H, W) inputs in [0,1] to outputs (logits, or a representation).
        x: clean inputs in [0,1].
        target: labels (B,) for classification losses, or target outputs (e.g. representations).
        threat: the perturbation set (:func:`robrep.threat`).
        steps: gradient steps per restart.
        step_size: step length in the threat's norm (default ``2.5 * eps / steps``).
        loss: name in ``ATTACK_LOSSES`` (``ce``, ``cw``, ``dlr``, ``repr``) or a callable
            ``(output, target) -> (B,)``.
        random_start: start from a uniform point of the ball (else from ``x``).
        restarts: independent runs; the best per example is kept.
        targeted: minimise the loss (reach the target) instead of maximising it.
        keep_best: return the best iterate per example (else the last one).
        generator: random source for the starts (reproducibility).
        check: validate inputs (shape, finite, [0,1]).

    Returns:
        :class:`AttackResult`.

    Shape:
        - x: (B, C, H, W); target: (B,) or (B, ...).
    """
    if check:
        _validate(model, x, threat, steps, restarts)
    loss_fn = get_loss(loss)
    success_of = _success_fn(loss, target, targeted)
    alpha = default_step_size(threat, steps) if step_size is None else float(step_size)
    sign = -1.0 if targeted else 1.0
    x = x.detach()
    tracker = Tracker(x, targeted)
    queries = 0
    for _ in range(restarts):
        x_adv = threat.random_start(x, generator) if (random_start and threat.eps > 0) else x.clone()
        for _k in range(steps):
            x_adv.requires_grad_(True)
            out = model(x_adv)
            lval = loss_fn(out, target)
            (grad,) = torch.autograd.grad(lval.sum() * sign, x_adv)
            queries += 1
            with torch.no_grad():
                x_cur = x_adv.detach()
                if keep_best:
                    tracker.update(x_cur, lval, success_of(out))
                x_adv = threat.project(x_cur + threat.ascent(grad, alpha), x)
        if keep_best or restarts > 1:
            with torch.no_grad():
                out = model(x_adv)
                tracker.update(x_adv, loss_fn(out, target), success_of(out))
                queries += 1
        else:
            with torch.no_grad():
                out = model(x_adv)
                return AttackResult(x_adv, loss_fn(out, target).float(), success_of(out), queries + 1)
    return AttackResult(tracker.x, tracker.loss, tracker.success, queries)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    step_size: float | None = None,
    random_start: bool = False,
    loss: str | AttackLoss = "ce",
    targeted: bool = False,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> AttackResult:
    """One signed-gradient step (Goodfellow et al. 2015); with ``random_start`` and
    ``step_size = 1.25 eps`` it is the FGSM-RS of Wong et al. (2020)."""
    alpha = threat.eps if step_size is None else step_size
    return pgd(model, x, target, threat, steps=1, step_size=alpha, loss=loss, random_start=random_start,
               targeted=targeted, keep_best=False, generator=generator, check=check)
