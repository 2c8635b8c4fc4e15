"""Attacks: pure functions ``attack(model, x, target, threat, **kw) -> AttackResult``."""

from .apgd import apgd
from .apgd_targeted import PassCounter, apgd_cascade, apgd_t, malt_targets
from .compose import ATTACKS, Attack, create_attack, is_protocol, list_attacks, worst_case
from .fab import fab, fab_t
from .losses import ATTACK_LOSSES, ce_loss, cw_margin, dlr_loss, repr_l2
from .pgd import AttackResult, default_step_size, fgsm, pgd, pgd_perturb
from .precision import with_precision
from .protocols import (
    PROTOCOLS,
    CascadeResult,
    Protocol,
    get_protocol,
    list_protocols,
    run_protocol,
)
from .representation import representation_attack
from .square import square

__all__ = [
    "ATTACKS",
    "ATTACK_LOSSES",
    "Attack",
    "AttackResult",
    "CascadeResult",
    "PROTOCOLS",
    "PassCounter",
    "Protocol",
    "apgd",
    "apgd_cascade",
    "apgd_t",
    "fab",
    "fab_t",
    "get_protocol",
    "is_protocol",
    "list_protocols",
    "malt_targets",
    "run_protocol",
    "square",
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
