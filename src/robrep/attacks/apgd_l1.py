"""l1-APGD (Croce & Hein, ICML 2021, "Mind the box: l1-APGD for sparse adversarial attacks on
image classifiers"): APGD on the l1 ball intersected with the [0,1] box, as AutoAttack runs it for
``norm='L1'``.

Follows the reference implementation (the ``L1`` branches of ``autopgd_base.py``):

- a step is the sign of the gradient on its ``k`` largest coordinates, scaled to l1 length
  ``step``, followed by the exact Euclidean projection onto ball and box
  (:func:`project_l1_box`); no momentum. ``k`` is 20 % of the coordinates at a fresh start, then
  the number of non-zero coordinates of the best point divided by 1.5;
- the step starts at ``eps``; every ``max(int(0.04 n), 1)`` iterations, where the best point's
  sparsity fell below 95 % of the last check, the step resets to ``eps`` and the iterate to the
  best point, elsewhere the step shrinks by 1.5 (never below ``eps / 10``);
- ``largereps`` (AutoAttack's standard for l1): 30 % of the iterations at ``3 eps``, 30 % at
  ``2 eps``, the rest at ``eps``, each stage starting from the previous stage's highest-loss point
  projected onto the smaller ball (the first from a Gaussian point projected onto the ``3 eps``
  ball); only the last stage, at ``eps``, decides success.

The random draws come from a ``torch.Generator`` in the reference's order and shapes (standard
normal, the shape of the input: the start, then one unused draw per phase), so the same seed gives
the reference's starting points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["project_l1_box", "l1_box_correction", "apgd_l1_run"]


def project_l1_box(delta: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The Euclidean projection of each perturbation ``delta`` onto ``{d : ||d||_1 <= eps,
    0 <= x + d <= 1}`` (``x`` in [0,1]): ``delta + l1_box_correction(x, delta, eps)``."""
    return delta + l1_box_correction(x, delta, eps).to(delta.dtype)


