"""Typed results of MI estimation: :class:`MIEstimate` and :class:`VulnerabilityResult`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .intervals import Interval

__all__ = ["MIEstimate", "VulnerabilityResult"]


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
        fold_units: held-out units per cross-fitting fold (the columns of ``per_unit`` in fold
            order); the critics part of the interval pools the critics' spread within each fold.
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
    fold_units: tuple[int, ...] = ()
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
            if f.name in ("values", "steps_run", "fold_units"):
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
