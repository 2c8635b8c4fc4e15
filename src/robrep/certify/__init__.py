"""Certification: randomized smoothing (Cohen et al. 2019), first-order certificates
(Mohapatra et al. 2020), the hidden cost of smoothing (Mohapatra et al. 2021), and semantic
perturbations with IBP/CROWN bounds (Mohapatra et al. 2020, "Towards verifying robustness of
neural networks against a family of semantic perturbations").

Modules: ``smoothing`` (one image: sampling, PREDICT, CERTIFY, Clopper-Pearson), ``first_order``
(first-order radii), ``runner`` (data-set loops, resumable chunks, TSV files, summaries and
plots), ``hidden_cost``, ``bound_propagation`` (IBP/CROWN; input sets in ``input_sets``: boxes and :class:`~robrep.threats.ThreatModel` balls; layers in ``bound_layers``),
``semantic`` (transforms), ``semantic_encodings`` (SP-layers, rotation boxes), ``semantic_verify`` (verification with splitting).
"""

from .bound_propagation import (
    Bounds,
    BoxSet,
    LpBall,
    ThreatBall,
    ball,
    box,
    compute_bounds,
    crown,
    ibp,
    margin_spec,
    to_sequential,
)
from .first_order import (
    FirstOrderCertificate,
    GradientBounds,
    band_radius,
    certify_first_order,
    gradient_bounds,
    numerical_radius,
    sample_gradient,
)
from .runner import (
    CertifyRun,
    certify_dataset,
    certify_dataset_resumable,
    plot_certified_accuracy,
    read_tsv,
    summarize_certification,
    write_tsv,
)
from .semantic import SEMANTIC_TRANSFORMS, apply_transform, list_transforms
from .semantic_encodings import rotation_boxes, sp_layers, sp_network
from .semantic_verify import (
    RangeResult,
    SemanticImageResult,
    SemanticSummary,
    attack_range,
    semantic_certify,
    summarize_semantic,
    verify_range,
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

summarize = summarize_semantic  # the former name, kept so that old imports work

__all__ = [
    "SEMANTIC_TRANSFORMS",
    "BoxSet",
    "Bounds",
    "LpBall",
    "ThreatBall",
    "ball",
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
    "summarize_semantic",
    "to_sequential",
    "verify_range",
    "ABSTAIN",
    "Certificate",
    "CertifyRun",
    "FirstOrderCertificate",
    "GradientBounds",
    "SmoothPrediction",
    "band_radius",
    "certified_accuracy",
    "certified_accuracy_curve",
    "certify",
    "certify_dataset",
    "certify_dataset_resumable",
    "certify_first_order",
    "clopper_pearson_lower",
    "cohen_radius",
    "gradient_bounds",
    "numerical_radius",
    "plot_certified_accuracy",
    "predict",
    "read_tsv",
    "sample_counts",
    "sample_gradient",
    "summarize_certification",
    "write_tsv",
]
