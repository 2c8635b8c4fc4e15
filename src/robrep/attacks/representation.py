"""Attacks on representations (Engstrom et al. 2019, "brittle representations")."""

from __future__ import annotations

import torch

from ..models.base import RobrepModel, check_images, representation
from ..threats import ThreatModel
from .pgd import AttackResult, pgd

__all__ = ["representation_attack"]


def representation_attack(
    model: RobrepModel,
    x: torch.Tensor,
    threat: ThreatModel,
    *,
    x_target: torch.Tensor | None = None,
    layer: str = "penultimate",
    steps: int = 100,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Move each representation as far as possible, or as close as possible to another image's.

    Without ``x_target``: maximise ``||R(x') - R(x)||_2`` inside the ball (representation
    vulnerability in feature space). With ``x_target``: minimise ``||R(x') - R(x_target)||_2``
    (two visually different images, one representation). ``loss`` of the result is that distance.
    """
    check_images(x, model)
    rep = representation(model, layer)
    with torch.no_grad():
        if x_target is None:
            tgt = rep(x)
        else:
            check_images(x_target, model, what="x_target")
            tgt = rep(x_target)
    return pgd(rep, x, tgt, threat, steps=steps, step_size=step_size, loss="repr",
               random_start=random_start, targeted=x_target is not None, generator=generator, check=False)
