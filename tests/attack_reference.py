"""The previous (pre-optimisation) PGD and APGD implementations, kept verbatim as slow references:
tests check that the optimised attacks in robrep.attacks return the same numbers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robrep.attacks.losses import AttackLoss, get_loss, is_classification_loss
from robrep.attacks.pgd import AttackResult, default_step_size
from robrep.errors import InputError
from robrep.models.base import check_images
from robrep.threats import L2Ball, LinfBall, ThreatModel


class RefTracker:
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


def reference_pgd(
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
    tracker = RefTracker(x, targeted)
    queries = 0
    for _ in range(restarts):
        # the start is the threat's attack_start (changed for l2 after this reference was frozen)
        x_adv = threat.attack_start(x, generator) if (random_start and threat.eps > 0) else x.clone()
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



def _l2_proj(x_new: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    d = x_new - x
    n = d.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))
    return (x + d / (n + 1e-12) * torch.clamp(n, max=eps)).clamp(0.0, 1.0)


def reference_apgd(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    loss: str | AttackLoss = "ce",
    restarts: int = 1,
    targeted: bool = False,
    rho: float = 0.75,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> AttackResult:
    """APGD on ``loss`` (``"ce"`` for APGD-CE, ``"dlr"`` for APGD-DLR).

    Each restart runs on the examples not yet successfully attacked (cascade); the best iterate
    per example is kept. Cost per restart: ``steps + 1`` forward/backward passes.
    """
    if check:
        _validate(model, x, threat, steps, restarts)
    if not isinstance(threat, (LinfBall, L2Ball)):
        raise InputError(f"apgd supports linf and l2 threat models, not {threat.norm}; use pgd for l1")
    loss_fn = get_loss(loss)
    sign = -1.0 if targeted else 1.0
    x = x.detach()
    tracker = RefTracker(x, targeted)
    n_iter = max(int(steps), 1)
    n2, n_min, size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    eps = float(threat.eps)
    linf = isinstance(threat, LinfBall)
    queries = 0
    all_idx = torch.arange(x.shape[0], device=x.device)
    for _r in range(restarts):
        idx = all_idx[~tracker.success]
        if len(idx) == 0:
            break
        x0, t0 = x[idx], target[idx]
        succ_of = _success_fn(loss, t0, targeted)
        b = len(idx)
        view = (-1, *([1] * (x.ndim - 1)))
        # random start as in the reference code
        if linf:
            t = 2 * _rand_like(x0, generator) - 1
            x_adv = (x0 + eps * t / t.flatten(1).abs().max(1)[0].view(view).clamp_min(1e-12)).clamp(0, 1)
        else:
            t = _randn_like(x0, generator)
            x_adv = (x0 + eps * t / (t.flatten(1).norm(dim=1).view(view) + 1e-12)).clamp(0, 1)

        def grad_at(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            xa = xa.clone().requires_grad_(True)
            out = model(xa)
            lv = loss_fn(out, t0)  # noqa: B023
            (g,) = torch.autograd.grad(lv.sum() * sign, xa)
            return g.detach(), (lv * sign).detach().float(), succ_of(out).detach()  # noqa: B023

        grad, lval, succ = grad_at(x_adv)
        queries += 1
        tracker.update(x_adv, lval * sign, succ, idx)
        step = torch.full((b,), 2.0 * eps, device=x.device).view(view)
        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), lval.clone()
        loss_steps = torch.zeros(n_iter, b, device=x.device)
        x_old = x_adv.clone()
        k, counter3 = n2, 0
        loss_best_last = loss_best.clone()
        reduced_last = torch.ones(b, dtype=torch.bool, device=x.device)
        for i in range(n_iter):
            with torch.no_grad():
                grad2 = x_adv - x_old
                x_old = x_adv
                a = 0.75 if i > 0 else 1.0
                if linf:
                    z = torch.min(torch.max(x_adv + step * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
                    x_new = torch.min(torch.max(x_adv + (z - x_adv) * a + grad2 * (1 - a), x0 - eps), x0 + eps).clamp(0, 1)
                else:
                    gn = grad.flatten(1).norm(dim=1).view(view) + 1e-12
                    z = _l2_proj(x_adv + step * grad / gn, x0, eps)
                    x_new = _l2_proj(x_adv + (z - x_adv) * a + grad2 * (1 - a), x0, eps)
                x_adv = x_new
            grad, lval, succ = grad_at(x_adv)
            queries += 1
            with torch.no_grad():
                tracker.update(x_adv, lval * sign, succ, idx)
                loss_steps[i] = lval
                imp = lval > loss_best
                x_best[imp], grad_best[imp], loss_best[imp] = x_adv[imp], grad[imp], lval[imp]
                counter3 += 1
                if counter3 == k:
                    lo = max(i - k, 0)
                    incr = (loss_steps[lo + 1 : i + 1] > loss_steps[lo:i]).sum(0) if i > 0 else torch.zeros(b, device=x.device)
                    osc = incr <= k * rho
                    no_impr = (~reduced_last) & (loss_best_last >= loss_best)
                    osc = osc | no_impr
                    reduced_last = osc
                    loss_best_last = loss_best.clone()
                    if osc.any():
                        step[osc] /= 2.0
                        x_adv[osc] = x_best[osc]
                        grad[osc] = grad_best[osc]
                    k = max(k - size_decr, n_min)
                    counter3 = 0
    return AttackResult(tracker.x, tracker.loss, tracker.success, queries)


def _rand_like(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    dev = g.device if g is not None else x.device
    return torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype).to(x.device)


def _randn_like(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    dev = g.device if g is not None else x.device
    return torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype).to(x.device)
