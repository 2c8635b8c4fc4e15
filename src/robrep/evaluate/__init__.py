"""Evaluation: accuracy, robust accuracy, probes (more measures live beside them).

The package is callable: ``robrep.evaluate(model, data, threat=...)`` is
:func:`robrep.evaluate.evaluate` (see ``robrep/_callable.py``); so is its module ``synbench``.
"""

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

from .._callable import make_package_callable  # noqa: E402

make_package_callable(__name__, "evaluate")
# the same for the submodule synbench and its function synbench: robrep.evaluate.synbench is the
# module (robrep.evaluate.synbench.plot_synbench works), calling it runs the benchmark
make_package_callable(__name__ + ".synbench", "synbench")
synbench = __import__("sys").modules[__name__ + ".synbench"]  # noqa: F811
