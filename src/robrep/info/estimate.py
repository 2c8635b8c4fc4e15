"""Mutual information I(X; R(X)) with trained critics, worst-case MI over a threat model, and
representation vulnerability.

Zhu, Zhang & Evans, *Learning Adversarially Robust Representations via Worst-Case Mutual
Information Maximization*, ICML 2020 (docs/methods/vulnerability.md):

* clean MI: a critic is trained to maximise a variational bound on (x, R(x)) batches and the
  bound is read on held-out batches;
* worst-case MI: the critic is trained on *perturbed* batches: before each critic step, PGD on
  the inputs lowers the batch estimate (all samples perturbed jointly, the empirical analogue
  of moving the distribution inside the W_inf ball; the gradient flows only through R(x'), the
  critic's x-branch sees x' detached); at evaluation PGD attacks each held-out batch against the
  trained critic;
* vulnerability RV = I_clean - I_worst (independent critics).

"The estimate is itself an optimization": every estimate trains ``n_critics`` critics with
different seeds and reports their mean with a Student-t 95 % interval (one critic: a bootstrap
over evaluation batches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..data import ImageData
from ..errors import InputError
from ..threats import ThreatModel
from .bound import accuracy_bound
from .bounds import Bound, get_bound
from .critics import create_critic

__all__ = [
    "Interval",
    "MIEstimate",
    "VulnerabilityResult",
    "batch_pgd",
    "estimate_mi",
    "estimate_mi_samples",
    "fit_critic",
    "interval_from_values",
    "vulnerability",
]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval [low, high] (``level``, e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def contains(self, v: float) -> bool:
        return self.low <= v <= self.high

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class MIEstimate:
    """An MI estimate (nats) from ``n_critics`` independently trained critics.

    Attributes:
        estimate: mean over critics of each critic's mean over evaluation batches.
        low, high: 95 % interval (Student t over critics; bootstrap over batches if one critic).
        estimator: bound name (``dv``, ``jsd``, ``infonce``...).
        n_critics: critics trained (different seeds).
        values: per-critic estimates.
        n_eval_batches, batch_size: evaluation batches per critic and their size.
        threat: the threat model (None for the clean estimate).
        method: how the interval was computed.
    """

    estimate: float
    low: float
    high: float
    estimator: str
    n_critics: int
    values: tuple[float, ...]
    n_eval_batches: int
    batch_size: int
    threat: dict[str, Any] | None = None
    method: str = "t"
    level: float = 0.95

    @property
    def interval(self) -> Interval:
        return Interval(self.estimate, self.low, self.high, self.level)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = list(self.values)
        return d


@dataclass(frozen=True)
class VulnerabilityResult:
    """Representation vulnerability of one layer at one threat model (docs/methods/vulnerability.md).

    Attributes:
        layer: representation name.
        threat: threat model dict.
        mi_clean, mi_worst: the two estimates.
        vulnerability: I_clean - I_worst, with a t interval over critic pairs.
        accuracy_bound: Fano bound on the adversarial accuracy of *any* downstream classifier,
            ``min(1, (I_worst + log 2) / log |Y|)``, its interval mapped from mi_worst's.
        num_classes: |Y| used in the bound.
    """

    layer: str
    threat: dict[str, Any]
    mi_clean: MIEstimate
    mi_worst: MIEstimate
    vulnerability: Interval
    accuracy_bound: Interval
    num_classes: int

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "threat": self.threat, "num_classes": self.num_classes,
                "mi_clean": self.mi_clean.to_dict(), "mi_worst": self.mi_worst.to_dict(),
                "vulnerability": self.vulnerability.to_dict(), "accuracy_bound": self.accuracy_bound.to_dict()}


def interval_from_values(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t interval of independent replicate values (needs >= 2)."""
    from scipy import stats

    v = torch.tensor([float(a) for a in values], dtype=torch.float64)
    if len(v) < 2:
        raise InputError("an interval over replicates needs at least 2 values")
    m = float(v.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1)) * float(v.std(unbiased=True)) / math.sqrt(len(v))
    return Interval(m, m - half, m + half, level)


