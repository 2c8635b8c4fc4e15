"""Evaluation: accuracy and robust accuracy (more measures live beside it)."""

from .accuracy import EvalResult, accuracy, evaluate, robust_accuracy_curve

__all__ = ["EvalResult", "accuracy", "evaluate", "robust_accuracy_curve"]
