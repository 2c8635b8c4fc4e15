"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), targeted (FAB-T, as in
AutoAttack's standard version) and untargeted; linf and l2.

FAB searches for the *smallest* adversarial perturbation: at the current point ``x1`` it
linearizes the decision boundary ``f(x) = z_t(x) - z_y(x) = 0`` (targeted) or the nearest one
over classes (untargeted), projects both ``x1`` and the clean point ``x0`` onto that hyperplane
intersected with the [0,1] box (exact minimal-norm projections), and moves to
a convex combination of the two projections (weight on ``x0`` ``alpha = min(|d1| / (|d1| + |d2|),
alpha_max)``) with overshoot ``eta``; when the new point is adversarial it is recorded (if
closer than the best) and pulled back towards ``x0`` by ``beta``. Defaults follow the reference
implementation (``alpha_max = 0.1``, ``eta = 1.05``, ``beta = 0.9``, 100 iterations).

A point counts as broken when an adversarial point within ``eps`` was found. Its best distance
never grows, so a point leaves the batch once that holds (``early_exit``), without changing a
verdict. Each step costs, as in the reference, one forward+backward pass (the linearization at
the current point) and one forward pass (is the new point adversarial?).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import InputError
from ..threats import L2Ball, LinfBall, ThreatModel
from .apgd_targeted import PassCounter, Verify, _draw, _normalize
from .pgd import AttackResult, _validate

__all__ = ["fab", "fab_t", "project_hyperplane_box"]


