"""Embedding sensitivity: how far a perturbation in the threat ball moves a representation.

For each image ``x`` the representation attack (Engstrom et al. 2019's brittleness attack,
untargeted: maximize ``||R(x+d) - R(x)||_2`` over ``d`` in the ball, PGD) gives ``d``; the
measure is the relative change ``||R(x+d) - R(x)||_2 / ||R(x)||_2``. Its distribution over
images is what a robustness card shows, beside the same ratio for a uniformly random ``d`` in
the ball (a reference: how much of the change any perturbation of that size causes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..attacks import representation_attack
from ..models import representation
from ..threats import ThreatModel

__all__ = ["SensitivityResult", "embedding_sensitivity", "relative_change"]


def relative_change(z_adv: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``||z_adv - z||_2 / ||z||_2`` per row ((N, D) -> (N,)); 0 where both are equal, also
    when ``z`` is 0."""
    num = (z_adv - z).flatten(1).norm(dim=1)
    den = z.flatten(1).norm(dim=1)
    return torch.where(num == 0, torch.zeros_like(num), num / den.clamp_min(1e-12))


def _quantile(v: list[float], q: float) -> float:
    return float(torch.quantile(torch.tensor(v, dtype=torch.float64), q)) if v else float("nan")


@dataclass(frozen=True)
class SensitivityResult:
    """Per-image relative representation changes under the attack and under random noise.

    Attributes:
        ratios: ``||R(x+d) - R(x)|| / ||R(x)||`` with ``d`` from the representation attack.
        random_ratios: the same with ``d`` uniform in the ball.
        layer, threat, steps: what was measured.
    """

    ratios: tuple[float, ...]
    random_ratios: tuple[float, ...]
    layer: str
    threat: dict[str, Any]
    steps: int

    @property
    def n(self) -> int:
        return len(self.ratios)

    def summary(self) -> dict[str, Any]:
        """Mean (with a 95 % t interval), median, 10th/90th percentiles and maximum."""
        v = list(self.ratios)
        n = len(v)
        mean = sum(v) / n
        sd = math.sqrt(sum((a - mean) ** 2 for a in v) / (n - 1)) if n > 1 else 0.0
        from scipy.stats import t as student_t

        half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else 0.0
        return {"n": n, "mean": mean, "mean_low": mean - half, "mean_high": mean + half, "median": _quantile(v, 0.5),
                "p10": _quantile(v, 0.1), "p90": _quantile(v, 0.9), "max": max(v),
                "random_median": _quantile(list(self.random_ratios), 0.5)}

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "threat": self.threat, "steps": self.steps, "summary": self.summary(),
                "ratios": list(self.ratios), "random_ratios": list(self.random_ratios)}


def embedding_sensitivity(model: Any, x: torch.Tensor, threat: ThreatModel, *, layer: str = "penultimate", steps: int = 20,
                          seed: int = 0, clean: torch.Tensor | None = None) -> SensitivityResult:
    """Relative representation change under the representation attack in ``threat``'s ball.

    Args:
        model: a RobrepModel; x: (N, C, H, W) images in [0, 1].
        threat: the ball (the attack's iterates stay in it and in [0, 1]).
        layer: representation layer.
        steps: PGD steps of the representation attack (step 2.5 eps / steps).
        seed: seeds the attack's random start and the random reference perturbation.
        clean: precomputed ``R(x)`` (e.g. from a feature cache).
    """
    model.eval()
    rep = representation(model, layer)
    dev = next(model.parameters()).device
    x = x.to(dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    x_adv = representation_attack(model, x, threat, layer=layer, steps=steps, generator=g).x_adv
    x_rnd = threat.project(threat.random_start(x, g), x)
    with torch.inference_mode():
        z = clean.to(dev) if clean is not None else rep(x)
        r_adv = relative_change(rep(x_adv).float(), z.float()).cpu()
        r_rnd = relative_change(rep(x_rnd).float(), z.float()).cpu()
    return SensitivityResult(tuple(float(v) for v in r_adv), tuple(float(v) for v in r_rnd), layer, threat.to_dict(), steps)
