"""APGD with early exit, EOT and the targeted DLR loss (APGD-T), as used by AutoAttack
(Croce & Hein, ICML 2020).

The step-size schedule, momentum, checkpoints and random start follow the reference
implementation's ``autopgd_base.py`` (step ``2 eps``, momentum 0.75, checkpoints after
``0.22 n, then -0.03 n down to 0.06 n`` iterations, step halved and the iterate reset to the best
point when at most ``rho = 75 %`` of the steps since the last checkpoint increased the loss, or
when the step was not halved last time and the best loss did not improve). The random draws
come from a ``torch.Generator`` in the reference's order and shapes, so the same seed gives the
reference's starting points.

What differs is cost, not verdicts: a point leaves the batch as soon as it is misclassified
(``early_exit``: every later iterate of a point depends only on that point, so its verdict is
the same), where the reference keeps running every point for all iterations.

APGD-T (``apgd_t``) attacks, for ``k = 2 .. targets + 1``, the class ranked ``k``-th by the
clean logits, on the points still robust, with the targeted DLR loss
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``; success means misclassification (any class).
``target_order="malt"`` ranks the targets instead by the linear model of the logits at the
clean point, ``(z_y - z_j) / ||grad (z_y - z_j)||_*`` (the estimated distance to class ``j``'s
boundary; MALT, Melamed et al. 2024).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..threats import L1Ball, L2Ball, LinfBall, ThreatModel
from .apgd_l1 import apgd_l1_run, eot_grad
from .losses import dlr_loss
from .pgd import AttackResult, _validate

__all__ = ["apgd_t", "apgd_cascade", "apgd_run", "dlr_targeted_loss", "malt_targets", "PassCounter"]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
# verify(x, y, success, points, loss=, y_target=) -> (success, points): float32 verdicts of a bf16 run
Verify = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def dlr_targeted_loss(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020), to maximise: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2)``.

    Shapes: z (B, C) with C >= 4; y, t (B,). Returns (B,)."""
    assert t is not None
    z = z.float()
    srt = z.sort(1).values
    u = torch.arange(z.shape[0], device=z.device)
    return -(z[u, y] - z[u, t]) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)