def project_hyperplane_box(p: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Minimal-norm step ``d`` (linf or l2) with ``w . (p + d) = b`` and ``p + d`` in [0,1].

    Shapes: p, w (B, D); b (B,). Returns d (B, D). Solved exactly: with ``c = b - w . p`` (sign
    folded into ``w``), the best step for a radius ``lam`` is ``d_i = sign(w_i) min(lam, cap_i)``
    (linf) or ``sign(w_i) min(lam |w_i|, cap_i)`` (l2), where ``cap_i`` is the room to the box in
    the direction of ``w_i``. ``g(lam) = w . d(lam)`` is piecewise linear, non-decreasing and
    concave, so Newton's method from ``lam = c / g'(0)`` approaches the smallest ``lam`` with
    ``g(lam) = c`` from below and stops exactly at it once the set of coordinates at their cap no
    longer changes (a few steps of two reductions each; rows still moving after 32 steps are solved
    by sorting the breakpoints instead). When the box does not allow reaching the hyperplane the
    step goes to the box corner that gets closest.
    """
    c = b - (w * p).sum(1)
    sgn = torch.where(c >= 0, 1.0, -1.0).to(w.dtype)
    w = w * sgn[:, None]
    c = c * sgn
    cap = torch.where(w > 0, 1.0 - p, p).clamp_min(0.0)
    aw = w.abs()
    if norm == "linf":
        brk = cap  # the radius at which coordinate i reaches its cap
        slope = aw  # d g / d lam of a coordinate below its cap
    elif norm == "l2":
        brk = torch.where(aw > 0, cap / aw.clamp_min(1e-30), torch.full_like(cap, 1e12))
        slope = aw * aw
    else:
        raise InputError(f"FAB supports linf and l2, not {norm}")
    parts = torch.stack((aw * cap, slope), 2)  # (B, D, 2): w_i d_i at the cap, and the slope below it
    total = parts.sum(1)
    feasible = total[:, 0] >= c  # g(inf): every coordinate at its cap
    lam = c / total[:, 1].clamp_min(1e-30)
    capped = brk <= lam[:, None]
    for _ in range(32):
        s = torch.bmm(capped.to(parts.dtype)[:, None, :], parts)[:, 0]
        lam = (c - s[:, 0]) / (total[:, 1] - s[:, 1]).clamp_min(1e-30)
        now = brk <= lam[:, None]
        moving = (now != capped).any(1)
        if not bool(moving.any()):
            break
        capped = now
    else:
        lam = torch.where(moving, _radius_by_sorting(brk, slope, aw * cap, c), lam)
    lam = torch.where(feasible, lam.clamp_min(0.0), torch.full_like(lam, float("inf")))
    if norm == "linf":
        mag = torch.minimum(lam[:, None], cap)
    else:
        mag = torch.where(aw > 0, torch.minimum(lam[:, None] * aw, cap), torch.zeros_like(cap))
    d = torch.sign(w) * mag
    return torch.where(c[:, None] > 0, d, torch.zeros_like(d))


def _radius_by_sorting(brk: torch.Tensor, slope: torch.Tensor, at_cap: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The smallest ``lam`` with ``g(lam) = c`` by sorting the breakpoints (inf where none)."""
    d_dim = brk.shape[1]
    brk_s, order = brk.sort(1)
    cap_contrib = at_cap.gather(1, order)
    slope_s = slope.gather(1, order)
    before = torch.cumsum(cap_contrib, 1) - cap_contrib
    after = slope_s.flip(1).cumsum(1).flip(1)
    k = ((before + brk_s * after) < c[:, None]).sum(1)
    kk = k.clamp(max=d_dim - 1)[:, None]
    lam = ((c[:, None] - before.gather(1, kk)) / after.gather(1, kk).clamp_min(1e-30)).squeeze(1)
    return torch.where(k < d_dim, lam, torch.full_like(lam, float("inf")))


def _norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    f = d.flatten(1)
    return f.abs().max(1)[0] if norm == "linf" else f.norm(dim=1)


GradFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _targeted_grads(net: nn.Module, counter: PassCounter | None) -> GradFn:
    def fn(x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert t is not None
        xr = x1.clone().requires_grad_(True)
        u = torch.arange(x1.shape[0], device=x1.device)
        with torch.enable_grad():
            z = net(xr)
            diff = z[u, t] - z[u, y]
            (g,) = torch.autograd.grad(diff.sum(), xr)
        if counter is not None:
            counter.grad += x1.shape[0]
        return z.detach(), diff.detach()[:, None], g.detach().flatten(1)[:, None]

    return fn


def _untargeted_grads(net: nn.Module, norm: str, counter: PassCounter | None) -> GradFn:
    def fn(x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xr = x1.clone().requires_grad_(True)
        u = torch.arange(x1.shape[0], device=x1.device)
        with torch.enable_grad():
            z = net(xr)
            nc = z.shape[1]
            gs = [torch.autograd.grad(z[:, j].sum(), xr, retain_graph=j < nc - 1)[0].flatten(1) for j in range(nc)]
        if counter is not None:
            counter.grad += nc * x1.shape[0]
        g = torch.stack(gs, 1)
        zd = z.detach()
        df = zd - zd[u, y][:, None]
        dg = g - g[u, y][:, None]
        df[u, y] = 1e10
        q = 1 if norm == "linf" else 2
        dist = df.abs() / (dg.norm(p=q, dim=2) + 1e-12)
        j = dist.argmin(1)
        return zd, df[u, j][:, None], dg[u, j][:, None]

    return fn


def _fab_run(
    grads: GradFn,
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor | None,
    eps: float,
    norm: str,
    *,
    steps: int,
    alpha_max: float,
    eta: float,
    beta: float,
    start: torch.Tensor,
    early_exit: bool,
    counter: PassCounter | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB run from ``start``; returns (best distance (B,) with inf where none found, best
    adversarial point)."""
    b0 = x.shape[0]
    best = torch.full((b0,), float("inf"), device=x.device)
    adv = x.clone()
    act = torch.arange(b0, device=x.device)
    x0, yy, tt = x, y, t
    x1 = start.clone()
    shape = x.shape[1:]
    _z, df, dg = grads(x1, yy, tt)
    for it in range(steps):
        with torch.no_grad():
            bs = x1.shape[0]
            w = dg[:, 0]
            bb = -df[:, 0] + (w * x1.flatten(1)).sum(1)
            d3 = project_hyperplane_box(torch.cat((x1.flatten(1), x0.flatten(1)), 0), torch.cat((w, w), 0),
                                        torch.cat((bb, bb), 0), norm)
            d1, d2 = d3[:bs].view(bs, *shape), d3[bs:].view(bs, *shape)
            a0 = _norm(d3, norm).clamp_min(1e-8).view(-1, *([1] * len(shape)))
            a1, a2 = a0[:bs], a0[bs:]
            alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)
            x1 = ((x1 + eta * d1) * (1 - alpha) + (x0 + d2 * eta) * alpha).clamp(0.0, 1.0)
            is_adv = net(x1).argmax(1) != yy  # a forward pass, as the reference
            if counter is not None:
                counter.forward += bs
            if bool(is_adv.any()):
                dist = _norm(x1 - x0, norm)
                better = is_adv & (dist < best[act])
                pos = act[better]
                best[pos] = dist[better]
                adv[pos] = x1[better]
                x1 = torch.where(is_adv.view(-1, *([1] * len(shape))), x0 + (x1 - x0) * beta, x1)
        if it == steps - 1:
            break
        if early_exit:
            keep = ~(best[act] <= eps)
            if not bool(keep.all()):
                if not bool(keep.any()):
                    break
                act, x0, yy, x1 = act[keep], x0[keep], yy[keep], x1[keep]
                tt = tt[keep] if tt is not None else None
        _z, df, dg = grads(x1, yy, tt)  # the next step's linearization, at the (pulled back) point
    return best, adv


def _check(threat: ThreatModel, what: str) -> str:
    if not isinstance(threat, (LinfBall, L2Ball)):
        raise InputError(f"{what} supports linf and l2 threat models, not {threat.norm}")
    return threat.norm


def _rand_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    t = (2 * _draw(tuple(x.shape), generator, x, False) - 1) if norm == "linf" else _draw(tuple(x.shape), generator, x, True)
    return (x + 0.5 * eps * _normalize(t, norm == "linf")).clamp(0.0, 1.0)


def _fab_attack(model, x, target, threat, *, targeted, steps, targets, restarts, alpha_max, eta, beta, early_exit,
                generator, check, counter, verify=None):  # type: ignore[no-untyped-def]
    if check:
        _validate(model, x, threat, steps, restarts)
    norm = _check(threat, "fab-t" if targeted else "fab")
    x = x.detach()
    eps = float(threat.eps)
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    x_adv = x.clone()
    dist = torch.full((x.shape[0],), float("inf"), device=x.device)
    if x.shape[0] == 0:
        return AttackResult(x_adv, dist, success, 0)
    grads = _targeted_grads(model, counter) if targeted else _untargeted_grads(model, norm, counter)
    if targeted:
        with torch.no_grad():
            c = model(x[:1]).shape[1]
        n_t = max(1, min(int(targets), c - 1))
    else:
        n_t = 1
    for k in range(n_t):
        for r in range(restarts):
            idx = torch.nonzero(~success).flatten()
            if len(idx) == 0:
                break
            xs, ys = x[idx], target[idx]
            yt = None
            if targeted:
                with torch.no_grad():
                    yt = model(xs).sort(1)[1][:, -(k + 2)]
                if counter is not None:
                    counter.forward += len(idx)
            start = _rand_start(xs, eps, norm, generator) if r > 0 else xs
            best, adv = _fab_run(grads, model, xs, ys, yt, eps, norm, steps=steps, alpha_max=alpha_max, eta=eta, beta=beta,
                                 start=start, early_exit=early_exit, counter=counter)
            ok = best <= eps
            if verify is not None:  # float32 verdicts; the closest adversarial point found, projected, re-checked
                ok, adv = verify(xs, ys, ok, adv, loss="margin-targeted" if targeted else "margin", y_target=yt)
            success[idx[ok]] = True
            x_adv[idx[ok]] = adv[ok]
            better = best < dist[idx]
            dist[idx[better]] = best[better]
    return AttackResult(x_adv, dist, success, n_t * restarts * (steps + 1))


def fab_t(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    targets: int = 9,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    early_exit: bool = True,
    generator: torch.Generator | None = None,
    check: bool = True,
    counter: PassCounter | None = None,
    verify: Verify | None = None,
) -> AttackResult:
    """FAB-T: targeted FAB for the classes ranked 2nd .. ``targets + 1``-th by the clean logits,
    each on the points still robust (AutoAttack's ``fab-t``).

    Returns:
        :class:`AttackResult` with ``success`` = an adversarial point within ``eps`` was found and
        ``loss`` = the smallest adversarial distance found (inf where none; with ``early_exit``
        the search stops at the first one within ``eps``, pass ``early_exit=False`` for the
        minimal distance). ``verify``: a mixed-precision protocol's float32 check of every run
        (:class:`robrep.attacks.precision.Fp32Check`), re-checking from the closest adversarial
        point found, projected onto the ball.
    """
    return _fab_attack(model, x, target, threat, targeted=True, steps=steps, targets=targets, restarts=restarts,
                       alpha_max=alpha_max, eta=eta, beta=beta, early_exit=early_exit, generator=generator, check=check,
                       counter=counter, verify=verify)


def fab(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    restarts: int = 5,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    early_exit: bool = True,
    generator: torch.Generator | None = None,
    check: bool = True,
    counter: PassCounter | None = None,
    verify: Verify | None = None,
) -> AttackResult:
    """Untargeted FAB (nearest linearized boundary over all classes; ``C`` backward passes per
    step); restarts after the first start at a random point of half radius (AutoAttack+'s ``fab``)."""
    return _fab_attack(model, x, target, threat, targeted=False, steps=steps, targets=1, restarts=restarts,
                       alpha_max=alpha_max, eta=eta, beta=beta, early_exit=early_exit, generator=generator, check=check,
                       counter=counter, verify=verify)
