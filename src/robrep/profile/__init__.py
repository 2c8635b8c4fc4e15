"""Robustness cards: ``profile`` one encoder on the user's data and on synthetic data, and
``compare`` the cards of several encoders.

    from robrep.profile import profile, compare_cards
    r = profile("init:small-cnn", "demo", out="cards/small", budget="quick")
    r.card.headline["probe_adversarial_accuracy"]   # {"value", "low", "high", "n"}
"""

from .budgets import BUDGETS, PAPER, QUICK, STANDARD, Budget, get_budget
from .card import SCHEMA_VERSION, Card, load_card, wilson_interval
from .compare import CompareResult, compare_cards, leaderboard_rows
from .features import FeatureCache, activation_bytes_per_image, auto_batch_size
from .runner import (
    ProfileResult,
    check_layers,
    profile,
    profile_data,
    resolve_source,
    vulnerability_kwargs,
)
from .sensitivity import SensitivityResult, embedding_sensitivity, relative_change

__all__ = [
    "BUDGETS", "PAPER", "QUICK", "STANDARD", "SCHEMA_VERSION", "Budget", "Card", "CompareResult", "FeatureCache",
    "ProfileResult", "SensitivityResult", "activation_bytes_per_image", "auto_batch_size", "check_layers", "compare_cards",
    "embedding_sensitivity", "get_budget", "leaderboard_rows", "load_card", "profile", "profile_data", "relative_change",
    "resolve_source", "vulnerability_kwargs", "wilson_interval",
]
