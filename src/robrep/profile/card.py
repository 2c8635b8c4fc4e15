"""The robustness card: one JSON document (``card.json``) per profiled encoder.

A card holds what was measured (source, dataset, threat model, budget with every sample size,
seeds), the headline numbers each with its interval and sample size, the curves, the pictures
and the run's provenance. ``schema_version`` changes whenever a field changes meaning; readers
refuse other versions (:func:`load_card`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["Card", "SCHEMA_VERSION", "HEADLINE_HELP", "load_card", "wilson_interval"]

#: version of the card.json layout written by this robrep
SCHEMA_VERSION = 1

#: headline key -> what it means (card page, compare table)
HEADLINE_HELP: dict[str, str] = {
    "probe_natural_accuracy": "linear probe on the frozen representation: clean test accuracy (Wilson 95 % interval)",
    "probe_adversarial_accuracy": "the same probe under the attack through the frozen encoder, in pixel space",
    "synbench_score": "SynBench score at threshold accuracy 0.7, eps 0 (1 = raw-data optimum; 0 = untrained floor)",
    "synbench_robust_score": "SynBench score at threshold accuracy 0.7, relative radius eps 0.2",
    "vulnerability": "representation vulnerability I(X;R) - worst-case I(X';R') in nats (lower: more robust; 95 % interval over critics and held-out images)",
    "mi_clean": "I(X; R(X)) (nats, InfoNCE bound)",
    "mi_worst": "worst-case I(X'; R(X')) in the ball (nats)",
    "accuracy_bound": "Fano bound on the adversarial accuracy of any classifier on the representation (1: no constraint)",
    "sensitivity_median": "median of ||R(x+d) - R(x)|| / ||R(x)|| with d from the representation attack in the ball",
    "sensitivity_mean": "mean of the same ratio (t interval)",
    "sensitivity_random_median": "median of the ratio for a uniformly random d in the ball (reference)",
    "smoothed_accuracy": "Gaussian-smoothed probe: accuracy (abstentions wrong; Wilson interval)",
    "certified_accuracy": "smoothed probe: certified accuracy at the card's l2 radius (Wilson interval)",
}


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (95 %) of a binomial proportion ``k / n``."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


@dataclass(frozen=True)
class Card:
    """A robustness card (see the module docstring).

    Attributes:
        source: how the encoder was named (file, ``init:<arch>``, a model source...).
        model: architecture, input shape, mean/std, parameter count, ``weights`` (where they come
            from; random initialization is said so).
        dataset: name, classes, input shape, how images were adapted to the model, sizes used.
        threat: the threat model of every attack on the card.
        budget: the budget's name and every sample count (:class:`~robrep.profile.budgets.Budget`).
        seed: the seed of every random choice.
        layers: the measured layers (the first is the probe's, SynBench's and the sensitivity's).
        headline: metric -> ``{"value", "low", "high", "n"}`` (interval where there is one).
        results: the full results of each measure.
        curves: curve name -> ``{"title", "x", "y", "n", "series": {label: [[x, y], ...]}}``.
        figures: picture stem -> ``{"file", "caption"}`` (PNG files beside card.json).
        seconds: wall time of each stage.
        environment: versions and machine.
        schema_version: :data:`SCHEMA_VERSION`.
    """

    source: str
    model: dict[str, Any]
    dataset: dict[str, Any]
    threat: dict[str, Any]
    budget: dict[str, Any]
    seed: int
    layers: tuple[str, ...]
    headline: dict[str, dict[str, Any]]
    results: dict[str, Any]
    curves: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def name(self) -> str:
        """A short display name (the model's ``name`` if given, else the source)."""
        return str(self.model.get("name") or self.source)

    def value(self, key: str) -> float | None:
        h = self.headline.get(key)
        return None if h is None else h.get("value")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return {"schema_version": d.pop("schema_version"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "card") -> Card:
        if not isinstance(d, dict):
            raise InputError(f"{where} is not a robustness card (no JSON object); give a card.json written by robrep profile")
        v = d.get("schema_version")
        if v != SCHEMA_VERSION:
            raise InputError(f"{where} has card schema version {v!r}, this robrep reads version {SCHEMA_VERSION}; "
                             f"re-run robrep profile with this version to rebuild it")
        need = ("source", "model", "dataset", "threat", "budget", "seed", "layers", "headline", "results")
        missing = [k for k in need if k not in d]
        if missing:
            raise InputError(f"{where} lacks {', '.join(missing)}; it is not a complete card: re-run robrep profile")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["layers"] = tuple(known["layers"])
        return cls(**known)


def load_card(path: str | os.PathLike[str]) -> Card:
    """Read a ``card.json`` (or the ``card.json`` inside a folder), checking its schema version.

    Raises:
        InputError: missing file, not JSON, another schema version, missing fields.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "card.json"
    if not p.is_file():
        raise InputError(f"no card at {p}; give a card.json (or its folder) written by robrep profile")
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{p} is not valid JSON ({e}); give a card.json written by robrep profile") from e
    return Card.from_dict(d, where=str(p))
