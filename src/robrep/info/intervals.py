"""Intervals of MI estimates: :class:`Interval`, the Student-t interval over replicates and the
interval of a (critics x held-out units) matrix of reads (docs/methods/vulnerability.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..errors import InputError

__all__ = ["Interval", "interval_from_values"]


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


def interval_from_values(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t interval of independent replicate values (needs >= 2)."""
    from scipy import stats

    v = torch.tensor([float(a) for a in values], dtype=torch.float64)
    if len(v) < 2:
        raise InputError("an interval over replicates needs at least 2 values")
    m = float(v.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1)) * float(v.std(unbiased=True)) / math.sqrt(len(v))
    return Interval(m, m - half, m + half, level)



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


def _fold_sizes(folds: Sequence[int] | None, u: int) -> list[int]:
    sizes = [int(f) for f in folds or () if int(f) > 0]
    return sizes if sum(sizes) == u else [u]


def _critic_half_width(v: torch.Tensor, level: float, folds: Sequence[int] | None = None) -> float:
    """Half-width of the critics part of the interval of ``v.mean()`` for a (k, u) matrix whose
    columns are cut into cross-fitting folds of ``folds`` units each (None: one fold).

    Each fold has its own k critics, trained independently given that fold's training data; the
    spread of their per-critic means *within* a fold measures the optimisation noise (the data
    noise they share cancels in the differences). The within-fold spreads are pooled (F (k - 1)
    degrees of freedom) and the variance of the overall mean is sum_f w_f^2 s^2 / k, w_f the
    fold's share of the units. With one fold this is the Student-t interval over critic means.
    """
    v = v.double()
    k, u = v.shape
    if k < 2:
        return 0.0
    from scipy import stats

    ss, var, start = 0.0, 0.0, 0
    sizes = _fold_sizes(folds, u)
    for n in sizes:
        r = v[:, start : start + n].mean(1)
        ss += float(((r - r.mean()) ** 2).sum())
        var += (n / u) ** 2 / k
        start += n
    df = len(sizes) * (k - 1)
    return float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(ss / df * var)


def _units_half_width(v: torch.Tensor, level: float, seed: int, reps: int = 2000, folds: Sequence[int] | None = None,
                      cluster: int = 1) -> float:
    """Half-width of the held-out-data part of the interval of ``v.mean()`` ((k, u) matrix; the
    critics are averaged per unit first, so a unit's value is the ensemble's read of it).

    ``cluster`` > 1: runs of ``cluster`` consecutive units form one batch and only batches are
    independent given the critics (a worst-case read attacks a whole batch jointly, so the terms of
    one batch move together and against each other); the batch means' spread within each fold is
    pooled (n_batches - F degrees of freedom) into a Student t. Otherwise units are resampled
    (bootstrap percentile) within each fold, so the folds' different critics add no spread here.
    """
    col = v.double().mean(0)
    u = col.shape[0]
    if u < 2:
        return 0.0
    sizes = _fold_sizes(folds, u)
    if cluster > 1 and all(n % cluster == 0 for n in sizes):
        nb, ss, start = 0, 0.0, 0
        for n in sizes:
            bm = col[start : start + n].view(-1, cluster).mean(1)
            ss += float(((bm - bm.mean()) ** 2).sum())
            nb += bm.shape[0]
            start += n
        df = nb - len(sizes)
        if df >= 1:
            from scipy import stats

            return float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(ss / df / nb)
    g = torch.Generator().manual_seed(seed)
    draws = torch.zeros(reps, dtype=torch.float64)
    start = 0
    for n in sizes:
        idx = torch.randint(0, n, (reps, n), generator=g) + start
        draws += (n / u) * col[idx].mean(-1)
        start += n
    lo, hi = _quantiles(draws, level)
    return (hi - lo) / 2


def _matrix_interval(v: torch.Tensor, level: float, seed: int, reps: int = 2000, folds: Sequence[int] | None = None,
                     cluster: int = 1) -> tuple[Interval, float, float]:
    """(interval over critics and units, width over units only, width over critics only) of
    ``v.mean()`` for a (critics, held-out units) matrix; ``folds``: units per cross-fitting fold
    (columns in fold order); ``cluster``: units per independent batch (see :func:`_units_half_width`).

    The data and the optimisation are independent sources of error, so their variances add:
    Var(mean) ~ s_units^2 / units + s_critics^2 / critics. The two half-widths are combined in
    quadrature (the critics' Student t keeps its few degrees of freedom; conservative)."""
    v = v.double()
    m = float(v.mean())
    h_u = _units_half_width(v, level, seed, reps, folds, cluster)
    h_c = _critic_half_width(v, level, folds)
    half = math.hypot(h_u, h_c)
    return Interval(m, m - half, m + half, level), 2 * h_u, 2 * h_c