def _bootstrap(values: Sequence[float], level: float, seed: int, reps: int = 2000) -> Interval:
    v = torch.tensor([float(a) for a in values], dtype=torch.float64)
    m = float(v.mean())
    if len(v) < 2:
        return Interval(m, m, m, level)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(v), (reps, len(v)), generator=g)
    means = v[idx].mean(1)
    q = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return Interval(m, float(q[0]), float(q[1]), level)


# ---------------------------------------------------------------------------------------------
# The inner optimizer.


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

    Each step is a steepest-descent step of the threat's norm on ``objective(x_adv)`` followed by
    projection onto the eps-ball around ``x`` and the [0,1] box. Unlike per-example PGD, the
    objective couples the samples (e.g. a batch MI estimate), so this moves the empirical
    distribution inside the W_inf ball.

    Args:
        objective: (B, ...) inputs -> scalar tensor to lower.
        x: clean batch (B, ...), values in [0,1].
        threat: the ball; eps = 0 returns ``x``.
        steps: descent steps; step_size: default 2.5 * eps / steps.
        keep_best: return the iterate with the lowest objective (the clean batch included).
        random_start: start uniformly in the ball (the paper does not).
        generator: random source of the start.

    Returns:
        (x_adv detached, objective value at x_adv).
    """
    if threat.eps == 0 or steps <= 0:
        with torch.no_grad():
            return x.detach(), float(objective(x.detach()))
    eta = step_size if step_size is not None else 2.5 * threat.eps / steps
    xa = threat.random_start(x, generator) if random_start else x.detach().clone()
    best, best_v = xa.clone(), math.inf
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        v = objective(xa)
        (g,) = torch.autograd.grad(v, xa)
        if keep_best and float(v.detach()) < best_v:
            best, best_v = xa.detach().clone(), float(v.detach())
        xa = threat.project(xa.detach() + threat.ascent(-g, eta), x)
    with torch.no_grad():
        v_last = float(objective(xa))
    if not keep_best or v_last < best_v:
        return xa.detach(), v_last
    return best, best_v


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


def _summarise(per_critic: list[list[float]], bound: Bound, batch_size: int, threat: ThreatModel | None, seed: int, level: float = 0.95) -> MIEstimate:
    vals = [sum(v) / len(v) for v in per_critic]
    if len(vals) >= 2:
        iv, method = interval_from_values(vals, level), "t over critics"
    else:
        iv, method = _bootstrap(per_critic[0], level, seed), "bootstrap over evaluation batches"
    return MIEstimate(iv.estimate, iv.low, iv.high, bound.name, len(vals), tuple(vals), len(per_critic[0]), batch_size,
                      threat.to_dict() if threat is not None else None, method, level)


def estimate_mi_samples(
    x: torch.Tensor,
    z: torch.Tensor,
    *,
    estimator: str = "dv",
    critic: str | Callable[[int], nn.Module] = "mlp",
    critic_kwargs: dict[str, Any] | None = None,
    n_critics: int = 3,
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 1e-4,
    eval_fraction: float = 0.2,
    n_eval_batches: int = 10,
    seed: int = 0,
) -> MIEstimate:
    """MI between paired samples (x_i, z_i) (e.g. a stochastic channel or synthetic data).

    Critics train on the first ``1 - eval_fraction`` of the pairs (random batches) and are read
    on ``n_eval_batches`` batches of the held-out rest.

    Args:
        x: (M, ...) samples; z: (M, D) paired samples.
        estimator: ``dv``, ``jsd``, ``infonce`` (``robrep.info.list_bounds()``).
        critic: critic name (``mlp``, ``dim``) or ``seed -> nn.Module``.
        critic_kwargs: options of a named critic.
        n_critics: independent critics (seeds ``seed``, ``seed+1``...).
        steps, batch_size, lr: critic training.
        eval_fraction, n_eval_batches: held-out evaluation.
        seed: seeds critic initialisation and batch order.

    Returns:
        :class:`MIEstimate` in nats.
    """
    if x.shape[0] != z.shape[0]:
        raise InputError(f"x and z must pair up: {x.shape[0]} vs {z.shape[0]} samples")
    b = get_bound(estimator)
    m = x.shape[0]
    n_ev = max(batch_size, int(round(eval_fraction * m)))
    if m - n_ev < batch_size:
        raise InputError(f"need at least {batch_size + n_ev} samples for batch_size={batch_size}, got {m}")
    xt, zt, xe, ze = x[: m - n_ev], z[: m - n_ev], x[m - n_ev :], z[m - n_ev :]

    def sample(xs: torch.Tensor, zs: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(xs.shape[0], generator=g)[:batch_size].to(xs.device)
        return xs[idx], zs[idx]

    per: list[list[float]] = []
    for k in range(n_critics):
        torch.manual_seed(seed * 7919 + k)
        c = _make_critic(critic, critic_kwargs, x.shape[1:], z.shape[1], seed * 7919 + k).to(x.device)
        fit_critic(c, lambda g: sample(xt, zt, g), b, steps=steps, lr=lr, generator=torch.Generator().manual_seed(seed * 7919 + k))
        ge = torch.Generator().manual_seed(seed + 10_000)
        with torch.no_grad():
            per.append([float(b.read(c(*sample(xe, ze, ge)))) for _ in range(n_eval_batches)])
    return _summarise(per, b, batch_size, None, seed)


def _make_critic(critic: str | Callable[[int], nn.Module], kwargs: dict[str, Any] | None, x_shape: Sequence[int], z_dim: int, seed: int) -> nn.Module:
    if isinstance(critic, str):
        return create_critic(critic, x_shape, z_dim, **(kwargs or {}))
    return critic(seed)


def _as_tensor(x: torch.Tensor | ImageData) -> torch.Tensor:
    if isinstance(x, ImageData):
        return x.tensors()[0]  # type: ignore[attr-defined]
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x must be a tensor or ImageData, got {type(x).__name__}")
    return x


def estimate_mi(
    rep: nn.Module,
    x: torch.Tensor | ImageData,
    *,
    threat: ThreatModel | None = None,
    estimator: str = "dv",
    critic: str | Callable[[int], nn.Module] = "dim",
    critic_kwargs: dict[str, Any] | None = None,
    n_critics: int = 3,
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 1e-4,
    attack_steps: int = 7,
    attack_step_size: float | None = None,
    eval_attack_steps: int = 20,
    eval_fraction: float = 0.2,
    n_eval_batches: int = 8,
    seed: int = 0,
) -> MIEstimate:
    """I(X; R(X)) (``threat=None``) or the worst-case I(X'; R(X')) over ``threat``.

    Zhu et al. 2020, docs/methods/vulnerability.md. ``rep`` is frozen (eval mode, no parameter gradients).

    Args:
        rep: any module mapping inputs x (N, ...) in [0,1] to (N, D) representations, e.g.
            ``robrep.models.representation(model, layer)``.
        x: inputs (M, ...) in [0,1] or an :class:`ImageData`; the last ``eval_fraction`` is
            held out for evaluation.
        threat: threat model of the worst case (None or eps = 0: clean MI).
        estimator: ``dv`` (paper default), ``jsd``, ``infonce``.
        critic: ``dim`` (paper; images), ``mlp`` (vectors) or ``seed -> nn.Module``.
        critic_kwargs: e.g. ``{"hidden": 64, "width": 16}`` for the dim critic.
        n_critics: independently trained critics (interval over them).
        steps, batch_size, lr: critic training (paper: Adam 1e-4, batch 128).
        attack_steps, attack_step_size: PGD during critic training (paper: 7 steps, no random
            start; default step 2.5 eps / steps).
        eval_attack_steps: PGD steps on each evaluation batch against the trained critic.
        n_eval_batches: evaluation batches per critic.
        seed: seeds everything.

    Returns:
        :class:`MIEstimate` (nats).
    """
    xs = _as_tensor(x)
    b = get_bound(estimator)
    rep.eval()
    dev = next(iter(rep.parameters()), torch.empty(0, device=xs.device)).device
    xs = xs.to(dev)
    m = xs.shape[0]
    n_ev = max(batch_size, int(round(eval_fraction * m)))
    if m - n_ev < batch_size:
        raise InputError(f"need at least {batch_size + n_ev} inputs for batch_size={batch_size}, got {m}")
    xt, xe = xs[: m - n_ev], xs[m - n_ev :]
    worst = threat is not None and threat.eps > 0
    with torch.no_grad():
        z_dim = rep(xt[:2]).flatten(1).shape[1]
        zt = None if worst else torch.cat([rep(xt[i : i + 500]).flatten(1) for i in range(0, len(xt), 500)])

    def perturb(c: nn.Module, xb: torch.Tensor, steps_: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        assert threat is not None
        c.eval()
        xa, _ = batch_pgd(lambda xx: fn(c(xx.detach(), rep(xx).flatten(1))), xb, threat, steps=steps_,
                          step_size=attack_step_size if steps_ == attack_steps else None)
        return xa

    per: list[list[float]] = []
    for k in range(n_critics):
        s = seed * 7919 + k + (104_729 if worst else 0)
        torch.manual_seed(s)
        c = _make_critic(critic, critic_kwargs, xs.shape[1:], z_dim, s).to(dev)

        def pairs(g: torch.Generator, c: nn.Module = c) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randperm(xt.shape[0], generator=g)[:batch_size].to(dev)
            xb = xt[idx]
            if not worst:
                assert zt is not None
                return xb, zt[idx]
            xb = perturb(c, xb, attack_steps, b.train)
            with torch.no_grad():
                return xb, rep(xb).flatten(1)

        fit_critic(c, pairs, b, steps=steps, lr=lr, generator=torch.Generator().manual_seed(s))
        ge = torch.Generator().manual_seed(seed + 10_000)
        vals = []
        for _ in range(n_eval_batches):
            xb = xe[torch.randperm(xe.shape[0], generator=ge)[:batch_size].to(dev)]
            if worst:
                xb = perturb(c, xb, eval_attack_steps, b.read)
            with torch.no_grad():
                vals.append(float(b.read(c(xb, rep(xb).flatten(1)))))
        per.append(vals)
    return _summarise(per, b, batch_size, threat if worst else None, seed)


def vulnerability(
    rep: nn.Module,
    x: torch.Tensor | ImageData,
    threat: ThreatModel,
    *,
    num_classes: int = 10,
    layer: str = "representation",
    mi_clean: MIEstimate | None = None,
    **kwargs: Any,
) -> VulnerabilityResult:
    """Representation vulnerability RV = I(X; R(X)) - inf_{W_inf <= eps} I(X'; R(X')).

    Zhu et al. 2020 (docs/methods/vulnerability.md): clean and worst-case MI are estimated with
    independent critics (different seeds, so eps = 0 gives RV = 0 only up to estimator noise);
    the interval of RV is a Student t over the critic pairs. The bound on the adversarial
    accuracy of any downstream classifier is the Fano form (docs/methods/vulnerability.md).

    Args:
        rep, x: as in :func:`estimate_mi`.
        threat: the threat model.
        num_classes: |Y| for the accuracy bound.
        layer: name recorded in the result.
        mi_clean: reuse a clean estimate (e.g. across an eps sweep).
        kwargs: passed to :func:`estimate_mi` (estimator, critic, n_critics, steps...).

    Returns:
        :class:`VulnerabilityResult`.
    """
    clean = mi_clean if mi_clean is not None else estimate_mi(rep, x, threat=None, **kwargs)
    if threat.eps == 0:
        kw = dict(kwargs)
        kw["seed"] = kw.get("seed", 0) + 1  # independent critics, as for eps > 0
        worst = estimate_mi(rep, x, threat=None, **kw)
        worst = MIEstimate(**{**worst.to_dict(), "values": worst.values, "threat": threat.to_dict()})
    else:
        worst = estimate_mi(rep, x, threat=threat, **kwargs)
    diffs = [a - b for a, b in zip(clean.values, worst.values)]
    rv = interval_from_values(diffs) if len(diffs) >= 2 else Interval(diffs[0], diffs[0], diffs[0])
    ab = Interval(accuracy_bound(worst.estimate, num_classes), accuracy_bound(worst.low, num_classes),
                  accuracy_bound(worst.high, num_classes))
    return VulnerabilityResult(layer, threat.to_dict(), clean, worst, rv, ab, num_classes)
