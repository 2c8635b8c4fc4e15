"""Mutual information I(X; R(X)) with trained critics, worst-case MI over a threat model, and
representation vulnerability.

Zhu, Zhang & Evans, *Learning Adversarially Robust Representations via Worst-Case Mutual
Information Maximization*, ICML 2020 (docs/methods/vulnerability.md):

* clean MI: critics are trained to maximise a variational bound on (x, R(x)) batches and the
  bound is read on fixed held-out batches;
* worst-case MI: the critics are trained on *perturbed* batches: before each critic step, one
  PGD run on the inputs (``robrep.attacks.pgd_perturb`` with the batch estimate as its loss, all
  samples perturbed jointly, gradients only through R(x')) lowers the estimate averaged over all
  critics; at evaluation one PGD run per held-out batch attacks all trained critics together;
* vulnerability RV = I_clean - I_worst, paired by critic and held-out unit.

How the estimate is made cheap and its interval honest:

* ``k`` critics live in one module (:class:`~robrep.info.critics.SeparableMLPEnsemble`: one
  batched pass) and train together on one shared batch per step; the clean representations are
  computed once; the held-out evaluation batches are fixed and the same for every critic;
* the worst-case critics start from the trained clean critics (``warm_start``) and are
  fine-tuned adversarially, so the adversarial phase needs far fewer steps;
* early stopping: every ``eval_every`` steps the estimate is read on a validation batch held out
  of training (attacked, for the worst case); training stops after ``patience`` checks without
  improvement and the best critics are kept;
* the interval adds, in quadrature, a bootstrap over held-out units (anchors for InfoNCE,
  batches otherwise) and a Student t over critics; both one-way widths are reported beside it.

The defaults are the ``standard`` preset (:data:`PRESETS`); ``paper`` keeps the paper's
settings (DV bound, DIM critic, Adam 1e-4, PGD-7 per step, independent critics).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from ..data import ImageData
from ..errors import InputError
from ..threats import ThreatModel
from .fano import accuracy_bound
from .mi_bounds import Bound, get_bound
from .critics import create_critics

__all__ = [
    "DEFAULT_PRESET",
    "Interval",
    "MIEstimate",
    "MISettings",
    "PRESETS",
    "VulnerabilityResult",
    "batch_pgd",
    "estimate_mi",
    "estimate_mi_samples",
    "fit_critic",
    "interval_from_values",
    "mi_settings",
    "probe_robust_accuracy",
    "vulnerability",
]


@dataclass(frozen=True)
class MISettings:
    """Everything that decides an MI / vulnerability estimate (one preset plus overrides).

    Attributes:
        estimator: bound name (``infonce``, ``dv``, ``jsd``, ``smile``, ``dv-code``).
        critic: ``mlp`` (separable MLP critics, batched), ``dim`` (the paper's), ``concat``.
        critic_kwargs: options of the critic (e.g. ``{"hidden": 128, "embed": 32}``).
        n_critics: critics per estimate (trained together on one shared batch).
        steps: maximum clean critic steps; adv_steps: maximum worst-case critic steps.
        batch_size: training batch (InfoNCE: also the evaluation batch unless eval_batch_size).
        eval_batch_size: held-out batch size (None: batch_size). InfoNCE reads at most
            log(eval_batch_size) nats.
        lr: Adam learning rate of the critics.
        attack_steps, attack_step_size: PGD per critic step (step default 2.5 eps / steps).
        eval_attack_steps: PGD steps on each held-out batch.
        eval_fraction: share of the inputs held out for evaluation (whole batches); with
            ``folds`` > 1 it is 1 / folds.
        n_eval_batches: held-out batches per fold (None: as many as eval_fraction allows).
        folds: cross-fitting: the inputs are cut into ``folds`` parts, each part is held out once
            while the critics train on the others, and all held-out units enter the interval
            (every input is read once; the cost is ``folds`` times one fit).
        warm_start: worst-case critics start from the trained clean critics.
        eval_every, patience: early stopping on a validation batch (patience 0: off).
        level: interval level.
        preset: the preset these settings came from.
    """

    estimator: str = "infonce"
    critic: str = "mlp"
    critic_kwargs: dict[str, Any] | None = None
    n_critics: int = 4
    steps: int = 300
    adv_steps: int = 100
    batch_size: int = 64
    eval_batch_size: int | None = None
    lr: float = 1e-3
    attack_steps: int = 3
    attack_step_size: float | None = None
    eval_attack_steps: int = 10
    eval_fraction: float = 0.3
    n_eval_batches: int | None = None
    folds: int = 2
    warm_start: bool = True
    eval_every: int = 25
    patience: int = 3
    level: float = 0.95
    preset: str = "standard"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, MISettings] = {
    # measured choice (docs/benchmarks/vulnerability.md): InfoNCE + 4 batched separable MLP critics
    "standard": MISettings(),
    # a first look in seconds: fewer critics and steps, shorter attacks
    "quick": MISettings(n_critics=3, steps=150, adv_steps=50, attack_steps=2, eval_attack_steps=5, eval_every=25,
                        patience=2, folds=1, preset="quick"),
    # Zhu et al. 2020's settings: DV bound, DIM critic (K = 2048, width 64), Adam 1e-4, batch 128,
    # PGD-7 per critic step (no random start), PGD-20 at evaluation, independent critics, no early stop
    "paper": MISettings(estimator="dv", critic="dim", critic_kwargs={"hidden": 2048, "width": 64}, n_critics=3, steps=500,
                        adv_steps=500, batch_size=128, lr=1e-4, attack_steps=7, eval_attack_steps=20, eval_fraction=0.2,
                        folds=1, warm_start=False, patience=0, preset="paper"),
}
DEFAULT_PRESET = "standard"


def mi_settings(preset: str | MISettings | None = None, **overrides: Any) -> MISettings:
    """The settings of ``preset`` (``standard``, ``quick``, ``paper``) with ``overrides`` applied
    (``None`` values keep the preset's)."""
    if isinstance(preset, MISettings):
        base = preset
    else:
        name = DEFAULT_PRESET if preset is None else str(preset)
        if name not in PRESETS:
            raise InputError(f"unknown vulnerability preset {name!r}; choose one of {sorted(PRESETS)}")
        base = PRESETS[name]
    names = {f.name for f in fields(MISettings)}
    bad = [k for k in overrides if k not in names]
    if bad:
        raise InputError(f"unknown estimator setting(s) {bad}; known: {sorted(names)}")
    s = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    for k in ("n_critics", "batch_size", "steps"):
        if int(getattr(s, k)) < 1:
            raise InputError(f"{k} must be >= 1, got {getattr(s, k)}")
    if s.batch_size < 2:
        raise InputError(f"batch_size must be >= 2 (negatives are other batch members), got {s.batch_size}")
    if not 0 < s.eval_fraction < 1:
        raise InputError(f"eval_fraction must be in (0, 1), got {s.eval_fraction}")
    get_bound(s.estimator)
    return s


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval [low, high] (``level``, e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def contains(self, v: float) -> bool:
        return self.low <= v <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class MIEstimate:
    """An MI estimate (nats) from ``n_critics`` critics read on fixed held-out data.

    Attributes:
        estimate: mean over critics and held-out units.
        low, high: interval (units bootstrap and critics t interval in quadrature).
        estimator: bound name (``infonce``, ``dv``...).
        n_critics: critics trained.
        values: per-critic estimates.
        n_eval_batches, batch_size: held-out batches and their size.
        threat: the threat model (None for the clean estimate).
        method: how the interval was computed.
        level: interval level.
        width_units: width of the interval from resampling held-out units only (the data).
        width_critics: width from resampling critics only (the optimisation); t interval.
        unit: ``anchor`` (InfoNCE: each held-out example) or ``batch``.
        per_unit: (n_critics, units) values behind the interval.
        cap: log(eval batch) for InfoNCE (the most it can read), else None.
        capped: the estimate is within 1 nat of the cap: the reading may be limited by it (the true
            MI may be larger; use a larger eval_batch_size or another estimator).
        steps_run: critic steps actually taken (early stopping), clean then worst-case.
        settings: the :class:`MISettings` used.
        clean_per_unit: worst-case estimates only: the same critics read on the clean held-out
            units (used by :func:`vulnerability` so that I_clean is the better of the two reads).
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
    width_units: float | None = None
    width_critics: float | None = None
    unit: str = "batch"
    per_unit: tuple[tuple[float, ...], ...] = ()
    cap: float | None = None
    capped: bool = False
    steps_run: tuple[int, ...] = ()
    settings: dict[str, Any] | None = None
    clean_per_unit: tuple[tuple[float, ...], ...] = ()
    critic_state: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def interval(self) -> Interval:
        return Interval(self.estimate, self.low, self.high, self.level)

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "critic_state":
                continue
            v = getattr(self, f.name)
            if f.name == "values" or f.name == "steps_run":
                v = list(v)
            elif f.name in ("per_unit", "clean_per_unit"):
                v = [list(r) for r in v]
            d[f.name] = v
        return d


@dataclass(frozen=True)
class VulnerabilityResult:
    """Representation vulnerability of one layer at one threat model (docs/methods/vulnerability.md).

    Attributes:
        layer: representation name.
        threat: threat model dict.
        mi_clean, mi_worst: the two estimates.
        vulnerability: I_clean - I_worst with its interval (from the paired differences per
            critic and held-out unit, as for an MI estimate).
        accuracy_bound: Fano bound on the adversarial accuracy of *any* downstream classifier,
            ``min(1, (I_worst + log 2) / log |Y|)``, its interval mapped from mi_worst's.
        num_classes: |Y| used in the bound.
        width_units, width_critics: one-way interval widths of the vulnerability.
        probe_accuracy, probe_robust_accuracy: natural and adversarial accuracy of a linear probe on
            the layer (when labels were given), to read beside the bound.
        probe_attack: the attack behind ``probe_robust_accuracy`` (``pgd`` unless ``probe_attack=``
            named another attack or a protocol; with its ``protocol_version``).
    """

    layer: str
    threat: dict[str, Any]
    mi_clean: MIEstimate
    mi_worst: MIEstimate
    vulnerability: Interval
    accuracy_bound: Interval
    num_classes: int
    width_units: float | None = None
    width_critics: float | None = None
    probe_accuracy: float | None = None
    probe_robust_accuracy: float | None = None
    probe_attack: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "threat": self.threat, "num_classes": self.num_classes,
                "mi_clean": self.mi_clean.to_dict(), "mi_worst": self.mi_worst.to_dict(),
                "vulnerability": {**self.vulnerability.to_dict(), "width_units": self.width_units,
                                  "width_critics": self.width_critics},
                "accuracy_bound": self.accuracy_bound.to_dict(),
                "probe_accuracy": self.probe_accuracy, "probe_robust_accuracy": self.probe_robust_accuracy,
                "probe_attack": self.probe_attack}


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
                    threat: ThreatModel, steps: int, step_size: float | None) -> torch.Tensor:
    """One PGD run lowering the estimate averaged over all critics (critics in eval mode)."""
    from ..attacks import pgd_perturb

    was = critics.training
    critics.eval()
    try:
        return pgd_perturb(_Joint(rep), x, torch.zeros(x.shape[0], device=x.device), threat, steps=steps,
                           step_size=step_size, loss=_batch_loss(lambda out: _per_critic(fn, critics(*out)).mean()),
                           random_start=False, targeted=True, check=False)
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


def _boot_index(k: int, u: int, reps: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, (reps, k), generator=g), torch.randint(0, u, (reps, u), generator=g)


def _boot_draws(v: torch.Tensor, ki: torch.Tensor, ui: torch.Tensor) -> torch.Tensor:
    """Bootstrap means of a (k, u) matrix, critics and units resampled together: (reps,)."""
    reps = ki.shape[0]
    col = v[:, ui].mean(-1)  # (k, reps): each critic's mean over the resampled units
    return col.gather(0, ki.T).mean(0) if reps else col.mean(0)


def _quantiles(draws: torch.Tensor, level: float) -> tuple[float, float]:
    q = torch.quantile(draws, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=draws.dtype))
    return float(q[0]), float(q[1])


def _matrix_interval(v: torch.Tensor, level: float, seed: int, reps: int = 2000,
                     index: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[Interval, float, float]:
    """(interval over critics and units, width over units only, width over critics only)."""
    v = v.double()
    k, u = v.shape
    m = float(v.mean())
    ki, ui = index if index is not None else _boot_index(k, u, reps, seed, v.device)
    lo_u, hi_u = _quantiles(v.mean(0)[ui].mean(-1), level) if u > 1 else (m, m)
    w_c = interval_from_values(v.mean(1).tolist(), level).width if k > 1 else 0.0
    if k > 1:
        # data and optimisation add up: Var(mean) ~ s_units^2 / u + s_critics^2 / k; the units part
        # from the bootstrap, the critics part from a Student t over the (few) critics
        half = math.sqrt(((hi_u - lo_u) / 2) ** 2 + (w_c / 2) ** 2)
        return Interval(m, m - half, m + half, level), hi_u - lo_u, w_c
    lo, hi = _quantiles(_boot_draws(v, ki, ui), level)
    return Interval(m, min(lo, m), max(hi, m), level), hi_u - lo_u, w_c


class _Data:
    """The fixed split of one estimate: training, one validation batch, held-out batches."""

    def __init__(self, x: torch.Tensor, z: torch.Tensor | None, s: MISettings, what: str) -> None:
        m = x.shape[0]
        bs, eb = s.batch_size, s.eval_batch_size or s.batch_size
        nb = s.n_eval_batches or max(1, int(round(s.eval_fraction * m)) // eb)
        n_ev, n_val = nb * eb, (bs if s.patience > 0 else 0)
        need = n_ev + n_val + bs
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
    ``validate()`` (mean held-out estimate) every ``eval_every`` steps. Returns steps taken."""
    opt = torch.optim.Adam(critics.parameters(), lr=s.lr)
    g = torch.Generator().manual_seed(seed)
    best, best_state, bad, t = -math.inf, None, 0, 0
    for t in range(1, steps + 1):
        xb, zb = batch(g)
        critics.train()
        v = _per_critic(b.train, critics(xb, zb))
        _check_finite(v.detach(), b, t, phase)
        opt.zero_grad(set_to_none=True)
        (-v.sum()).backward()
        opt.step()
        if validate is not None and s.patience > 0 and (t % s.eval_every == 0 or t == steps):
            critics.eval()
            val = validate()
            if not math.isfinite(val):
                _check_finite(torch.tensor([val]), b, t, phase + " validation")
            if val > best + 1e-3:
                best, bad = val, 0
                best_state = {k_: p.detach().clone() for k_, p in critics.state_dict().items()}
            else:
                bad += 1
                if bad >= s.patience:
                    break
    if best_state is not None:
        critics.load_state_dict(best_state)
    critics.eval()
    return t


def _features(rep: nn.Module, x: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([rep(x[i : i + chunk]).flatten(1) for i in range(0, len(x), chunk)])


_MAX_CRITIC_WEIGHTS = 40_000_000


def _make_critics(s: MISettings, x_shape: Sequence[int], z_dim: int, seed: int, what: str) -> nn.Module:
    kw = dict(s.critic_kwargs or {})
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


def _summary(v: torch.Tensor, b: Bound, s: MISettings, nb: int, eb: int, threat: ThreatModel | None, seed: int,
             steps_run: tuple[int, ...], state: dict[str, torch.Tensor] | None) -> MIEstimate:
    iv, w_u, w_c = _matrix_interval(v, s.level, seed)
    unit = "anchor" if b.terms is not None else "batch"
    cap = math.log(eb) if b.cap_log_n else None
    vals = tuple(float(a) for a in v.double().mean(1))
    return MIEstimate(iv.estimate, iv.low, iv.high, b.name, v.shape[0], vals, nb, eb,
                      threat.to_dict() if threat is not None else None,
                      (f"bootstrap over held-out {unit}s and t over critics, in quadrature" if v.shape[0] > 1
                       else f"bootstrap over held-out {unit}s"), s.level, w_u, w_c, unit,
                      tuple(tuple(float(a) for a in r) for r in v.double()), cap,
                      bool(cap is not None and iv.estimate >= cap - 1.0), steps_run, s.to_dict(), critic_state=state)


def estimate_mi_samples(
    x: torch.Tensor,
    z: torch.Tensor,
    *,
    preset: str | MISettings | None = None,
    estimator: str | None = None,
    critic: str | None = None,
    critic_kwargs: dict[str, Any] | None = None,
    n_critics: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    eval_fraction: float | None = None,
    n_eval_batches: int | None = None,
    seed: int = 0,
    **settings: Any,
) -> MIEstimate:
    """MI between paired samples (x_i, z_i) (e.g. a stochastic channel or synthetic data).

    The critics train on the first part of the pairs (shared random batches), stop early on a
    validation batch, and are read on fixed held-out batches at the end (see
    :class:`MISettings`; defaults: the ``standard`` preset).

    Args:
        x: (M, ...) samples; z: (M, D) paired samples.
        preset: ``standard`` (default), ``quick``, ``paper`` or an :class:`MISettings`.
        estimator, critic, critic_kwargs, n_critics, steps, batch_size, lr, eval_fraction,
            n_eval_batches, settings: override the preset (:class:`MISettings` fields).
        seed: seeds critic initialisation and batch order.

    Returns:
        :class:`MIEstimate` in nats.
    """
    if x.shape[0] != z.shape[0]:
        raise InputError(f"x and z must pair up: {x.shape[0]} vs {z.shape[0]} samples")
    s = mi_settings(preset, estimator=estimator, critic=critic, critic_kwargs=critic_kwargs, n_critics=n_critics,
                    steps=steps, batch_size=batch_size, lr=lr, eval_fraction=eval_fraction, n_eval_batches=n_eval_batches,
                    **settings)
    if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(z).all())):
        raise InputError("x and z must be finite (found NaN or inf)")
    b = get_bound(s.estimator)
    z = _standardiser(z.flatten(1))(z.flatten(1))  # a fixed invertible affine map: MI unchanged
    d = _Data(x, z, s, "samples")
    critics = _make_critics(s, x.shape[1:], z.shape[1], seed * 7919, "representation").to(x.device)
    assert d.zt is not None and d.zv is not None and d.ze is not None

    def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(d.xt.shape[0], generator=g)[: s.batch_size].to(x.device)
        return d.xt[idx], d.zt[idx]  # type: ignore[index]

    def validate() -> float:
        with torch.no_grad():
            return float(_per_critic(b.read, critics(d.xv, d.zv)).mean())

    t = _train(critics, b, s, s.steps, batch, validate, seed * 7919, "clean")
    with torch.no_grad():
        v = torch.cat([_read_batch(critics, b, d.xe[i * d.eb : (i + 1) * d.eb], d.ze[i * d.eb : (i + 1) * d.eb])
                       for i in range(d.nb)], 1)
    return _summary(v, b, s, d.nb, d.eb, None, seed, (t,), None)


def _as_tensor(x: torch.Tensor | ImageData) -> torch.Tensor:
    if isinstance(x, ImageData):
        return x.tensors()[0]  # type: ignore[attr-defined]
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x must be a tensor or ImageData, got {type(x).__name__}")
    return x


def _device(rep: nn.Module, x: torch.Tensor) -> torch.device:
    p = next(iter(rep.parameters()), None)
    return p.device if p is not None else x.device


def _check_threat(threat: ThreatModel) -> None:
    if not isinstance(threat, ThreatModel):
        raise InputError(f"threat must be a ThreatModel (robrep.threat('linf', eps)), got {type(threat).__name__}")
    if threat.norm == "linf" and threat.eps > 1:
        raise InputError(f"linf eps is in [0,1] pixel units, got {threat.eps:g}; did you mean {threat.eps:g}/255?")


def _fold(rep: nn.Module, xs: torch.Tensor, z_all: torch.Tensor, threat: ThreatModel | None, s: MISettings, seed: int,
          init_state: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, list[int], dict[str, torch.Tensor], int, int]:
    """One train / validate / evaluate pass; the held-out part is the end of ``xs``."""
    b = get_bound(s.estimator)
    dev = xs.device
    worst = threat is not None and threat.eps > 0
    d = _Data(xs, z_all, s, "inputs")
    assert d.zt is not None and d.zv is not None and d.ze is not None
    what = f"representation ({tuple(z_all.shape[1:])})"
    critics = _make_critics(s, xs.shape[1:], z_all.shape[1], seed * 7919, what).to(dev)
    steps_run: list[int] = []
    if init_state is not None:
        critics.load_state_dict(init_state)
    elif not worst or s.warm_start:
        def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randperm(d.xt.shape[0], generator=g)[: s.batch_size].to(dev)
            return d.xt[idx], d.zt[idx]  # type: ignore[index]

        def validate() -> float:
            with torch.no_grad():
                return float(_per_critic(b.read, critics(d.xv, d.zv)).mean())

        steps_run.append(_train(critics, b, s, s.steps, batch, validate, seed * 7919 + 1, "clean"))
    clean_state = {k: p.detach().clone() for k, p in critics.state_dict().items()}
    if worst:
        assert threat is not None

        def adv_batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randperm(d.xt.shape[0], generator=g)[: s.batch_size].to(dev)
            xa = _attack_critics(critics, rep, b.train, d.xt[idx], threat, s.attack_steps, s.attack_step_size)
            with torch.no_grad():
                return xa, rep(xa).flatten(1)

        def adv_validate() -> float:
            xa = _attack_critics(critics, rep, b.read, d.xv, threat, s.attack_steps, s.attack_step_size)
            with torch.no_grad():
                return float(_per_critic(b.read, critics(xa, rep(xa).flatten(1))).mean())

        n_adv = s.adv_steps if (s.warm_start or init_state is not None) else max(s.adv_steps, s.steps)
        steps_run.append(_train(critics, b, s, n_adv, adv_batch, adv_validate, seed * 7919 + 2, "worst-case"))
    cols, clean_cols = [], []
    for i in range(d.nb):
        xb, zb = d.xe[i * d.eb : (i + 1) * d.eb], d.ze[i * d.eb : (i + 1) * d.eb]
        with torch.no_grad():
            vc = _read_batch(critics, b, xb, zb)
        clean_cols.append(vc)
        if worst:
            assert threat is not None
            xa = _attack_critics(critics, rep, b.read, xb, threat, s.eval_attack_steps, None)
            with torch.no_grad():
                va = _read_batch(critics, b, xa, rep(xa).flatten(1))
            vc = va if float(va.mean()) <= float(vc.mean()) else vc  # keep the better attack point (the clean one included)
        cols.append(vc)
    v = torch.cat(cols, 1)
    if not bool(torch.isfinite(v).all()):
        _check_finite(v.flatten(), b, sum(steps_run), "held-out evaluation after")
    return v, steps_run, clean_state, d.nb, d.eb, torch.cat(clean_cols, 1)


def _estimate(rep: nn.Module, xs: torch.Tensor, threat: ThreatModel | None, s: MISettings, seed: int,
              init: MIEstimate | None) -> tuple[MIEstimate, torch.Tensor]:
    b = get_bound(s.estimator)
    rep.eval()
    dev = _device(rep, xs)
    xs = xs.to(dev)
    if not bool(torch.isfinite(xs).all()) or float(xs.min()) < 0 or float(xs.max()) > 1:
        raise InputError("inputs must be finite and in [0,1] (models normalise inside)")
    worst = threat is not None and threat.eps > 0
    z_all = _features(rep, xs)
    if not bool(torch.isfinite(z_all).all()):
        raise InputError("the representation has non-finite values on these inputs")
    # critics see standardised features (per dimension, constants from the clean inputs): a fixed
    # invertible affine map of R(x), so MI and vulnerability are unchanged, but the critics no
    # longer depend on the layer's scale
    norm = _standardiser(z_all)
    rep = nn.Sequential(_Flatten(rep), norm)
    z_all = norm(z_all)
    m, nf = xs.shape[0], max(1, int(s.folds))
    size = m // nf
    eb = s.eval_batch_size or s.batch_size
    sf = s if nf == 1 else replace(s, eval_fraction=1.0 / nf,
                                   n_eval_batches=None if s.n_eval_batches is None else min(s.n_eval_batches, max(1, size // eb)))
    mats, clean_mats, steps_run, state, nb = [], [], [], {}, 0
    for f in range(nf):
        if nf == 1:
            xf, zf = xs, z_all
        else:  # cross-fitting: fold f is held out, the others train
            idx = torch.cat([torch.arange(0, f * size), torch.arange((f + 1) * size, m), torch.arange(f * size, (f + 1) * size)]).to(dev)
            xf, zf = xs[idx], z_all[idx]
        st = None
        if init is not None and init.critic_state is not None:
            st = {k[len(f"{f}.") :]: t for k, t in init.critic_state.items() if k.startswith(f"{f}.")}
        v, sr, cs, nb_f, eb, vclean = _fold(rep, xf, zf, threat, sf, seed + 101 * f, st)
        mats.append(v)
        clean_mats.append(vclean)
        steps_run += sr
        nb += nb_f
        state.update({f"{f}.{k}": t for k, t in cs.items()})
    if init is not None:
        steps_run = list(init.steps_run) + steps_run
    v = torch.cat(mats, 1)
    est = _summary(v, b, s, nb, eb, threat if worst else None, seed, tuple(steps_run), None if worst else state)
    if worst:  # the clean read of the adversarially fine-tuned critics (a clean MI estimate too)
        est = replace(est, clean_per_unit=tuple(tuple(float(a) for a in r) for r in torch.cat(clean_mats, 1).double()))
    return est, v


def estimate_mi(
    rep: nn.Module,
    x: torch.Tensor | ImageData,
    *,
    threat: ThreatModel | None = None,
    preset: str | MISettings | None = None,
    estimator: str | None = None,
    critic: str | None = None,
    critic_kwargs: dict[str, Any] | None = None,
    n_critics: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    attack_steps: int | None = None,
    attack_step_size: float | None = None,
    eval_attack_steps: int | None = None,
    eval_fraction: float | None = None,
    n_eval_batches: int | None = None,
    seed: int = 0,
    **settings: Any,
) -> MIEstimate:
    """I(X; R(X)) (``threat=None``) or the worst-case I(X'; R(X')) over ``threat``.

    Zhu et al. 2020, docs/methods/vulnerability.md. ``rep`` is frozen (eval mode, no parameter gradients).

    Args:
        rep: any module mapping inputs x (N, ...) in [0,1] to (N, D) representations, e.g.
            ``robrep.models.representation(model, layer)``.
        x: inputs (M, ...) in [0,1] or an :class:`ImageData`; the last ``eval_fraction`` is
            held out for evaluation (whole batches), one batch before it for early stopping.
        threat: threat model of the worst case (None or eps = 0: clean MI).
        preset: ``standard`` (default), ``quick``, ``paper`` or an :class:`MISettings`.
        estimator, critic, critic_kwargs, n_critics, steps, batch_size, lr, attack_steps,
            attack_step_size, eval_attack_steps, eval_fraction, n_eval_batches, settings:
            override the preset (:class:`MISettings` fields, e.g. ``adv_steps``, ``patience``,
            ``eval_batch_size``); ``init``: a clean :class:`MIEstimate` of the same
            representation and settings whose critics start the worst-case training.
        seed: seeds everything.

    Returns:
        :class:`MIEstimate` (nats).
    """
    init = settings.pop("init", None)
    s = mi_settings(preset, estimator=estimator, critic=critic, critic_kwargs=critic_kwargs, n_critics=n_critics,
                    steps=steps, batch_size=batch_size, lr=lr, attack_steps=attack_steps, attack_step_size=attack_step_size,
                    eval_attack_steps=eval_attack_steps, eval_fraction=eval_fraction, n_eval_batches=n_eval_batches,
                    **settings)
    if threat is not None:
        _check_threat(threat)
    return _estimate(rep, _as_tensor(x), threat, s, seed, init)[0]


def _matrix(e: MIEstimate) -> torch.Tensor:
    return torch.tensor(e.per_unit, dtype=torch.float64)


def vulnerability(
    rep: nn.Module,
    x: torch.Tensor | ImageData,
    threat: ThreatModel,
    *,
    num_classes: int = 10,
    layer: str = "representation",
    mi_clean: MIEstimate | None = None,
    labels: torch.Tensor | None = None,
    probe_attack: str = "pgd",
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
        mi_clean: reuse a clean estimate of the same settings (e.g. across an eps sweep); its
            critics start the worst-case ones.
        labels: (M,) labels of ``x`` (or taken from an ``ImageData``): a linear probe is trained
            on the layer and its natural / PGD accuracy on the held-out part reported beside the
            bound.
        probe_attack: the attack of the probe's adversarial accuracy (``robrep list attacks``: PGD-20,
            APGD..., or a protocol such as ``autoattack-standard`` or ``fast``).
        kwargs: as :func:`estimate_mi` (preset, estimator, critic, n_critics, steps...).

    Returns:
        :class:`VulnerabilityResult`.
    """
    _check_threat(threat)
    probe_info = _attack_info(probe_attack)  # unknown names fail before any critic is trained
    xs = _as_tensor(x)
    if labels is None and isinstance(x, ImageData) and kwargs.pop("probe", False):
        labels = x.tensors()[1]  # type: ignore[attr-defined]
    kwargs.pop("probe", None)
    seed = int(kwargs.get("seed", 0))
    clean = mi_clean if mi_clean is not None else estimate_mi(rep, xs, threat=None, **kwargs)
    if threat.eps == 0:
        worst = replace(clean, threat=threat.to_dict(), critic_state=None)
    else:
        worst = estimate_mi(rep, xs, threat=threat, init=clean if clean.critic_state is not None else None, **kwargs)
    vc, vw = _matrix(clean), _matrix(worst)
    level = clean.level
    if worst.clean_per_unit:
        alt = torch.tensor(worst.clean_per_unit, dtype=torch.float64)
        if alt.shape == vc.shape and bool((alt.mean(1) > vc.mean(1)).any()):
            # I(X; R(X)) is a supremum over critics: where the fine-tuned critic reads the clean
            # held-out data higher than the clean one, it is the better clean estimate
            better = (alt.mean(1) > vc.mean(1))[:, None]
            vc = torch.where(better, alt, vc)
            iv, w_u0, w_c0 = _matrix_interval(vc, level, seed)
            clean = replace(clean, estimate=iv.estimate, low=iv.low, high=iv.high,
                            values=tuple(float(a) for a in vc.mean(1)), width_units=w_u0, width_critics=w_c0,
                            per_unit=tuple(tuple(float(a) for a in r) for r in vc),
                            capped=bool(clean.cap is not None and iv.estimate >= clean.cap - 1.0))
    if vc.shape == vw.shape:
        rv, w_u, w_c = _matrix_interval(vc - vw, level, seed + 1)
    else:  # different layouts: independent bootstraps
        ia = _boot_index(*vc.shape, 2000, seed + 1, vc.device)
        ib = _boot_index(*vw.shape, 2000, seed + 2, vw.device)
        lo, hi = _quantiles(_boot_draws(vc, *ia) - _boot_draws(vw, *ib), level)
        m = float(vc.mean() - vw.mean())
        rv, w_u, w_c = Interval(m, min(lo, m), max(hi, m), level), None, None
    ab = Interval(accuracy_bound(worst.estimate, num_classes), accuracy_bound(worst.low, num_classes),
                  accuracy_bound(worst.high, num_classes))
    pa = pra = None
    if labels is not None:
        s = mi_settings(kwargs.get("preset"), **{k: v for k, v in kwargs.items()
                                                 if k in {f.name for f in fields(MISettings)} and k != "preset"})
        pa, pra = probe_robust_accuracy(rep, xs, labels, threat, eval_fraction=s.eval_fraction, num_classes=num_classes,
                                        seed=seed, attack=probe_attack)
    return VulnerabilityResult(layer, threat.to_dict(), clean, worst, rv, ab, num_classes, w_u, w_c, pa, pra,
                               probe_info if labels is not None else None)


def _attack_info(name: str) -> dict[str, Any]:
    """``{"name"}`` of a registered attack, plus ``protocol_version`` for a protocol (unknown names
    raise :class:`~robrep.errors.UnknownNameError` listing the attacks)."""
    from ..attacks import ATTACKS, get_protocol, is_protocol

    ATTACKS.get(name)
    return {"name": name, **({"protocol_version": get_protocol(name).version} if is_protocol(name) else {})}


class _Probe(nn.Module):
    def __init__(self, rep: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.rep, self.head = rep, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rep(x).flatten(1))


def probe_robust_accuracy(
    rep: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    eval_fraction: float = 0.3,
    num_classes: int | None = None,
    epochs: int = 100,
    lr: float = 1e-2,
    attack_steps: int = 20,
    seed: int = 0,
    attack: str = "pgd",
) -> tuple[float, float]:
    """Natural and adversarial accuracy of a linear probe on ``rep``: trained (full-batch Adam,
    standard cross-entropy) on the first ``1 - eval_fraction`` of the inputs, evaluated on the rest
    with ``robrep.attacks.pgd`` (``attack_steps``, random start) through representation and probe,
    or with ``attack`` (any name of ``robrep list attacks``, e.g. ``autoattack-standard`` or
    ``fast``, at its own budget) on the correctly classified held-out inputs.
    Fano's bound on *any* classifier's adversarial accuracy must lie above the second number.

    Returns:
        (natural accuracy, robust accuracy) on the held-out inputs.
    """
    from ..attacks import pgd

    if y.shape[0] != x.shape[0]:
        raise InputError(f"labels must pair with the inputs: {y.shape[0]} vs {x.shape[0]}")
    dev = _device(rep, x)
    x, y = x.to(dev), y.to(dev).long()
    n_ev = max(1, int(round(eval_fraction * x.shape[0])))
    xt, yt, xe, ye = x[:-n_ev], y[:-n_ev], x[-n_ev:], y[-n_ev:]
    f = _features(rep, xt)
    mu, sd = f.mean(0), f.std(0) + 1e-6
    k = int(num_classes or int(y.max()) + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lin = nn.Linear(f.shape[1], k).to(dev)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    for _ in range(epochs):
        loss = nn.functional.cross_entropy(lin((f - mu) / sd), yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    head = nn.Sequential()
    head.append(_Standardise(mu, sd))
    head.append(lin)
    net = _Probe(rep, head).eval()
    for p in lin.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        nat = float((net(xe).argmax(1) == ye).float().mean())
    if threat.eps == 0:
        return nat, nat
    if attack == "pgd":
        r = pgd(net, xe, ye, threat, steps=attack_steps, generator=torch.Generator().manual_seed(seed), check=False)
        return nat, float((~r.success).float().mean())
    from ..attacks import create_attack

    with torch.no_grad():
        rob = net(xe).argmax(1) == ye
    idx = torch.nonzero(rob).flatten()
    if len(idx):
        r = create_attack(attack)(net, xe[idx], ye[idx], threat, generator=torch.Generator().manual_seed(seed))
        rob[idx] = ~r.success
    return nat, float(rob.float().mean())


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
