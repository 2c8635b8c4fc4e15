"""Evaluation: accuracy, robust accuracy, probes (more measures live beside them).

The package is callable: ``robrep.evaluate(model, data, threat=...)`` is
:func:`robrep.evaluate.evaluate` (see ``robrep/_callable.py``).
"""

from .accuracy import EvalResult, accuracy, evaluate, robust_accuracy_curve
from .probe import ProbedClassifier, ProbeResult, extract_features, linear_probe, make_head

__all__ = ["EvalResult", "ProbeResult", "ProbedClassifier", "accuracy", "evaluate", "extract_features", "linear_probe",
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

from .._callable import make_package_callable  # noqa: E402

make_package_callable(__name__, "evaluate")
