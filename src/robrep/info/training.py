"""Critic training for MI and worst-case MI estimates (docs/methods/vulnerability.md): the joint
batch attack (:func:`batch_pgd`, one PGD run against all critics), critic fitting with early
stopping on a validation batch, the fixed train / validation / held-out split, held-out reads,
and the per-dimension standardisation of the features the critics see."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..threats import ThreatModel
from .critics import create_critics
from .mi_bounds import Bound, get_bound
from .settings import MISettings

__all__ = ["batch_pgd", "fit_critic"]


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Joint(nn.Module):
    """x' -> (x' detached, R(x')): the critic's x-branch sees x' without gradient, as in the
    authors' code; dI/dx' flows through the representation only."""

    def __init__(self, rep: nn.Module) -> None:
        super().__init__()
        self.rep = rep

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.detach(), self.rep(x).flatten(1)


def _batch_loss(objective: Callable[[Any], torch.Tensor]) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """A batch-level scalar as a per-example loss whose sum is the scalar (PGD sums it)."""

    def loss(out: Any, target: torch.Tensor) -> torch.Tensor:
        v = objective(out)
        return v.expand(target.shape[0]) / target.shape[0]

    return loss


def batch_pgd(
    objective: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 7,
    step_size: float | None = None,
    keep_best: bool = True,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Jointly perturb a whole batch to *minimise* a batch-level scalar (docs/methods/vulnerability.md).

    This is :func:`robrep.attacks.pgd_perturb` (the library's one PGD) run on
    ``objective`` spread over the batch: each step is a steepest-descent step of the threat's
    norm followed by projection onto the eps-ball around ``x`` and the [0,1] box. Unlike
    per-example PGD, the objective couples the samples (e.g. a batch MI estimate), so this moves
    the empirical distribution inside the W_inf ball.

    Args:
        objective: (B, ...) inputs -> scalar tensor to lower.
        x: clean batch (B, ...), values in [0,1].
        threat: the ball; eps = 0 returns ``x``.
        steps: descent steps; step_size: default 2.5 * eps / steps.
        keep_best: return the better of the start and the last iterate.
        random_start: start uniformly in the ball (the paper does not).
        generator: random source of the start.

    Returns:
        (x_adv detached, objective value at x_adv).
    """
    from ..attacks import pgd_perturb

    x = x.detach()
    with torch.no_grad():
        v0 = float(objective(x))
    if threat.eps == 0 or steps <= 0:
        return x, v0
    xa = pgd_perturb(_Identity(), x, torch.zeros(x.shape[0], device=x.device), threat, steps=steps, step_size=step_size,
                     loss=_batch_loss(objective), random_start=random_start, targeted=True, generator=generator, check=False)
    with torch.no_grad():
        v = float(objective(xa))
    if keep_best and v0 < v:
        return x, v0
    return xa, v


def _per_critic(fn: Callable[[torch.Tensor], torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
    """(k, L, N, N) scores -> (k,) values of ``fn`` per critic."""
    return torch.stack([fn(scores[j]) for j in range(scores.shape[0])])


def _attack_critics(critics: nn.Module, rep: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    threat: ThreatModel, steps: int, step_size: float | None,
                    members: Sequence[int] | None = None) -> torch.Tensor:
    """One PGD run lowering the estimate averaged over all critics, or over the critics
    ``members`` only (critics in eval mode)."""
    from ..attacks import pgd_perturb

    was = critics.training
    critics.eval()
    sel = None if members is None else list(members)

    def objective(out: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        sc = critics(*out)
        return _per_critic(fn, sc if sel is None else sc[sel]).mean()

    try:
        return pgd_perturb(_Joint(rep), x, torch.zeros(x.shape[0], device=x.device), threat, steps=steps,
                           step_size=step_size, loss=_batch_loss(objective), random_start=False, targeted=True, check=False)
    finally:
        critics.train(was)


# ---------------------------------------------------------------------------------------------
# Critic training.


def fit_critic(
    critic: nn.Module,
    pairs: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    bound: str | Bound = "dv",
    *,
    steps: int = 500,
    lr: float = 1e-4,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train ``critic`` by Adam ascent of ``bound.train`` on batches from ``pairs``.

    Args:
        critic: (x, z) -> (L, N, N) scores; trained in place.
        pairs: generator -> (x batch, z batch) (already perturbed for worst-case estimation; z
            must not require gradients).
        bound: estimator name or :class:`Bound`.
        steps: optimizer steps; lr: Adam learning rate (paper: 1e-4).
        generator: random source passed to ``pairs``.

    Returns:
        The training objective per step.
    """
    b = get_bound(bound)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    hist = []
    for _ in range(steps):
        x, z = pairs(g)
        critic.train()
        v = b.train(critic(x, z))
        opt.zero_grad(set_to_none=True)
        (-v).backward()
        opt.step()
        hist.append(float(v.detach()))
    critic.eval()
    return hist


def _split_sizes(m: int, s: MISettings) -> tuple[int, int, int, int]:
    """(held-out batches, their size, validation inputs, inputs needed) of the split of ``m`` inputs."""
    bs, eb = s.batch_size, s.eval_batch_size or s.batch_size
    nb = s.n_eval_batches or max(1, int(round(s.eval_fraction * m)) // eb)
    n_val = bs if s.patience > 0 else 0
    return nb, eb, n_val, nb * eb + n_val + bs


class _Data:
    """The fixed split of one estimate: training, one validation batch, held-out batches."""

    def __init__(self, x: torch.Tensor, z: torch.Tensor | None, s: MISettings, what: str) -> None:
        m = x.shape[0]
        bs = s.batch_size
        nb, eb, n_val, need = _split_sizes(m, s)
        n_ev = nb * eb
        if m < need:
            raise InputError(
                f"{m} {what} are too few for the held-out split: {nb} evaluation batch(es) of {eb}"
                f"{f', one validation batch of {n_val}' if n_val else ''} and at least one training batch of {bs} "
                f"need {need}; give at least {need} {what} or a smaller batch_size")
        self.nb, self.eb = nb, eb
        n_tr = m - n_ev - n_val
        self.xt, self.xv, self.xe = x[:n_tr], x[n_tr : n_tr + n_val], x[m - n_ev :]
        self.zt = self.zv = self.ze = None
        if z is not None:
            self.zt, self.zv, self.ze = z[:n_tr], z[n_tr : n_tr + n_val], z[m - n_ev :]


def _read_batch(critics: nn.Module, b: Bound, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(k, units) values of one batch: per-anchor terms (InfoNCE) or one value per batch."""
    sc = critics(x, z)
    # a constant critic reads exactly 0 (every bound here) and is as valid as any other, so a
    # critic reading below 0 on a batch is replaced by it there: the estimate never drops below
    # 0 and one failed critic cannot drag it to large negative values
    if b.terms is not None:
        t = torch.stack([b.terms(sc[j]) for j in range(sc.shape[0])])
        return torch.where(t.mean(1, keepdim=True) < 0, torch.zeros_like(t), t)
    return _per_critic(b.read, sc).clamp_min(0.0)[:, None]


def _check_finite(v: torch.Tensor, b: Bound, step: int, phase: str) -> None:
    if not bool(torch.isfinite(v).all()):
        raise InputError(
            f"the {b.name} estimate became non-finite at {phase} critic step {step} (values {[round(float(a), 3) for a in v]}); "
            f"no estimate is reported. Use estimator='infonce' (bounded by log N) or a smaller lr")


def _train(critics: nn.Module, b: Bound, s: MISettings, steps: int, batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]],
           validate: Callable[[], float] | None, seed: int, phase: str) -> int:
    """Adam ascent of every critic's bound on one shared batch per step; early stopping on
    ``validate()`` (mean held-out estimate) every ``eval_every`` steps. Returns steps taken.

    With ``s.average`` > 0 the critics that are validated, kept and read are an exponential moving
    average of the trained weights (decay ``s.average`` per step): Adam at a constant learning rate
    leaves the weights jittering around the optimum on noisy batches, and every bound read at a
    jittered point is low; the average sits nearer the optimum (docs/methods/vulnerability.md)."""
    opt = torch.optim.Adam(critics.parameters(), lr=s.lr)
    g = torch.Generator().manual_seed(seed)
    avg = float(s.average)
    params = [p for p in critics.parameters() if p.requires_grad]
    mean = [p.detach().clone() for p in params] if avg > 0 else None
    best, best_state, bad, t = -math.inf, None, 0, 0

    def swap() -> None:  # exchange the trained and the averaged weights
        assert mean is not None
        with torch.no_grad():
            for p, m in zip(params, mean):
                tmp = p.detach().clone()
                p.copy_(m)
                m.copy_(tmp)

    for t in range(1, steps + 1):
        xb, zb = batch(g)
        critics.train()
        v = _per_critic(b.train, critics(xb, zb))
        _check_finite(v.detach(), b, t, phase)
        opt.zero_grad(set_to_none=True)
        (-v.sum()).backward()
        opt.step()
        if mean is not None:
            with torch.no_grad():
                torch._foreach_lerp_(mean, [p.detach() for p in params], 1.0 - avg)
        if validate is not None and s.patience > 0 and (t % s.eval_every == 0 or t == steps):
            critics.eval()
            if mean is not None:
                swap()
            val = validate()
            if not math.isfinite(val):
                _check_finite(torch.tensor([val]), b, t, phase + " validation")
            if val > best + 1e-3:
                best, bad = val, 0
                best_state = {k_: p.detach().clone() for k_, p in critics.state_dict().items()}
            else:
                bad += 1
            if mean is not None:
                swap()
            if bad >= s.patience:
                break
    if best_state is not None:
        critics.load_state_dict(best_state)
    elif mean is not None:
        swap()
    critics.eval()
    return t


def _features(rep: nn.Module, x: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([rep(x[i : i + chunk]).flatten(1) for i in range(0, len(x), chunk)])


_MAX_CRITIC_WEIGHTS = 40_000_000


def _make_critics(s: MISettings, x_shape: Sequence[int], z_dim: int, seed: int, what: str) -> nn.Module:
    kw = dict(s.critic_kwargs or {})
    if s.critic == "mlp" and s.critic_temperature > 0:
        kw.setdefault("temperature", s.critic_temperature)
    if s.critic in ("mlp", "concat"):
        hidden = int(kw.get("hidden", 128))
        d_in = z_dim + (math.prod(x_shape) if s.critic == "concat" else 0)
        n_w = s.n_critics * max(d_in, z_dim) * hidden
        if n_w > _MAX_CRITIC_WEIGHTS:
            h_ok = max(8, _MAX_CRITIC_WEIGHTS // (s.n_critics * max(d_in, z_dim)))
            raise InputError(
                f"the {what} has {z_dim} features: {s.n_critics} {s.critic} critics with hidden={hidden} would need "
                f"{n_w / 1e6:.0f}M first-layer weights (limit {_MAX_CRITIC_WEIGHTS / 1e6:.0f}M); use critic='dim' "
                f"(its z-branch is a 1x1 block) or critic='mlp' with critic_kwargs={{'hidden': {h_ok}}}, or a later layer")
    return create_critics(s.critic, s.n_critics, x_shape, z_dim, seed=seed, **kw)


def _device(rep: nn.Module, x: torch.Tensor) -> torch.device:
    p = next(iter(rep.parameters()), None)
    return p.device if p is not None else x.device



class _Flatten(nn.Module):
    def __init__(self, rep: nn.Module) -> None:
        super().__init__()
        self.rep = rep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x).flatten(1)


def _standardiser(z: torch.Tensor) -> _Standardise:
    """Per-dimension standardisation with constants from ``z`` (constant dimensions stay 0)."""
    mu, sd = z.mean(0), z.std(0) if z.shape[0] > 1 else torch.ones_like(z[0])
    sd = torch.where(sd > 1e-6 * float(sd.max().clamp_min(1e-30)), sd, torch.ones_like(sd))
    return _Standardise(mu.detach(), sd.detach())


class _Standardise(nn.Module):
    def __init__(self, mu: torch.Tensor, sd: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("sd", sd)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mu) / self.sd
