"""Mutual information of representations: estimators, worst-case MI, vulnerability, bounds.

Zhu, Zhang & Evans, *Learning Adversarially Robust Representations via Worst-Case Mutual
Information Maximization*, ICML 2020.
"""

from .critics import (
    CRITICS,
    ConcatMLPCritic,
    CriticStack,
    DIMCritic,
    ResidualBlock1x1,
    SeparableMLPCritic,
    SeparableMLPEnsemble,
    create_critic,
    create_critics,
    list_critics,
)
from .estimate import estimate_mi, estimate_mi_samples, min_inputs, vulnerability
from .fano import (
    SignGaussianCase,
    accuracy_bound,
    binary_entropy,
    exact_sign_mi,
    sign_gaussian_case,
)
from .intervals import Interval, interval_from_values
from .mi_bounds import (
    BOUNDS,
    Bound,
    dv_bound,
    get_bound,
    infonce_bound,
    infonce_terms,
    jsd_bound,
    list_bounds,
    smile_bound,
)
from .probe import probe_robust_accuracy
from .results import MIEstimate, VulnerabilityResult
from .settings import DEFAULT_PRESET, PRESETS, MISettings, mi_settings
from .training import batch_pgd, fit_critic

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "MISettings",
    "CriticStack",
    "SeparableMLPEnsemble",
    "create_critics",
    "infonce_terms",
    "smile_bound",
    "mi_settings",
    "probe_robust_accuracy",
    "BOUNDS",
    "Bound",
    "CRITICS",
    "ConcatMLPCritic",
    "DIMCritic",
    "Interval",
    "MIEstimate",
    "ResidualBlock1x1",
    "SeparableMLPCritic",
    "SignGaussianCase",
    "VulnerabilityResult",
    "accuracy_bound",
    "batch_pgd",
    "binary_entropy",
    "create_critic",
    "dv_bound",
    "estimate_mi",
    "estimate_mi_samples",
    "min_inputs",
    "exact_sign_mi",
    "fit_critic",
    "get_bound",
    "infonce_bound",
    "interval_from_values",
    "jsd_bound",
    "list_bounds",
    "list_critics",
    "sign_gaussian_case",
    "vulnerability",
]
