"""eps-robust linear probing of an encoder on real data (SynBench's companion measurement, Ko et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..data import ImageData
from ..errors import InputError
from ..models.base import RobrepModel
from ..threats import threat as make_threat
from .probe import ProbeResult, linear_probe

if TYPE_CHECKING:  # annotation only: synbench imports this module
    from .synbench import SynBenchResult

__all__ = ["RobustProbeResult", "half_class_mean_distance", "robust_linear_probe"]


@dataclass(frozen=True)
class RobustProbeResult:
    """An eps-robust linear probe chosen by SynBench beside a standard probe.

    Attributes:
        synbench_eps: the relative radius that maximizes the score at ``threshold``.
        threshold: the threshold accuracy used for the choice.
        reference_radius: pixel-space l2 analog of ``||mu||``: half the median distance between
            real class means (``radius = synbench_eps * reference_radius``, or as given).
        radius, norm: the pixel-space training threat of the robust probe.
        eval_threat: the threat both probes are evaluated under.
        standard, robust: the two :class:`ProbeResult` (natural and adversarial accuracy).
    """

    synbench_eps: float
    threshold: float
    reference_radius: float
    radius: float
    norm: str
    eval_threat: dict[str, Any]
    standard: ProbeResult
    robust: ProbeResult

    def to_dict(self) -> dict[str, Any]:
        return {"synbench_eps": self.synbench_eps, "threshold": self.threshold, "reference_radius": self.reference_radius,
                "radius": self.radius, "norm": self.norm, "eval_threat": self.eval_threat,
                "standard_natural_accuracy": self.standard.natural_accuracy,
                "standard_adversarial_accuracy": self.standard.adversarial_accuracy,
                "robust_natural_accuracy": self.robust.natural_accuracy,
                "robust_adversarial_accuracy": self.robust.adversarial_accuracy,
                "attack": self.robust.eval.get("attack"),
                **({"standard_stages": self.standard.eval["stages"], "robust_stages": self.robust.eval["stages"],
                    "flags": self.standard.eval["flags"] + self.robust.eval["flags"]} if "stages" in self.robust.eval else {})}


def half_class_mean_distance(data: ImageData, max_n: int = 10000) -> float:
    """Half the median l2 distance between class means of ``data`` (pixel space, [0,1] images):
    the real-data analog of SynBench's ``||mu||`` (the half distance of the two means)."""
    x, y = data.head(min(len(data), max_n)).tensors()
    means = torch.stack([x[y == c].flatten(1).mean(0) for c in torch.unique(y)])
    if len(means) < 2:
        raise InputError("the data have a single class; a probe needs at least two")
    dist = torch.cdist(means.double(), means.double())
    iu = torch.triu_indices(len(means), len(means), 1)
    return float(dist[iu[0], iu[1]].median() / 2)


def robust_linear_probe(
    encoder: RobrepModel,
    train_data: ImageData,
    test_data: ImageData,
    result: SynBenchResult,
    *,
    threshold: float = 0.7,
    norm: str = "l2",
    eps: float | None = None,
    reference_radius: float | None = None,
    eval_radius: float | None = None,
    layer: str = "penultimate",
    **probe_kwargs: Any,
) -> RobustProbeResult:
    """eps-robust linear probing informed by SynBench (Ko et al., docs/methods/synbench.md).

    Pick ``eps* = argmax_eps SynBench(eps, threshold)`` (or the given ``eps``), turn it into a
    pixel-space radius ``eps* x reference_radius`` (SynBench's radius is relative to ``||mu||``;
    the reference radius defaults to :func:`half_class_mean_distance` of the training data), and
    train a linear probe adversarially at that radius with :func:`linear_probe`; a standard probe
    is trained beside it, and both are evaluated under the same threat (``eval_radius``, default
    the training radius; if that is 0, the standard probe's natural accuracy only).

    Args:
        encoder: the encoder measured by ``result``.
        train_data, test_data: real downstream data ([0,1] images).
        result: its :class:`SynBenchResult`.
        threshold: a_t used to pick eps.
        norm: threat norm of the probe's adversarial training (``l2`` matches SynBench's).
        eps: override the chosen relative radius.
        reference_radius: override the pixel-space scale of a relative radius.
        eval_radius: evaluation radius (pixel units).
        layer: representation layer.
        probe_kwargs: passed to :func:`linear_probe` (epochs, lr, attack_steps, eval_n, seed...).

    Returns:
        :class:`RobustProbeResult`.
    """
    e = result.best_eps(threshold) if eps is None else float(eps)
    ref = half_class_mean_distance(train_data) if reference_radius is None else float(reference_radius)
    radius = e * ref
    ev = radius if eval_radius is None else float(eval_radius)
    eval_thr = make_threat(norm, ev)
    train_thr = make_threat(norm, radius) if radius > 0 else None
    std = linear_probe(encoder, train_data, test_data, layer=layer, train_threat=None, eval_threat=eval_thr, **probe_kwargs)
    rob = linear_probe(encoder, train_data, test_data, layer=layer, train_threat=train_thr, eval_threat=eval_thr, **probe_kwargs)
    return RobustProbeResult(e, float(threshold), ref, radius, norm, eval_thr.to_dict(), std, rob)
