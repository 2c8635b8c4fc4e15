"""Training objectives (registry: ``robrep list objectives``)."""

from . import (
    contrastive,  # noqa: F401  (registers simclr, nacl, intnacl, acl)
    mi,  # noqa: F401  (registers mi, worst-case-mi)
    supervised,  # noqa: F401  (registers the supervised objectives)
)
from .base import (
    OBJECTIVES,
    Objective,
    StepContext,
    create_objective,
    list_objectives,
    register_objective,
)
from .supervised import FastAT, GaussianNoise, MadryAT, Standard, Trades

__all__ = [
    "OBJECTIVES",
    "FastAT",
    "GaussianNoise",
    "MadryAT",
    "Objective",
    "Standard",
    "StepContext",
    "Trades",
    "create_objective",
    "list_objectives",
    "register_objective",
]
