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
from .bounds import BoxSet, Bounds, LpBall, box, compute_bounds, crown, ibp, margin_spec, to_sequential
from .semantic import SEMANTIC_TRANSFORMS, apply_transform, list_transforms, rotation_boxes, sp_layers, sp_network
from .semantic_verify import RangeResult, SemanticImageResult, SemanticSummary, attack_range, semantic_certify, summarize, verify_range
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
    "SEMANTIC_TRANSFORMS",
    "BoxSet",
    "Bounds",
    "LpBall",
    "RangeResult",
    "SemanticImageResult",
    "SemanticSummary",
    "apply_transform",
    "attack_range",
    "box",
    "compute_bounds",
    "crown",
    "ibp",
    "list_transforms",
    "margin_spec",
    "rotation_boxes",
    "semantic_certify",
    "sp_layers",
    "sp_network",
    "summarize",
    "to_sequential",
    "verify_range",
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
