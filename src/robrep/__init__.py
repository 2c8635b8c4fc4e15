"""robrep: adversarially robust representations -- learn them, measure them, see them.

The public API (everything else is an implementation detail)::

    import robrep
    data = robrep.load_dataset("mnist", "test")
    model = robrep.load("run/model.safetensors")
    thr = robrep.threat("linf", 0.3)
    res = robrep.evaluate(model, data, threat=thr, attack="apgd")
    z = robrep.representation(model, "penultimate")(x)
"""

from __future__ import annotations

from . import evaluate, train  # callable packages: robrep.evaluate(...), robrep.train(...)
from ._version import __version__
from .attacks import (
    AttackResult,
    apgd,
    create_attack,
    fgsm,
    list_attacks,
    pgd,
    representation_attack,
    worst_case,
)
from .data import ImageData, list_datasets, load_dataset
from .errors import CheckpointError, DataNotFoundError, InputError, RobrepError, UnknownNameError
from .evaluate import EvalResult
from .models import (
    RobrepModel,
    create_model,
    list_layers,
    list_models,
    load,
    representation,
    save_model,
    wrap,
)
from .objectives import create_objective, list_objectives
from .threats import L1Ball, L2Ball, LinfBall, ThreatModel, threat
from .train import TrainConfig, TrainResult

__all__ = [
    "__version__",
    "AttackResult",
    "CheckpointError",
    "DataNotFoundError",
    "EvalResult",
    "ImageData",
    "InputError",
    "L1Ball",
    "L2Ball",
    "LinfBall",
    "RobrepError",
    "RobrepModel",
    "ThreatModel",
    "TrainConfig",
    "TrainResult",
    "UnknownNameError",
    "apgd",
    "create_attack",
    "create_model",
    "create_objective",
    "evaluate",
    "fgsm",
    "list_attacks",
    "list_datasets",
    "list_layers",
    "list_models",
    "list_objectives",
    "load",
    "load_dataset",
    "pgd",
    "representation",
    "representation_attack",
    "save_model",
    "threat",
    "train",
    "worst_case",
    "wrap",
]
