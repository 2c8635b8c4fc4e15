"""Evaluation: accuracy, robust accuracy, probes (more measures live beside them)."""

from .accuracy import EvalResult, accuracy, evaluate, robust_accuracy_curve
from .probe import (
           ProbedClassifier,
           ProbeResult,
           extract_features,
           fit_linear,
           linear_probe,
           make_head,
)

__all__ = ["EvalResult", "ProbeResult", "ProbedClassifier", "accuracy", "evaluate", "extract_features", "fit_linear", "linear_probe",
           "make_head", "robust_accuracy_curve"]
from .synbench import (
    RobustProbeResult,
    SynBenchResult,
    bound_correct,
    plot_synbench,
    raw_reference,
    reference_denominator,
    robust_bayes_direction,
    robust_linear_probe,
    synbench,
    synbench_scores,
)

__all__ += ["RobustProbeResult", "SynBenchResult", "bound_correct", "plot_synbench", "raw_reference",
            "reference_denominator", "robust_bayes_direction", "robust_linear_probe", "synbench", "synbench_scores"]
