"""Attacks: pure functions ``attack(model, x, target, threat, **kw) -> AttackResult``."""

from .apgd import apgd
from .compose import ATTACKS, Attack, create_attack, list_attacks, worst_case
from .losses import ATTACK_LOSSES, ce_loss, cw_margin, dlr_loss, repr_l2
from .pgd import AttackResult, default_step_size, fgsm, pgd, pgd_perturb
from .precision import with_precision
from .representation import representation_attack

__all__ = [
    "ATTACKS",
    "ATTACK_LOSSES",
    "Attack",
    "AttackResult",
    "apgd",
    "ce_loss",
    "create_attack",
    "cw_margin",
    "default_step_size",
    "dlr_loss",
    "fgsm",
    "list_attacks",
    "pgd",
    "pgd_perturb",
    "repr_l2",
    "representation_attack",
    "with_precision",
    "worst_case",
]
