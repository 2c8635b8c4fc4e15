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
* the interval adds, in quadrature, the held-out data part (a bootstrap over anchors for clean
  InfoNCE reads; a Student t over the jointly attacked batches for worst-case reads and RV) and
  the critics part (their spread within each fold, pooled; Student t); both one-way widths are
  reported beside it (``robrep.info.intervals``).

The defaults are the ``standard`` preset (:data:`PRESETS`); ``paper`` keeps the paper's
settings (DV bound, DIM critic, Adam 1e-4, PGD-7 per step, independent critics)."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Any

import torch
from torch import nn

from ..data import ImageData
from ..errors import InputError
from ..threats import ThreatModel
from .fano import accuracy_bound
from .intervals import (
    Interval,
    _boot_draws,
    _boot_index,
    _matrix_interval,
    _quantiles,
    interval_from_values,
)
from .mi_bounds import Bound, get_bound
from .probe import probe_robust_accuracy
from .results import MIEstimate, VulnerabilityResult
from .settings import DEFAULT_PRESET, PRESETS, MISettings, mi_settings
from .training import (
    _attack_critics,
    _check_finite,
    _Data,
    _device,
    _features,
    _Flatten,
    _make_critics,
    _per_critic,
    _read_batch,
    _split_sizes,
    _standardiser,
    _train,
    batch_pgd,
    fit_critic,
)

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
    "min_inputs",
    "fit_critic",
    "interval_from_values",
    "mi_settings",
    "probe_robust_accuracy",
    "vulnerability",
]


def _summary(v: torch.Tensor, b: Bound, s: MISettings, nb: int, eb: int, threat: ThreatModel | None, seed: int,
             steps_run: tuple[int, ...], state: dict[str, torch.Tensor] | None,
             folds: tuple[int, ...] = ()) -> MIEstimate:
    unit = "anchor" if b.terms is not None else "batch"
    # a worst-case read attacks each held-out batch jointly: its anchors are not independent units
    cluster = eb if (unit == "anchor" and threat is not None) else 1
    iv, w_u, w_c = _matrix_interval(v, s.level, seed, folds=folds, cluster=cluster)
    cap = math.log(eb) if b.cap_log_n else None
    vals = tuple(float(a) for a in v.double().mean(1))
    return MIEstimate(iv.estimate, iv.low, iv.high, b.name, v.shape[0], vals, nb, eb,
                      threat.to_dict() if threat is not None else None,
                      (("t over held-out batches" if cluster > 1 else f"bootstrap over held-out {unit}s")
                       + (" and t over critics (pooled over folds), in quadrature" if v.shape[0] > 1 else "")), s.level, w_u, w_c, unit,
                      tuple(tuple(float(a) for a in r) for r in v.double()), cap,
                      bool(cap is not None and iv.estimate >= cap - 1.0), steps_run, s.to_dict(), fold_units=folds,
                      critic_state=state)


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
            vc = _worst_read(critics, rep, b, xb, vc, threat, s)
        cols.append(vc)
    v = torch.cat(cols, 1)
    if not bool(torch.isfinite(v).all()):
        _check_finite(v.flatten(), b, sum(steps_run), "held-out evaluation after")
    return v, steps_run, clean_state, d.nb, d.eb, torch.cat(clean_cols, 1)


