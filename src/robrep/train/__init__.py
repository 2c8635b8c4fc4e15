"""Training: one plain loop for every objective, atomic per-epoch checkpoints, exact resume.

The package is callable: ``robrep.train(cfg, out)`` is :func:`robrep.train.train` (see
``robrep/_callable.py``).
"""

from .._callable import make_package_callable
from .loop import TrainConfig, TrainResult, build_model_for, train

__all__ = ["TrainConfig", "TrainResult", "build_model_for", "train"]

make_package_callable(__name__, "train")
