"""Training objectives: a registry of named losses computed on a batch.

An objective turns a batch into a scalar loss for the optimizer; it may own extra trainable
modules (e.g. mutual-information critics), which the training loop optimises together with the
model and checkpoints beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .._registry import Registry
from ..errors import InputError
from ..threats import ThreatModel

__all__ = ["OBJECTIVES", "Objective", "StepContext", "create_objective", "list_objectives", "register_objective"]


@dataclass
class StepContext:
    """What an objective may need besides the batch.

    Attributes:
        threat: the threat model at this step (eps may be ramped by a warm-up schedule).
        generator: random source for attack starts and noise (seeded per epoch).
        epoch: current epoch (0-based); step: optimizer steps taken so far.
        attack_model: the model to run attacks (and other extra passes) on. Under distributed
            training ``model`` is the DistributedDataParallel wrapper, which must see exactly one
            forward per backward; attacks go through the unwrapped module given here.
    """

    threat: ThreatModel | None
    generator: torch.Generator | None
    epoch: int = 0
    step: int = 0
    attack_model: nn.Module | None = None

    def attacker(self, model: nn.Module) -> nn.Module:
        """The module attacks should use (the unwrapped model under DDP)."""
        return self.attack_model if self.attack_model is not None else model


class Objective:
    """Base class. Subclasses set ``name``, ``needs_threat`` and implement :meth:`loss`.

    ``supervised = False`` objectives ignore labels (representation learning); their models
    may be encoders whose "logits" are the representation.
    """

    name: ClassVar[str] = ""
    needs_threat: ClassVar[bool] = False
    supervised: ClassVar[bool] = True

    def __init__(self, **kwargs: Any) -> None:
        if kwargs:
            raise InputError(f"objective {self.name!r} got unknown options {sorted(kwargs)}")

    def extra_modules(self) -> nn.Module | None:
        """Trainable modules owned by the objective (None if there are none)."""
        return None

    def setup(self, model: nn.Module, example: torch.Tensor) -> None:
        """Called once before training with one batch (to size critics, etc.)."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Return the scalar loss and metrics (detached scalars) for logging."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-serializable options, stored in checkpoints and run records."""
        return {}


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register_objective(name: str, help: str = ""):  # type: ignore[no-untyped-def]
    def deco(cls: type[Objective]) -> type[Objective]:
        cls.name = name
        OBJECTIVES.add(name, cls, help=help)
        return cls

    return deco


def create_objective(name: str, **kwargs: Any) -> Objective:
    return OBJECTIVES.get(name)(**kwargs)


def list_objectives() -> list[str]:
    return OBJECTIVES.names()
