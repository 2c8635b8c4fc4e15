"""Evaluation: accuracy, robust accuracy, probes (more measures live beside them)."""

from .accuracy import EvalResult, accuracy, evaluate, robust_accuracy_curve
from .probe import ProbedClassifier, ProbeResult, extract_features, linear_probe, make_head

__all__ = ["EvalResult", "ProbeResult", "ProbedClassifier", "accuracy", "evaluate", "extract_features", "linear_probe",
           "make_head", "robust_accuracy_curve"]
