"""Robust representations made visible (Engstrom et al. 2019, arXiv 1906.00945).

Inversion, brittleness of standard representations, feature visualization, feature addition,
interpolation, misclassification insight and saliency maps, on any model and layer, plus the
fidelity metrics (SSIM, l2, intervals) used to compare standard and robust models.
"""

from .features import (
    FeatureAdditionResult,
    FeatureVisualization,
    MisclassificationInsight,
    TopImages,
    add_feature,
    explain_misclassification,
    top_activating,
    visualize_features,
)
from .metrics import MeanInterval, gaussian_window, image_l2, mean_interval, ssim
from .operations import (
    BrittlenessResult,
    InterpolationResult,
    InversionResult,
    brittleness,
    feature_addition_loss,
    interpolate,
    inversion_loss,
    invert,
    invert_representation,
)
from .optimize import (
    PAPER_NOISE_STD,
    FakeReLU,
    OptimizationResult,
    as_representation,
    noise_seed,
    optimize_inputs,
)
from .saliency import SALIENCY, SaliencyResult, input_gradient, saliency, saliency_image, smoothgrad

__all__ = [
    "PAPER_NOISE_STD",
    "SALIENCY",
    "BrittlenessResult",
    "FakeReLU",
    "FeatureAdditionResult",
    "FeatureVisualization",
    "InterpolationResult",
    "MeanInterval",
    "InversionResult",
    "MisclassificationInsight",
    "OptimizationResult",
    "SaliencyResult",
    "TopImages",
    "add_feature",
    "as_representation",
    "brittleness",
    "explain_misclassification",
    "feature_addition_loss",
    "gaussian_window",
    "image_l2",
    "input_gradient",
    "interpolate",
    "invert",
    "invert_representation",
    "inversion_loss",
    "mean_interval",
    "noise_seed",
    "optimize_inputs",
    "saliency",
    "saliency_image",
    "smoothgrad",
    "ssim",
    "top_activating",
    "visualize_features",
]