def _worst_read(critics: nn.Module, rep: nn.Module, b: Bound, xb: torch.Tensor, vc: torch.Tensor, threat: ThreatModel,
                s: MISettings) -> torch.Tensor:
    """(k, units) worst-case reads of one held-out batch whose clean reads are ``vc``.

    ``cross_read`` (and k >= 2): the critics are split into two halves; each half's reads come
    from the batch attacked against the *other* half. The attack can then lower a read only by
    what it removes from the representation (which every critic sees), not by exploiting the
    blind spots of the critics it attacks (a critic pushed below its own clean-data behaviour
    reads ~0 while the information is still there). Otherwise one attack against all critics,
    read by the same critics. Each half keeps the better attack point (the clean one included)."""
    k = vc.shape[0]
    groups = [list(range(k))] if not s.cross_read or k < 2 else [list(range(k // 2)), list(range(k // 2, k))]
    out = vc.clone()
    for i, g in enumerate(groups):
        readers = groups[1 - i] if len(groups) == 2 else g
        xa = _attack_critics(critics, rep, b.read, xb, threat, s.eval_attack_steps, None, members=g)
        with torch.no_grad():
            va = _read_batch(critics, b, xa, rep(xa).flatten(1))[readers]
        if float(va.mean()) <= float(vc[readers].mean()):
            out[readers] = va
    return out


def _fold_plan(m: int, s: MISettings) -> list[tuple[list[int], MISettings]] | None:
    """Per fold: its held-out evaluation batches (indices of batches of ``eval_batch_size``) and
    settings, as :func:`_estimate` cuts ``m`` inputs; ``[([], s)]`` without cross-fitting; None
    when there are fewer evaluation batches than folds."""
    nf, eb = max(1, int(s.folds)), s.eval_batch_size or s.batch_size
    if nf == 1:
        return [([], s)]
    n_b = m // eb
    if n_b < nf:
        return None
    plan = []
    for f in range(nf):
        held = [j for j in range(n_b) if j % nf == f]
        plan.append((held, replace(s, n_eval_batches=len(held) if s.n_eval_batches is None else min(s.n_eval_batches, len(held)))))
    return plan


def _enough(m: int, s: MISettings) -> bool:
    """Whether ``m`` inputs suffice for the cross-fitting and every fold's held-out split."""
    plan = _fold_plan(m, s)
    return plan is not None and all(m >= _split_sizes(m, sf)[3] for _, sf in plan)


def min_inputs(settings: MISettings | None = None, **overrides: Any) -> int:
    """The fewest inputs an MI / vulnerability estimate with these settings accepts (a preset or
    :class:`MISettings` plus overrides, as :func:`estimate_mi` takes them): with ``folds``-fold
    cross-fitting at least ``folds`` evaluation batches, and in every fold the held-out batches,
    one validation batch and one training batch."""
    s = mi_settings(settings, **overrides)
    eb = s.eval_batch_size or s.batch_size
    top = (max(1, int(s.folds)) + 2) * (eb + 2 * s.batch_size) * 8
    for m in range(max(2, eb * max(1, int(s.folds)) if s.folds > 1 else 2), top + 1):
        if _enough(m, s):
            return m
    raise InputError(f"no input count up to {top} satisfies these settings ({s.to_dict()})")  # not reached for valid settings


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
    eb = s.eval_batch_size or s.batch_size
    # cross-fitting: the inputs are cut into evaluation batches of eb (batch j belongs to fold
    # j % nf, the last m mod eb inputs only ever train); each fold is held out once while critics
    # train on the rest, so every batch is read once by critics that never saw it
    plan = _fold_plan(m, s)
    if plan is None:
        raise InputError(f"{m} inputs are too few for {nf}-fold cross-fitting with evaluation batches of {eb}: "
                         f"give at least {min_inputs(s)} inputs, fewer folds or a smaller batch_size")
    mats, clean_mats, steps_run, state, nb, fold_units = [], [], [], {}, 0, []
    for f, (held, sf) in enumerate(plan):
        if nf == 1:
            xf, zf = xs, z_all
        else:
            is_held = torch.zeros(m, dtype=torch.bool)
            for j in held:
                is_held[j * eb : (j + 1) * eb] = True
            idx = torch.cat([torch.nonzero(~is_held).flatten(), torch.nonzero(is_held).flatten()]).to(dev)
            xf, zf = xs[idx], z_all[idx]
        st = None
        if init is not None and init.critic_state is not None:
            st = {k[len(f"{f}.") :]: t for k, t in init.critic_state.items() if k.startswith(f"{f}.")}
        v, sr, cs, nb_f, eb, vclean = _fold(rep, xf, zf, threat, sf, seed + 101 * f, st)
        mats.append(v)
        clean_mats.append(vclean)
        fold_units.append(v.shape[1])
        steps_run += sr
        nb += nb_f
        if not worst:  # the clean critics' weights start the worst-case ones; a worst-case run keeps none
            state.update({f"{f}.{k}": t for k, t in cs.items()})
        del cs
    if init is not None:
        steps_run = list(init.steps_run) + steps_run
    v = torch.cat(mats, 1)
    est = _summary(v, b, s, nb, eb, threat if worst else None, seed, tuple(steps_run), None if worst else state,
                   tuple(fold_units))
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

    Zhu et al. 2020 (docs/methods/vulnerability.md): the worst-case critics are the clean ones
    fine-tuned under attack and both are read on the same held-out batches, so RV is a paired
    difference (eps = 0 gives exactly 0); its interval combines a Student t over the held-out
    batches with the critics' spread pooled within folds (see "The interval of an estimate" on
    the methods page). The bound on the adversarial
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
            iv, w_u0, w_c0 = _matrix_interval(vc, level, seed, folds=clean.fold_units)
            clean = replace(clean, estimate=iv.estimate, low=iv.low, high=iv.high,
                            values=tuple(float(a) for a in vc.mean(1)), width_units=w_u0, width_critics=w_c0,
                            per_unit=tuple(tuple(float(a) for a in r) for r in vc),
                            capped=bool(clean.cap is not None and iv.estimate >= clean.cap - 1.0))
    if vc.shape == vw.shape:
        rv, w_u, w_c = _matrix_interval(vc - vw, level, seed + 1, folds=clean.fold_units,
                                        cluster=clean.batch_size if (clean.unit == "anchor" and threat.eps > 0) else 1)
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
