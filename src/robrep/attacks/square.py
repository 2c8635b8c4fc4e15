"""Square Attack (Andriushchenko et al., ECCV 2020): a score-based black-box attack, linf and l2.

Random search on the margin ``z_y - max_{j != y} z_j`` using only forward passes: each query
changes one square window (side from the schedule ``p(i)``: ``p_init`` halved at 10, 50, 200,
500, 1000, 2000, 4000, 6000 and 8000 queries) and keeps the change when the margin decreased
or the point became misclassified.

- linf: start from vertical stripes ``x +- eps``; a query sets the window of every channel to
  ``+-eps`` (one sign per channel).
- l2: start from a grid of ``h // 5``-wide squares, each a two-peaked pattern with random sign
  per channel, scaled to norm ``eps``; a query moves the mass of a second window into the first
  one and adds a fresh pattern there, keeping the total norm ``eps``.

The window positions and pattern orientations are drawn once per query for the batch, the signs
per point, from a ``torch.Generator`` in the order and shapes of the reference implementation
(``square.py`` of AutoAttack): the same seed and points give the reference's queries. A point
leaves the batch at its first success.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError
from ..threats import L2Ball, LinfBall, ThreatModel
from .apgd_targeted import PassCounter, Verify
from .pgd import AttackResult, _validate

__all__ = ["square", "p_selection"]


def p_selection(p_init: float, it: int) -> float:
    """The share of pixels a window covers at query ``it`` (the reference schedule)."""
    for bound, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8), (50, 4), (10, 2)):
        if it > bound:
            return p_init / div
    return p_init


class _Rng:
    def __init__(self, g: torch.Generator | None, device: torch.device) -> None:
        self.g, self.device = g, device

    def rand(self, shape: list[int]) -> torch.Tensor:
        dev = self.g.device if self.g is not None else torch.device("cpu")
        return torch.rand(shape, generator=self.g, device=dev).to(self.device)

    def sign(self, shape: list[int]) -> torch.Tensor:
        return torch.sign(2 * self.rand(shape) - 1)

    def randint(self, low: int, high: int) -> int:
        return int((low + (high - low) * self.rand([1])).long())


def _margin(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = net(x).float()
    yc = y[:, None]
    return z.gather(1, yc).squeeze(1) - z.scatter(1, yc, -float("inf")).max(1)[0]


def _eta_rect(h: int, w: int, device: torch.device) -> torch.Tensor:
    delta = torch.zeros(h, w, device=device)
    xc, yc = h // 2 + 1, w // 2 + 1
    c0, c1 = xc - 1, yc - 1
    for k in range(max(xc, yc)):
        delta[max(c0, 0) : min(c0 + 2 * k + 1, h), max(0, c1) : min(c1 + 2 * k + 1, w)] += 1.0 / (k + 1) ** 2
        c0 -= 1
        c1 -= 1
    return delta / delta.pow(2).sum().sqrt()


def _eta(s: int, rng: _Rng, device: torch.device) -> torch.Tensor:
    """The l2 square pattern: two opposite-signed peaks, unit norm, transposed with prob 1/2."""
    d = torch.zeros(s, s, device=device)
    d[: s // 2] = _eta_rect(s // 2, s, device)
    d[s // 2 :] = -_eta_rect(s - s // 2, s, device)
    d = d / d.pow(2).sum().sqrt()
    if float(rng.rand([1])) > 0.5:
        d = d.t()
    return d


def _l2n(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def square(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    check: bool = True,
    counter: PassCounter | None = None,
    steps: int | None = None,
    verify: Verify | None = None,
) -> AttackResult:
    """Square Attack, untargeted, on the margin loss (AutoAttack's ``square``).

    Args:
        queries: forward passes per point and restart (5,000 in AutoAttack's standard).
        p_init: initial share of pixels per window (0.8).
        steps: ignored (accepted so that protocols can pass one budget to every stage).
        verify: a mixed-precision protocol's float32 check of each restart's outcome (as in
            :func:`robrep.attacks.apgd_targeted.apgd_cascade`), from the best point found.

    Returns:
        :class:`AttackResult`; ``success`` = misclassified, ``loss`` = final margin,
        ``queries`` = the budget per point.
    """
    if check:
        _validate(model, x, threat, 1, restarts)
    if not isinstance(queries, int) or queries <= 0:
        raise InputError(f"square needs a query budget > 0, got {queries!r}; use e.g. queries=5000")
    if not isinstance(threat, (LinfBall, L2Ball)):
        raise InputError(f"square supports linf and l2 threat models, not {threat.norm}")
    if isinstance(threat, L2Ball) and min(x.shape[-2:]) < 5:
        raise InputError(f"square (l2) needs images of at least 5x5 pixels, got {tuple(x.shape[-2:])}")
    x = x.detach()
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    x_adv = x.clone()
    for _r in range(restarts):
        idx = torch.nonzero(~success).flatten()
        if len(idx) == 0:
            break
        run = _square_linf if isinstance(threat, LinfBall) else _square_l2
        s, xa = run(model, x[idx], target[idx], float(threat.eps), queries, p_init, _Rng(generator, x.device), counter)
        if verify is not None:
            s, xa = verify(x[idx], target[idx], s, xa, loss="margin")
        success[idx[s]] = True
        x_adv[idx[s]] = xa[s]
    with torch.no_grad():
        margin = _margin(model, x_adv, target) if x.shape[0] else torch.zeros(0)
    return AttackResult(x_adv, margin, success, restarts * queries)


def _linf_queries(n_queries: int, p_init: float, c: int, h: int, w: int, rng: _Rng) -> list[tuple[int, int, int, list[float]]]:
    """Every query's window ``(side, row, column)`` and per-channel signs, drawn at once.

    Per query the reference draws the row, the column (one uniform each) and ``c`` signs, a number
    that does not depend on the data; one ``(n_queries, 2 + c)`` draw of the same generator gives
    the same numbers in the same order, and the same arithmetic (float32) gives the same windows."""
    n_feat = c * h * w
    sides = [min(max(int(round(math.sqrt(p_selection(p_init, i) * n_feat / c))), 1), min(h, w)) for i in range(n_queries)]
    u = rng.rand([n_queries, 2 + c]).cpu()
    room = torch.tensor([[h - s, w - s] for s in sides], dtype=u.dtype)
    pos = (0 + room * u[:, :2]).long().tolist()
    sgn = torch.sign(2 * u[:, 2:] - 1).tolist()
    return [(s, r, q, g) for s, (r, q), g in zip(sides, pos, sgn)]


@torch.no_grad()
def _square_linf(net, x, y, eps, n_queries, p_init, rng, counter):  # type: ignore[no-untyped-def]
    b, c, h, w = x.shape
    x_best = (x + eps * rng.sign([b, c, 1, w])).clamp(0.0, 1.0)
    margin = _margin(net, x_best, y)
    if counter is not None:
        counter.forward += b
    best = x_best.clone()
    act = torch.nonzero(margin > 0).flatten()
    # the ball and the box as one clamp (x in [0,1]: the same values as the reference's max/min/clamp);
    # a query changes only its window, the rest of the current point is in both already
    lo, hi = (x - eps).clamp_min(0.0)[act], (x + eps).clamp_max(1.0)[act]
    ya, xb, mb = y[act], x_best[act], margin[act]
    plan = _linf_queries(n_queries, p_init, c, h, w, rng) if len(act) else []
    signs: dict[tuple[float, ...], torch.Tensor] = {}
    for s, vh, vw, sg in plan:
        key = tuple(sg)
        step = signs.get(key)
        if step is None:
            step = signs[key] = 2.0 * eps * torch.tensor(sg, dtype=x.dtype, device=x.device).view(c, 1, 1)
        win = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        x_new = xb.clone()
        x_new[win] = torch.clamp(xb[win] + step, lo[win], hi[win])
        m = _margin(net, x_new, ya)
        if counter is not None:
            counter.forward += len(act)
        imp = m < mb
        mb = torch.where(imp, m, mb)
        xb = torch.where(imp.view(-1, 1, 1, 1), x_new, xb)
        done = mb <= 0
        if bool(done.any()):
            best[act[done]] = xb[done]
            keep = ~done
            act, lo, hi, ya, xb, mb = act[keep], lo[keep], hi[keep], ya[keep], xb[keep], mb[keep]
            if len(act) == 0:
                break
    ok = torch.ones(b, dtype=torch.bool, device=x.device)
    ok[act] = False
    best[act] = xb  # unbroken points: their best point (not adversarial)
    return ok, best


@torch.no_grad()
def _square_l2(net, x, y, eps, n_queries, p_init, rng, counter):  # type: ignore[no-untyped-def]
    b, c, h, w = x.shape
    n_feat = c * h * w
    dev = x.device
    delta_init = torch.zeros_like(x)
    s = h // 5
    sp = (h - s * 5) // 2
    vh = sp
    for _ in range(h // s):
        vw = sp
        for _ in range(w // s):
            pat = _eta(s, rng, dev).view(1, 1, s, s)
            delta_init[:, :, vh : vh + s, vw : vw + s] += pat * rng.sign([b, c, 1, 1])
            vw += s
        vh += s
    x_best = (x + delta_init / (_l2n(delta_init) + 1e-12) * eps).clamp(0.0, 1.0)
    margin = _margin(net, x_best, y)
    if counter is not None:
        counter.forward += b
    best = x_best.clone()
    act = torch.nonzero(margin > 0).flatten()
    xa, ya, xb, mb = x[act], y[act], x_best[act], margin[act]
    for i in range(n_queries):
        if len(act) == 0:
            break
        delta = xb - xa
        p = p_selection(p_init, i)
        s = max(int(round(math.sqrt(p * n_feat / c))), 3)
        if s % 2 == 0:
            s += 1
        s = min(s, min(h, w))
        vh, vw = rng.randint(0, h - s), rng.randint(0, w - s)
        vh2, vw2 = rng.randint(0, h - s), rng.randint(0, w - s)
        mask = torch.zeros_like(xa[:1])
        mask[:, :, vh : vh + s, vw : vw + s] = 1.0
        mask[:, :, vh2 : vh2 + s, vw2 : vw2 + s] = 1.0
        win1 = delta[:, :, vh : vh + s, vw : vw + s]
        norms_win1 = win1.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
        norms_img = _l2n(delta)
        norms_windows = (delta * mask).pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
        pat = _eta(s, rng, dev).view(1, 1, s, s)
        new = pat * rng.sign([len(act), c, 1, 1]) + win1 / (1e-12 + norms_win1)
        room = ((eps**2 - norms_img**2).clamp_min(0.0) / c + norms_windows**2).sqrt()
        new = new / (1e-12 + new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()) * room
        delta = delta.clone()
        delta[:, :, vh2 : vh2 + s, vw2 : vw2 + s] = 0.0
        delta[:, :, vh : vh + s, vw : vw + s] = new
        x_new = (xa + delta / (_l2n(delta) + 1e-12) * eps).clamp(0.0, 1.0)
        m = _margin(net, x_new, ya)
        if counter is not None:
            counter.forward += len(act)
        imp = (m < mb) | (m <= 0)
        mb = torch.where(imp, m, mb)
        xb = torch.where(imp.view(-1, 1, 1, 1), x_new, xb)
        done = mb <= 0
        if bool(done.any()):
            best[act[done]] = xb[done]
            keep = ~done
            act, xa, ya, xb, mb = act[keep], xa[keep], ya[keep], xb[keep], mb[keep]
    ok = torch.ones(b, dtype=torch.bool, device=dev)
    ok[act] = False
    best[act] = xb
    return ok, best
