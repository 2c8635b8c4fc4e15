"""Per-example attack objectives ``loss(output, target) -> (B,)``; attacks maximise them
(untargeted) or minimise them (targeted)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._registry import Registry

__all__ = ["ATTACK_LOSSES", "AttackLoss", "ce_loss", "cw_margin", "dlr_loss", "repr_l2", "get_loss", "is_classification_loss"]

AttackLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ATTACK_LOSSES: Registry[AttackLoss] = Registry("attack loss")
_CLASSIFICATION = {"ce", "cw", "dlr"}


@ATTACK_LOSSES.register("ce", help="cross-entropy of the logits w.r.t. the label")
def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def _other_max(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z_y = logits.gather(1, y[:, None])
    other = logits.scatter(1, y[:, None], float("-inf"))
    return other.max(1).values, z_y.squeeze(1)


@ATTACK_LOSSES.register("cw", help="Carlini-Wagner margin max_{j!=y} z_j - z_y")
def cw_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    other, z_y = _other_max(logits.float(), y)
    return other - z_y


@ATTACK_LOSSES.register("dlr", help="difference of logits ratio (Croce & Hein 2020), scale invariant")
def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = logits.float()
    srt = z.sort(1, descending=True).values
    other, z_y = _other_max(z, y)
    return (other - z_y) / (srt[:, 0] - srt[:, 2] + 1e-12)


@ATTACK_LOSSES.register("repr", help="l2 distance between representations ||R(x') - target||")
def repr_l2(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (z.flatten(1).float() - target.flatten(1).float()).norm(dim=1)


def get_loss(loss: str | AttackLoss) -> AttackLoss:
    return ATTACK_LOSSES.get(loss) if isinstance(loss, str) else loss


def is_classification_loss(loss: str | AttackLoss) -> bool:
    return (isinstance(loss, str) and loss in _CLASSIFICATION) or loss in (ce_loss, cw_margin, dlr_loss)
