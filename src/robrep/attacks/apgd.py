"""Auto-PGD (Croce & Hein, ICML 2020): step-size-free PGD with momentum, used by AutoAttack.

Follows the reference implementation (``autoattack/autopgd_base.py``): initial step ``2 eps``,
momentum 0.75, checkpoints ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` starting at
0.22, step halved (and the iterate reset to the best point) when fewer than 75 % of the steps
since the last checkpoint increased the loss, or when the step was not halved last time and the
best loss did not improve. Supports linf and l2.
"""

from __future__ import annotations

import torch
from torch import nn

from .._compile import maybe_compile
from ..errors import InputError
from ..threats import L2Ball, LinfBall, ThreatModel
from .losses import AttackLoss, get_loss
from .pgd import AttackResult, Tracker, _success_fn, _validate

__all__ = ["apgd"]


def _l2_proj(x_new: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    d = x_new - x
    n = d.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))
    return (x + d / (n + 1e-12) * torch.clamp(n, max=eps)).clamp(0.0, 1.0)


def apgd(
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
    compile: bool = False,
) -> AttackResult:
    """APGD on ``loss`` (``"ce"`` for APGD-CE, ``"dlr"`` for APGD-DLR).

    Each restart runs on the examples not yet successfully attacked (cascade); the best iterate
    per example is kept. Cost per restart: ``steps + 1`` forward/backward passes. ``compile``
    runs the model through ``torch.compile`` (opt-in).
    """
    if check:
        _validate(model, x, threat, steps, restarts)
    if not isinstance(threat, (LinfBall, L2Ball)):
        raise InputError(f"apgd supports linf and l2 threat models, not {threat.norm}; use pgd for l1")
    net = maybe_compile(model, compile)
    loss_fn = get_loss(loss)
    sign = -1.0 if targeted else 1.0
    x = x.detach()
    tracker = Tracker(x, targeted)
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

        def grad_at(xa: torch.Tensor, t0: torch.Tensor = t0, succ_of=succ_of) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
            xa = xa.clone().requires_grad_(True)
            out = net(xa)
            lv = loss_fn(out, t0)
            (g,) = torch.autograd.grad(lv.sum() * sign, xa)
            return g.detach(), (lv * sign).detach().float(), succ_of(out).detach()

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
                imp = lval > loss_best  # branch-free in-place selections (no mask gathers)
                torch.where(imp.view(view), x_adv, x_best, out=x_best)
                torch.where(imp.view(view), grad, grad_best, out=grad_best)
                torch.where(imp, lval, loss_best, out=loss_best)
                counter3 += 1
                if counter3 == k:
                    lo = max(i - k, 0)
                    incr = (loss_steps[lo + 1 : i + 1] > loss_steps[lo:i]).sum(0) if i > 0 else torch.zeros(b, device=x.device)
                    osc = incr <= k * rho
                    no_impr = (~reduced_last) & (loss_best_last >= loss_best)
                    osc = osc | no_impr
                    reduced_last = osc
                    loss_best_last = loss_best.clone()
                    ov = osc.view(view)  # halve the step and restart from the best point (no host sync)
                    step = torch.where(ov, step / 2.0, step)
                    x_adv = torch.where(ov, x_best, x_adv)
                    grad = torch.where(ov, grad_best, grad)
                    k = max(k - size_decr, n_min)
                    counter3 = 0
    return AttackResult(tracker.x, tracker.loss, tracker.success, queries)


def _rand_like(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    dev = g.device if g is not None else x.device
    return torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype).to(x.device)


def _randn_like(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    dev = g.device if g is not None else x.device
    return torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype).to(x.device)
