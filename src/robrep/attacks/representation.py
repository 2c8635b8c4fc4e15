"""Attacks on representations (Engstrom et al. 2019, "brittle representations")."""

from __future__ import annotations

import torch

from ..models.base import RobrepModel, check_images, representation
from ..threats import ThreatModel
from .pgd import AttackResult, pgd
from .precision import with_precision

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
    precision: str = "fp32",
    recheck_steps: int = 3,
) -> AttackResult:
    """Move each representation as far as possible, or as close as possible to another image's.

    Without ``x_target``: maximise ``||R(x') - R(x)||_2`` inside the ball (representation
    vulnerability in feature space). With ``x_target``: minimise ``||R(x') - R(x_target)||_2``
    (two visually different images, one representation). ``loss`` of the result is that distance.

    ``precision`` ``auto``/``bf16`` runs the PGD passes in bfloat16
    (:func:`robrep.attacks.precision.with_precision`); ``x_adv`` is then the point of largest
    (smallest with ``x_target``) float32 distance among the bf16 attack's best point and
    ``recheck_steps`` float32 PGD steps from it, and ``loss`` is that float32 distance. ``fp32``
    (the default) is plain float32 PGD.
    """
    check_images(x, model)
    rep = representation(model, layer)
    with torch.no_grad():
        if x_target is None:
            tgt = rep(x)
        else:
            check_images(x_target, model, what="x_target")
            tgt = rep(x_target)
    attack = with_precision(pgd, precision, recheck_steps=recheck_steps, recheck_step_size=step_size)
    return attack(rep, x, tgt, threat, steps=steps, step_size=step_size, loss="repr",
                  random_start=random_start, targeted=x_target is not None, generator=generator, check=False)
