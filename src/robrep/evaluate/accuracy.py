"""Clean and robust accuracy (overall and per class)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import create_attack
from ..data import ImageData
from ..errors import InputError
from ..models.base import check_images
from ..progress import progress
from ..threats import ThreatModel

__all__ = ["EvalResult", "evaluate", "accuracy", "robust_accuracy_curve"]


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of a classifier, clean and under attack.

    Attributes:
        n: number of examples evaluated.
        clean_accuracy: fraction classified correctly.
        robust_accuracy: fraction classified correctly *and* not broken by the attack
            (None when no threat model was given).
        per_class_clean, per_class_robust: accuracy for each label (class index -> fraction).
        threat: the threat model as a dict, attack: the attack name and its settings.
    """

    n: int
    clean_accuracy: float
    robust_accuracy: float | None
    per_class_clean: dict[int, float] = field(default_factory=dict)
    per_class_robust: dict[int, float] | None = None
    threat: dict[str, Any] | None = None
    attack: dict[str, Any] | None = None


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageData, *, batch_size: int = 500, device: str | torch.device | None = None, n: int | None = None) -> float:
    """Clean top-1 accuracy."""
    return evaluate(model, data, batch_size=batch_size, device=device, n=n).clean_accuracy


def evaluate(
    model: nn.Module,
    data: ImageData | tuple[torch.Tensor, torch.Tensor],
    *,
    threat: ThreatModel | None = None,
    attack: str = "pgd",
    attack_kwargs: dict[str, Any] | None = None,
    batch_size: int = 500,
    n: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    show_progress: bool = False,
) -> EvalResult:
    """Clean accuracy, and robust accuracy under ``attack`` within ``threat``.

    Only correctly classified examples are attacked (the others count as non-robust).
    The attack's randomness is seeded by ``seed`` (same seed, same result).

    Args:
        model: classifier on [0,1] inputs; switched to eval mode for the evaluation.
        data: an :class:`ImageData` or an ``(x, y)`` pair of tensors.
        threat: threat model; None evaluates clean accuracy only.
        attack: name in ``robrep list attacks`` (``pgd``, ``apgd-ce``, ``apgd-dlr``, ``apgd``).
        attack_kwargs: e.g. ``{"steps": 50, "step_size": 0.01, "restarts": 3}``.
        n: evaluate the first ``n`` examples only.
    """
    if n is not None and n <= 0:
        raise InputError(f"n must be positive, got {n}")
    dev = torch.device(device) if device is not None else next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    atk = create_attack(attack, **(attack_kwargs or {})) if threat is not None else None
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if isinstance(data, tuple):
        xs, ys = data
        check_images(xs, model)
        _check_labels(xs, ys, model)
        if n is not None:
            xs, ys = xs[:n], ys[:n]
        batches = [(xs[i : i + batch_size], ys[i : i + batch_size]) for i in range(0, len(xs), batch_size)]
    else:
        sub = data.head(n) if (n is not None and hasattr(data, "head")) else data
        batches = sub.batches(batch_size)
    correct, robust, labels = [], [], []
    try:
        for xb, yb in progress(batches, desc="evaluate", enable=show_progress):
            xb, yb = xb.to(dev), yb.to(dev)
            if not isinstance(data, tuple):  # data sets: same checks as tensors (channels, range, labels)
                check_images(xb, model)
                _check_labels(xb, yb, model)
            with torch.no_grad():
                ok = model(xb).argmax(1) == yb
            correct.append(ok.cpu())
            labels.append(yb.cpu())
            if atk is not None:
                rob = ok.clone()
                idx = torch.nonzero(ok).flatten()
                if len(idx) > 0:
                    res = atk(model, xb[idx], yb[idx], threat, generator=gen)
                    rob[idx] = ~res.success
                robust.append(rob.cpu())
    finally:
        model.train(was_training)
    c, y = torch.cat(correct), torch.cat(labels)
    r = torch.cat(robust) if robust else None
    pc = {int(k): float(c[y == k].float().mean()) for k in torch.unique(y).tolist()}
    pr = {int(k): float(r[y == k].float().mean()) for k in torch.unique(y).tolist()} if r is not None else None
    return EvalResult(
        n=len(c), clean_accuracy=float(c.float().mean()), robust_accuracy=float(r.float().mean()) if r is not None else None,
        per_class_clean=pc, per_class_robust=pr, threat=threat.to_dict() if threat is not None else None,
        attack={"name": attack, **(attack_kwargs or {})} if threat is not None else None,
    )


def _check_labels(x: torch.Tensor, y: torch.Tensor, model: nn.Module) -> None:
    """Labels must be one integer per image, inside the model's classes (when it knows them)."""
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.is_floating_point():
        raise InputError(f"labels must be a 1-D integer tensor, got {getattr(y, 'shape', type(y).__name__)}")
    if len(y) != len(x):
        raise InputError(f"{len(x)} images but {len(y)} labels; pass one label per image")
    nc = getattr(model, "num_classes", None)
    if isinstance(nc, int) and len(y) and (int(y.min()) < 0 or int(y.max()) >= nc):
        raise InputError(f"labels must lie in the range [0, {nc - 1}] of the model's {nc} classes, got "
                         f"[{int(y.min())}, {int(y.max())}]; is this the data set the model was trained on?")


def robust_accuracy_curve(
    model: nn.Module, data: ImageData | tuple[torch.Tensor, torch.Tensor], threat: ThreatModel, eps_list: Sequence[float], **kw: Any
) -> list[tuple[float, float]]:
    """(eps, robust accuracy) for each eps (same attack settings and seed)."""
    out = []
    for e in eps_list:
        r = evaluate(model, data, threat=threat.with_eps(e), **kw)
        out.append((float(e), float(r.robust_accuracy if e > 0 else r.clean_accuracy)))
    return out