def _ce(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    return F.cross_entropy(z.float(), y, reduction="none")


def _dlr(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    return dlr_loss(z, y)


_LOSSES: dict[str, LossFn] = {"ce": _ce, "dlr": _dlr, "dlr-targeted": dlr_targeted_loss}


@dataclass
class PassCounter:
    """Counts example-passes: ``grad`` forward+backward passes and ``forward`` forward-only
    passes, each multiplied by the number of examples in the batch (the cost floor of an
    attack is these counts times the time of one pass per example)."""

    grad: int = 0
    forward: int = 0


def _view(x: torch.Tensor) -> tuple[int, ...]:
    return (-1, *([1] * (x.ndim - 1)))


def _normalize(t: torch.Tensor, linf: bool) -> torch.Tensor:
    n = t.flatten(1).abs().max(1)[0] if linf else t.flatten(1).norm(dim=1)
    return t / (n.view(_view(t)) + 1e-12)


def _l2_proj(x_new: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    d = x_new - x
    n = d.flatten(1).norm(dim=1).view(_view(x))
    return (x + d / (n + 1e-12) * torch.clamp(n, max=eps)).clamp(0.0, 1.0)


def _draw(shape: tuple[int, ...], g: torch.Generator | None, x: torch.Tensor, normal: bool) -> torch.Tensor:
    dev = g.device if g is not None else torch.device("cpu")
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=g, device=dev).to(device=x.device, dtype=x.dtype)


def apgd_start(x: torch.Tensor, eps: float, linf: bool, generator: torch.Generator | None) -> torch.Tensor:
    """The reference's random start: ``x + eps * t / ||t||`` with ``t`` uniform in [-1,1]
    (linf) or standard normal (l2), clipped to [0,1]."""
    if linf:
        t = 2 * _draw(tuple(x.shape), generator, x, False) - 1
    else:
        t = _draw(tuple(x.shape), generator, x, True)
    return (x + eps * _normalize(t, linf)).clamp(0.0, 1.0)


def apgd_run(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    linf: bool,
    loss_fn: LossFn,
    *,
    steps: int = 100,
    rho: float = 0.75,
    y_target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eot_iter: int = 1,
    early_exit: bool = True,
    counter: PassCounter | None = None,
    best: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run (one restart) on every point of ``x``; returns ``(success (B,), x_adv)``
    where ``x_adv`` is a misclassified iterate for the successful points and ``x`` elsewhere
    (``best=True``: the iterate of highest loss elsewhere).

    Cost: ``(steps + 1) * eot_iter`` forward+backward passes per point still running."""
    n_iter = max(int(steps), 1)
    n2, n_min, size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    b0 = x.shape[0]
    view = _view(x)
    success = torch.zeros(b0, dtype=torch.bool, device=x.device)
    x_out = x.clone()
    if b0 == 0:
        return success, x_out
    x_adv = apgd_start(x, eps, linf, generator)
    act = torch.arange(b0, device=x.device)  # positions of the running points in the batch
    x0, y0, t0 = x, y, y_target
    # the linf ball intersected with [0,1] as one clamp: clamp(v, max(x0 - eps, 0), min(x0 + eps, 1)) selects the
    # same value as the reference's clamp(min(max(v, x0 - eps), x0 + eps), 0, 1) since x0 is in [0,1]
    lo, hi = ((x - eps).clamp_min(0.0), (x + eps).clamp_max(1.0)) if linf else (x, x)

    def grad_at(xa: torch.Tensor, yy: torch.Tensor, tt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return eot_grad(net, xa, yy, tt, loss_fn, eot_iter, counter)

    grad, lval, broke = grad_at(x_adv, y0, t0)
    step = torch.full((b0, *([1] * (x.ndim - 1))), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), lval.clone()
    loss_steps = torch.zeros(n_iter, b0, device=x.device)
    x_old = x_adv.clone()
    k, counter3 = n2, 0
    loss_best_last = loss_best.clone()
    reduced_last = torch.ones(b0, dtype=torch.bool, device=x.device)

    def record(broke: torch.Tensor, x_adv: torch.Tensor) -> None:
        if bool(broke.any()):
            pos = act[broke]
            success[pos] = True
            x_out[pos] = x_adv[broke]

    record(broke, x_adv)
    for i in range(n_iter):
        if early_exit and bool(broke.any()):
            keep = ~broke
            if not bool(keep.any()):
                break
            act = act[keep]
            x0, y0, lo, hi = x0[keep], y0[keep], lo[keep], hi[keep]
            t0 = t0[keep] if t0 is not None else None
            x_adv, x_old, grad = x_adv[keep], x_old[keep], grad[keep]
            x_best, grad_best, loss_best = x_best[keep], grad_best[keep], loss_best[keep]
            loss_steps = loss_steps[:, keep]
            step, loss_best_last, reduced_last = step[keep], loss_best_last[keep], reduced_last[keep]
        with torch.no_grad():
            grad2 = x_adv - x_old
            x_old = x_adv
            a = 0.75 if i > 0 else 1.0
            if linf:
                z1 = torch.clamp(x_adv + step * grad.sign(), lo, hi)
                x_adv = torch.clamp(x_adv + (z1 - x_adv) * a + grad2 * (1 - a), lo, hi)
            else:
                z1 = _l2_proj(x_adv + step * _normalize(grad, False), x0, eps)
                x_adv = _l2_proj(x_adv + (z1 - x_adv) * a + grad2 * (1 - a), x0, eps)
        grad, lval, broke = grad_at(x_adv, y0, t0)
        record(broke, x_adv)
        with torch.no_grad():
            loss_steps[i] = lval
            imp = lval > loss_best
            iv = imp.view(view)
            x_best = torch.where(iv, x_adv, x_best)
            grad_best = torch.where(iv, grad, grad_best)
            loss_best = torch.where(imp, lval, loss_best)
            counter3 += 1
            if counter3 == k:
                # the reference compares the last k consecutive pairs, wrapping to the (still
                # zero) last row at the first checkpoint
                cur = torch.arange(i - k + 1, i + 1, device=x.device) % n_iter
                prev = torch.arange(i - k, i, device=x.device) % n_iter
                incr = (loss_steps[cur] > loss_steps[prev]).float().sum(0)
                osc = (incr <= k * rho) | ((~reduced_last) & (loss_best_last >= loss_best))
                reduced_last = osc
                loss_best_last = loss_best.clone()
                ov = osc.view(view)
                step = torch.where(ov, step / 2.0, step)
                x_adv = torch.where(ov, x_best, x_adv)
                grad = torch.where(ov, grad_best, grad)
                k = max(k - size_decr, n_min)
                counter3 = 0
    if best:
        rest = ~success[act]
        x_out[act[rest]] = x_best[rest]
    return success, x_out


def _check_threat(threat: ThreatModel, what: str) -> bool:
    if not isinstance(threat, (LinfBall, L2Ball)):
        raise InputError(f"{what} supports linf and l2 threat models, not {threat.norm}; use pgd for l1")
    return isinstance(threat, LinfBall)


def _runner(threat: ThreatModel, what: str, largereps: bool) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """One APGD restart for ``threat``: :func:`apgd_run` (linf, l2) or l1-APGD
    (:func:`robrep.attacks.apgd_l1.apgd_l1_run`, with ``largereps``); call it with ``loss_fn=`` by name."""
    if isinstance(threat, L1Ball):
        return functools.partial(apgd_l1_run, eps=float(threat.eps), largereps=largereps)
    return functools.partial(apgd_run, eps=float(threat.eps), linf=_check_threat(threat, what))


def _final_loss(net: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, counter: PassCounter | None = None) -> torch.Tensor:
    with torch.no_grad():
        out = dlr_loss(net(x_adv), y)
    if counter is not None:
        counter.forward += x_adv.shape[0]
    return out


def apgd_cascade(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    loss: str = "ce",
    restarts: int = 1,
    rho: float = 0.75,
    eot_iter: int = 1,
    early_exit: bool = True,
    generator: torch.Generator | None = None,
    check: bool = True,
    counter: PassCounter | None = None,
    largereps: bool = False,
    verify: Verify | None = None,
) -> AttackResult:
    """APGD-CE / APGD-DLR as in AutoAttack, with early exit (``loss`` ``"ce"`` or ``"dlr"``); linf,
    l2, and l1 (l1-APGD, :mod:`robrep.attacks.apgd_l1`; ``largereps``: its 3 eps, 2 eps, eps schedule).

    Each restart runs on the points not yet misclassified. ``eot_iter > 1`` averages the
    gradient over that many calls of a randomized model (expectation over transformation,
    AutoAttack's ``rand`` version). Returns an :class:`AttackResult` whose ``success`` marks
    misclassified points; ``queries`` counts forward+backward passes per point at most.
    ``verify`` (a mixed-precision protocol's :class:`robrep.attacks.precision.Fp32Check`) judges
    every restart's outcome in float32 and re-checks the points not broken from their best iterate.
    """
    if check:
        _validate(model, x, threat, steps, restarts)
    run = _runner(threat, f"apgd-{loss}", largereps)
    if loss not in ("ce", "dlr"):
        raise InputError(f"apgd loss must be 'ce' or 'dlr', got {loss!r}")
    if eot_iter < 1:
        raise InputError(f"eot_iter must be >= 1, got {eot_iter}")
    x = x.detach()
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    x_adv = x.clone()
    for _r in range(restarts):
        idx = torch.nonzero(~success).flatten()
        if len(idx) == 0:
            break
        s, xa = run(model, x[idx], target[idx], loss_fn=_LOSSES[loss], steps=steps, rho=rho,
                    generator=generator, eot_iter=eot_iter, early_exit=early_exit, counter=counter,
                    best=verify is not None)
        if verify is not None:
            s, xa = verify(x[idx], target[idx], s, xa, loss=loss)
        success[idx[s]] = True
        x_adv[idx[s]] = xa[s]
    return AttackResult(x_adv, _final_loss(model, x_adv, target, counter), success, restarts * (steps + 1) * eot_iter)


def malt_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                 counter: PassCounter | None = None) -> torch.Tensor:
    """Target classes ranked by the linear model of the logits at ``x`` (MALT, Melamed et al.
    2024): class ``j``'s estimated distance is ``(z_y - z_j) / ||grad_x (z_y - z_j)||_*`` (dual
    norm of the threat). Returns (B, C-1) class indices, nearest first. Cost: one forward and
    ``C`` backward passes."""
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = model(xr)
        c = z.shape[1]
        grads = []
        for j in range(c):
            (g,) = torch.autograd.grad(z[:, j].sum(), xr, retain_graph=j < c - 1)
            grads.append(g.flatten(1))
    if counter is not None:
        counter.grad += c * x.shape[0]
    jac = torch.stack(grads, 1)  # (B, C, D)
    u = torch.arange(x.shape[0], device=x.device)
    z = z.detach().float()
    diff_g = jac - jac[u, y][:, None]
    q = {"linf": 1, "l2": 2, "l1": float("inf")}[threat.norm]
    dist = (z[u, y][:, None] - z) / (diff_g.norm(p=q, dim=2).float() + 1e-12)
    dist[u, y] = float("inf")
    return dist.argsort(1)[:, : c - 1]


def apgd_t(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    targets: int = 9,
    restarts: int = 1,
    rho: float = 0.75,
    target_order: str = "logits",
    early_exit: bool = True,
    generator: torch.Generator | None = None,
    check: bool = True,
    counter: PassCounter | None = None,
    largereps: bool = False,
    verify: Verify | None = None,
) -> AttackResult:
    """APGD-T: APGD on the targeted DLR loss for each of ``targets`` target classes, each on
    the points still robust (Croce & Hein 2020; AutoAttack's ``apgd-t``); linf, l2 and l1 (l1-APGD,
    ``largereps`` as in :func:`apgd_cascade`).

    Args:
        target: true labels (B,).
        targets: number of target classes; clipped to ``C - 1`` (use
            :func:`robrep.attacks.protocols.clip_targets` to get the note).
        target_order: ``"logits"`` (the classes ranked 2nd, 3rd, ... by the clean logits, as the
            reference) or ``"malt"`` (nearest by the linear model of the logits).
        verify: as in :func:`apgd_cascade`, after every target class (the re-check follows that
            target's loss).

    Returns:
        :class:`AttackResult`; ``success`` = misclassified within the ball.
    """
    if check:
        _validate(model, x, threat, steps, restarts)
    run = _runner(threat, "apgd-t", largereps)
    if target_order not in ("logits", "malt"):
        raise InputError(f"target_order must be 'logits' or 'malt', got {target_order!r}")
    x = x.detach()
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    x_adv = x.clone()
    if x.shape[0] == 0:
        return AttackResult(x_adv, torch.zeros(0, device=x.device), success, 0)
    with torch.no_grad():
        c = model(x[:1]).shape[1]
    if c < 4:
        raise InputError(f"apgd-t needs at least 4 classes for the targeted DLR loss, the model has {c}; use apgd-ce")
    n_t = max(1, min(int(targets), c - 1))
    if target_order == "malt":
        order = malt_targets(model, x, target, threat, counter)
    else:  # the classes ranked 2nd, 3rd, ... by the clean logits: one forward pass for every target
        with torch.no_grad():
            order = model(x).sort(1)[1].flip(1)[:, 1:]
        if counter is not None:
            counter.forward += x.shape[0]
    for k in range(n_t):
        for _r in range(restarts):
            idx = torch.nonzero(~success).flatten()
            if len(idx) == 0:
                break
            yt = order[idx, k]
            s, xa = run(model, x[idx], target[idx], loss_fn=dlr_targeted_loss, steps=steps, rho=rho,
                        y_target=yt, generator=generator, early_exit=early_exit, counter=counter,
                        best=verify is not None)
            if verify is not None:
                s, xa = verify(x[idx], target[idx], s, xa, loss="dlr-targeted", y_target=yt)
            success[idx[s]] = True
            x_adv[idx[s]] = xa[s]
    return AttackResult(x_adv, _final_loss(model, x_adv, target, counter), success, n_t * restarts * (steps + 1))
