"""Training: one plain loop for every objective, atomic per-epoch checkpoints, exact resume."""

from .loop import TrainConfig, TrainResult, build_model_for, train

__all__ = ["TrainConfig", "TrainResult", "build_model_for", "train"]