def l1_box_correction(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The correction ``c`` that brings the perturbation ``y`` onto ``{d : ||d||_1 <= eps,
    0 <= x + d <= 1}`` by the shortest move (``y + c`` is the Euclidean projection), in float32.

    The projection is ``d_i = sign(y_i) min(max(|y_i| - lam, 0), r_i)``, with ``r_i`` the room the
    box leaves in the direction of ``y_i`` and ``lam >= 0`` the smallest value with
    ``||d||_1 <= eps``; ``||d||_1`` is piecewise linear in ``lam``, so ``lam`` comes from its sorted
    breakpoints by a binary search (Croce & Hein 2021). The operations and their order are the
    reference implementation's, so the result is bit for bit the reference's: the attack's sparse
    steps react to the last bits of the coordinates it moves back to zero.
    """
    b = x.shape[0]
    xf, yf = x.detach().flatten(1).float(), y.detach().flatten(1).float()
    sigma = yf.sign()
    u = torch.min(torch.min(1 - xf - yf, xf + yf), torch.zeros_like(yf))  # the box's correction alone (<= 0)
    low = -yf.abs()  # at most the whole coordinate
    d = u.clone()
    bs, ind = torch.sort(-torch.cat((u, low), 1), dim=1)
    bs2 = torch.cat((bs[:, 1:], torch.zeros(b, 1, device=bs.device)), 1)
    size1 = (2 * (ind < u.shape[1]).float() - 1).cumsum(dim=1)
    s1 = -u.sum(dim=1)
    c = eps - yf.abs().sum(dim=1)
    rows = (s1 + c < 0).nonzero().squeeze(1)  # the l1 ball binds
    if rows.numel():
        s = s1[rows].unsqueeze(-1) + torch.cumsum((bs2[rows] - bs[rows]) * size1[rows], dim=1)
        cr = c[rows]
        lb = torch.zeros(len(rows), device=bs.device)
        ub = torch.full_like(lb, float(bs.shape[1] - 1))
        u_ = torch.arange(len(rows), device=bs.device)
        for _ in range(math.ceil(math.log2(bs.shape[1]))):
            mid = torch.floor((lb + ub) / 2.0)
            below = s[u_, mid.long()] + cr < 0
            lb = torch.where(below, mid, lb)
            ub = torch.where(below, ub, mid)
        k = lb.long()
        alpha = (-s[u_, k] - cr) / size1[rows][u_, k + 1] + bs2[rows][u_, k]
        d[rows] = -torch.min(torch.max(-u[rows], alpha.unsqueeze(-1)), -low[rows])
    return (sigma * d).view(y.shape)


def _moved(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """``x + y`` brought into the l1 ball of radius ``eps`` around ``x`` and the box, in the reference's
    arithmetic ``(x + y) + c`` (``c`` the correction): the coordinates it moves back to ``x`` keep the
    reference's rounding, which its sparsity counts (``L0``) see."""
    return (x + y) + l1_box_correction(x, y, eps).to(y.dtype)


def _l0(d: torch.Tensor) -> torch.Tensor:
    return (d != 0).flatten(1).sum(1)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def eot_grad(net: nn.Module, xa: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, loss_fn: LossFn, eot_iter: int,
             counter: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The input gradient of ``loss_fn`` at ``xa`` averaged over ``eot_iter`` calls (expectation over
    transformation), the loss and the misclassified points of the last call; counts the passes."""
    g: torch.Tensor | None = None
    for _ in range(eot_iter):
        xr = xa.detach().requires_grad_(True)  # a leaf sharing xa's storage: no copy
        with torch.enable_grad():
            z = net(xr)
            lv = loss_fn(z, y, t)
            (gi,) = torch.autograd.grad(lv.sum(), xr)
        g = gi if g is None else g + gi
    if counter is not None:
        counter.grad += eot_iter * xa.shape[0]
    assert g is not None
    return (g / eot_iter if eot_iter > 1 else g), lv.detach().float(), z.detach().argmax(1) != y


def _single_run(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, loss_fn: LossFn, steps: int,
                x_init: torch.Tensor, fresh: bool, y_target: torch.Tensor | None, eot_iter: int,
                counter: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One l1-APGD run from ``x_init``: (highest-loss point, misclassified at some iterate (B,),
    the last misclassified iterate)."""
    b, n_fts = x.shape[0], x[0].numel()
    view = (-1, *([1] * (x.ndim - 1)))

    def grad_at(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return eot_grad(net, xa, y, y_target, loss_fn, eot_iter, counter)

    x_adv = x_init.clamp(0.0, 1.0)
    grad, lval, wrong = grad_at(x_adv)
    broke = wrong.clone()
    x_found = x_adv.clone()
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), lval.clone()
    step = torch.full((b,), eps, device=x.device, dtype=x.dtype)
    k = max(int(0.04 * steps), 1)
    if fresh:
        topk = torch.full((b,), 0.2, device=x.device)
        sp_old = torch.full((b,), n_fts, device=x.device, dtype=torch.long)
    else:
        sp_old = _l0(x_adv - x)
        topk = sp_old / n_fts / 1.5
    u = torch.arange(b, device=x.device)
    counter3 = 0
    for _ in range(steps):
        with torch.no_grad():
            g = grad.flatten(1)
            kth = ((1.0 - topk) * n_fts).clamp(0, n_fts - 1).long()
            thr = g.abs().sort(1).values[u, kth][:, None]
            s = (g * (g.abs() >= thr)).sign()
            x1 = x_adv.flatten(1) + step[:, None] * s / (s.abs().sum(1, keepdim=True) + 1e-10)
            x_adv = _moved(x, (x1 - x.flatten(1)).view_as(x), eps).clamp(0.0, 1.0)
        grad, lval, wrong = grad_at(x_adv)
        with torch.no_grad():
            broke |= wrong
            x_found[wrong] = x_adv[wrong]
            imp = lval > loss_best
            x_best[imp], grad_best[imp], loss_best[imp] = x_adv[imp], grad[imp], lval[imp]
            counter3 += 1
            if counter3 == k:
                sp_curr = _l0(x_best - x)
                reset = (sp_curr / sp_old) < 0.95
                topk = sp_curr / n_fts / 1.5
                step = torch.where(reset, torch.full_like(step, eps), step / 1.5).clamp(eps / 10.0, eps)
                sp_old = sp_curr
                x_adv = torch.where(reset.view(view), x_best, x_adv)
                grad = torch.where(reset.view(view), grad_best, grad)
                counter3 = 0
    return x_best, broke, x_found


def _draw(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(x.shape), generator=generator, device=dev).to(device=x.device, dtype=x.dtype)


def apgd_l1_run(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    loss_fn: LossFn,
    *,
    steps: int = 100,
    rho: float = 0.75,
    y_target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eot_iter: int = 1,
    early_exit: bool = True,
    counter: Any = None,
    largereps: bool = False,
    best: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One l1-APGD run (one restart) on every point of ``x``; returns ``(success (B,), x_adv)``,
    ``x_adv`` a misclassified point within ``eps`` for the successful points and ``x`` elsewhere
    (``best=True``: the point of highest loss within ``eps`` elsewhere).

    ``rho`` and ``early_exit`` are accepted for the signature of the linf/l2 run and unused (the
    l1 schedule has no oscillation test; every point runs all iterations, as in the reference).
    Cost: ``(steps + 1) * eot_iter`` forward+backward passes per point (``steps + 3`` with
    ``largereps``: one more start per stage)."""
    b = x.shape[0]
    if b == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device), x.clone()
    x = x.detach()
    noise = _draw(x, generator)
    if not largereps:
        start = _moved(x, noise, eps)
        start, broke, found = _single_run(net, x, y, eps, loss_fn, int(steps), start, True, y_target, eot_iter, counter)
    else:
        n = int(steps)
        epss = [3.0 * eps, 2.0 * eps, eps]
        iters = [math.ceil(0.3 * n), math.ceil(0.3 * n)]
        iters.append(n - sum(iters))
        start = x + noise
        start = start + l1_box_correction(x, start - x, epss[0]).to(x.dtype)
        for e, it in zip(epss, iters):
            _draw(x, generator)  # the reference draws (and discards) a fresh start in every phase: same seed, same starts
            start = start + l1_box_correction(x, start - x, e).to(x.dtype)
            start, broke, found = _single_run(net, x, y, e, loss_fn, max(it, 0), start, False, y_target, eot_iter,
                                              counter)
    return broke, torch.where(broke.view(-1, *([1] * (x.ndim - 1))), found, start if best else x)
