"""Certification: randomized smoothing (Cohen et al. 2019), first-order certificates
(Mohapatra et al. 2020) and the hidden cost of smoothing (Mohapatra et al. 2021)."""

from .first_order import (
    FirstOrderCertificate,
    GradientBounds,
    band_radius,
    certify_first_order,
    gradient_bounds,
    numerical_radius,
    sample_gradient,
)
from .smoothing import (
    ABSTAIN,
    Certificate,
    SmoothPrediction,
    certified_accuracy,
    certified_accuracy_curve,
    certify,
    clopper_pearson_lower,
    cohen_radius,
    predict,
    sample_counts,
)

__all__ = [
    "ABSTAIN",
    "Certificate",
    "FirstOrderCertificate",
    "GradientBounds",
    "SmoothPrediction",
    "band_radius",
    "certified_accuracy",
    "certified_accuracy_curve",
    "certify",
    "certify_first_order",
    "clopper_pearson_lower",
    "cohen_radius",
    "gradient_bounds",
    "numerical_radius",
    "predict",
    "sample_counts",
    "sample_gradient",
]
