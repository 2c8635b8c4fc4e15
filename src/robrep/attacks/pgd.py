"""Projected gradient descent (Madry et al., ICLR 2018) on any differentiable objective.

Cost: ``steps`` forward+backward passes w.r.t. the input per restart (parameter gradients are
never computed), plus one forward pass for the last iterate's loss and success;
:func:`pgd_perturb` (adversarial training) skips that pass and all bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._compile import maybe_compile
from ..errors import InputError
from ..models.base import check_images
from ..threats import LinfBall, ThreatModel
from .losses import AttackLoss, get_loss, is_classification_loss

__all__ = ["AttackResult", "pgd", "pgd_perturb", "fgsm", "default_step_size", "Tracker"]


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


def _bview(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.view(-1, *([1] * (ndim - 1)))


class Tracker:
    """Keeps, per example, the best iterate seen: a successful one beats an unsuccessful one;
    otherwise the larger (untargeted) or smaller (targeted) loss wins.

    Updates are branch-free selections (``torch.where`` with a (B, 1, 1, 1) mask, written in
    place): no boolean-mask gathers, no host synchronisation, no new image-sized buffers.
    """

    def __init__(self, x: torch.Tensor, targeted: bool) -> None:
        self.targeted = targeted
        self.sign = -1.0 if targeted else 1.0
        self.x = x.detach().clone()
        self.score = torch.full((x.shape[0],), float("-inf"), device=x.device)
        self.loss = torch.full((x.shape[0],), float("nan"), device=x.device)
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    @torch.no_grad()
    def update(self, x_new: torch.Tensor, loss: torch.Tensor, success: torch.Tensor, idx: torch.Tensor | None = None) -> None:
        """Offer ``x_new`` (with its per-example ``loss`` and ``success``) for the examples
        ``idx`` (all when None); each example keeps the better of its current and new point."""
        loss = loss.detach().float()
        score = -loss if self.targeted else loss
        x_new = x_new.detach()
        if idx is None:
            better = (success & ~self.success) | ((success == self.success) & (score > self.score))
            torch.where(_bview(better, x_new.ndim), x_new, self.x, out=self.x)
            torch.where(better, score, self.score, out=self.score)
            torch.where(better, loss, self.loss, out=self.loss)
            self.success |= success  # a success is never replaced by a failure
        else:
            cur_s, cur = self.success.index_select(0, idx), self.score.index_select(0, idx)
            better = (success & ~cur_s) | ((success == cur_s) & (score > cur))
            self.x.index_copy_(0, idx, torch.where(_bview(better, x_new.ndim), x_new, self.x.index_select(0, idx)))
            self.score.index_copy_(0, idx, torch.where(better, score, cur))
            self.loss.index_copy_(0, idx, torch.where(better, loss, self.loss.index_select(0, idx)))
            self.success.index_copy_(0, idx, cur_s | success)


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


def _start(x: torch.Tensor, threat: ThreatModel, randomized: bool, generator: torch.Generator | None) -> torch.Tensor:
    return threat.attack_start(x, generator) if randomized else x.clone()


def _iterate(
    net: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    x_adv: torch.Tensor,
    threat: ThreatModel,
    loss_fn: AttackLoss,
    alpha: float,
    steps: int,
    targeted: bool,
    on_point: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None,
) -> torch.Tensor:
    """``steps`` PGD steps from ``x_adv`` (a fresh tensor, updated in place); calls
    ``on_point(x_k, loss_k, output_k)`` for every iterate whose loss is computed (all but the
    last); returns the last iterate."""
    linf = isinstance(threat, LinfBall)
    if linf and steps > 0:  # the ball-and-box projection is a clamp between two fixed images
        lo = (x - threat.eps).clamp_(0.0, 1.0)
        hi = (x + threat.eps).clamp_(0.0, 1.0)
    for _k in range(steps):
        x_adv.requires_grad_(True)
        out = net(x_adv)
        lval = loss_fn(out, target)
        total = lval.sum()
        (grad,) = torch.autograd.grad(-total if targeted else total, x_adv)
        with torch.no_grad():
            x_adv = x_adv.detach()
            if on_point is not None:
                on_point(x_adv, lval, out)
            if linf:  # x + alpha*sign(g) (alpha*sign is exact), then the exact projection, in place
                x_adv.add_(grad.sign(), alpha=alpha).clamp_(lo, hi)
            else:
                x_adv = threat.project(x_adv + threat.ascent(grad, alpha), x)
    return x_adv.detach()


def _iterate_exit(
    net: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    x_adv: torch.Tensor,
    threat: ThreatModel,
    loss_fn: AttackLoss,
    alpha: float,
    steps: int,
    targeted: bool,
    tracker: Tracker,
    idx: torch.Tensor | None,
) -> None:
    """``steps`` PGD steps from ``x_adv`` (classification targets) that drop each example from
    the batch at its first success; every iterate whose loss is computed, the last one by a
    forward pass, is offered to ``tracker`` (rows ``idx`` of it, all when None)."""
    rows = torch.arange(x.shape[0], device=x.device) if idx is None else idx
    linf = isinstance(threat, LinfBall)
    if linf and steps > 0:
        lo = (x - threat.eps).clamp_(0.0, 1.0)
        hi = (x + threat.eps).clamp_(0.0, 1.0)
    for k in range(steps + 1):
        last = k == steps
        with torch.set_grad_enabled(not last):
            x_adv.requires_grad_(not last)
            out = net(x_adv)
            lval = loss_fn(out, target)
            if not last:
                total = lval.sum()
                (grad,) = torch.autograd.grad(-total if targeted else total, x_adv)
        with torch.no_grad():
            x_adv = x_adv.detach()
            pred = out.argmax(1)
            broke = pred == target if targeted else pred != target
            tracker.update(x_adv, lval, broke, rows)
            if last:
                break
            if bool(broke.any()):
                keep = ~broke
                if not bool(keep.any()):
                    break
                rows, x_adv, grad, x, target = rows[keep], x_adv[keep], grad[keep], x[keep], target[keep]
                if linf:
                    lo, hi = lo[keep], hi[keep]
            if linf:
                x_adv.add_(grad.sign(), alpha=alpha).clamp_(lo, hi)
            else:
                x_adv = threat.project(x_adv + threat.ascent(grad, alpha), x)


def pgd_perturb(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 10,
    step_size: float | None = None,
    loss: str | AttackLoss = "ce",
    random_start: bool = True,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    check: bool = True,
    compile: bool = False,
) -> torch.Tensor:
    """The last PGD iterate only (Madry et al. 2018), for adversarial training: exactly
    ``steps`` forward+backward passes w.r.t. the input, no best-iterate bookkeeping and no
    final forward pass. Equals ``pgd(..., keep_best=False, restarts=1).x_adv`` bit for bit.

    Returns:
        (B, C, H, W) adversarial inputs inside the ball and [0,1].
    """
    if check:
        _validate(model, x, threat, steps, 1)
    net = maybe_compile(model, compile)
    alpha = default_step_size(threat, steps) if step_size is None else float(step_size)
    x = x.detach()
    start = _start(x, threat, random_start and threat.eps > 0, generator)
    return _iterate(net, x, target, start, threat, get_loss(loss), alpha, steps, targeted, None)


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
    compile: bool = False,
    early_exit: bool = False,
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
        restarts: independent runs; the best per example is kept. Restarts after the first run
            only on the examples not yet successfully attacked (a success is final, so the
            success flags -- robust accuracy -- are those of running every restart on every
            example; the random starts are drawn for the whole batch, so the generator advances
            exactly as before).
        targeted: minimise the loss (reach the target) instead of maximising it.
        keep_best: return the best iterate per example (else the last one).
        generator: random source for the starts (reproducibility).
        check: validate inputs (shape, finite, [0,1]).
        compile: run the model through ``torch.compile`` (opt-in; compiled once per model).
        early_exit: drop each example from the batch at its first success (AutoAttack's early
            exit; labels or targets of a classification loss, with ``keep_best``; ignored
            otherwise). A success is final, so the success flags are those of the full run (up to
            the rounding differences of smaller batches); a broken example's ``x_adv`` and
            ``loss`` are those of its first successful iterate, and its passes stop there. For
            robust-accuracy verdicts; off by default.

    Returns:
        :class:`AttackResult`; ``queries`` counts the forward passes per example of the
        restarts run (``restarts * (steps + 1)`` at most).

    Cost: ``steps`` forward+backward passes w.r.t. the input per restart, plus one forward pass
    for the last iterate (its loss and success; with ``keep_best`` the other iterates' losses
    come free with their gradients). Use :func:`pgd_perturb` when only ``x_adv`` is needed.

    Shape:
        - x: (B, C, H, W); target: (B,) or (B, ...).
    """
    if check:
        _validate(model, x, threat, steps, restarts)
    net = maybe_compile(model, compile)
    loss_fn = get_loss(loss)
    alpha = default_step_size(threat, steps) if step_size is None else float(step_size)
    randomized = random_start and threat.eps > 0
    x = x.detach()
    if not keep_best and restarts == 1:
        success_of = _success_fn(loss, target, targeted)
        x_adv = _iterate(net, x, target, _start(x, threat, randomized, generator), threat, loss_fn, alpha, steps, targeted, None)
        with torch.no_grad():
            out = net(x_adv)
            return AttackResult(x_adv, loss_fn(out, target).float(), success_of(out), steps + 1)
    tracker = Tracker(x, targeted)
    queries = 0
    for r in range(restarts):
        idx: torch.Tensor | None = None
        if r == 0:
            xs, ts, start = x, target, _start(x, threat, randomized, generator)
        else:
            full_start = _start(x, threat, randomized, generator)  # same draws as a full-batch restart
            idx = torch.nonzero(~tracker.success).flatten()
            if idx.numel() == 0:
                continue
            xs, ts, start = x[idx], target[idx], full_start[idx]
        if early_exit and keep_best and is_classification_loss(loss) and target.dtype == torch.long and target.ndim == 1:
            _iterate_exit(net, xs, ts, start, threat, loss_fn, alpha, steps, targeted, tracker, idx)
            queries += steps + 1
            continue
        success_of = _success_fn(loss, ts, targeted)
        on_point = None
        if keep_best:
            def on_point(xk: torch.Tensor, lk: torch.Tensor, out: torch.Tensor, _s=success_of, _i=idx) -> None:
                tracker.update(xk, lk, _s(out), _i)
        x_last = _iterate(net, xs, ts, start, threat, loss_fn, alpha, steps, targeted, on_point)
        with torch.no_grad():
            out = net(x_last)
            tracker.update(x_last, loss_fn(out, ts), success_of(out), idx)
        queries += steps + 1
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
