"""Clean and robust accuracy (overall and per class)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks import create_attack
from ..data import ImageData, take
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
        chunks_done: chunks merged into the result (1 for an unchunked evaluation).
        chunks_resumed: of those, chunks read back from the run folder instead of computed.
    """

    n: int
    clean_accuracy: float
    robust_accuracy: float | None
    per_class_clean: dict[int, float] = field(default_factory=dict)
    per_class_robust: dict[int, float] | None = None
    threat: dict[str, Any] | None = None
    attack: dict[str, Any] | None = None
    chunks_done: int = 1
    chunks_resumed: int = 0


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
    chunk_size: int | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    fingerprint_extra: dict[str, Any] | None = None,
) -> EvalResult:
    """Clean accuracy, and robust accuracy under ``attack`` within ``threat``.

    Only correctly classified examples are attacked (the others count as non-robust).
    The examples are processed in chunks of ``chunk_size`` (default: one chunk); the attack's
    randomness is drawn per chunk, chunk ``k`` from a generator seeded by ``(seed, k)`` (chunk 0
    by ``seed`` itself, so one chunk is the unchunked evaluation): same seed and chunk size, same
    result, whichever chunks were computed in which run.

    With ``out``, each finished chunk's per-example flags are written atomically to
    ``out/chunks/chunk-NNNNN.json`` with a fingerprint of the evaluation (model weights, data,
    n, threat, attack and its settings, seed, chunk and batch size, plus ``fingerprint_extra``);
    ``resume=True`` skips the chunks already there and merges them (a chunk of another
    configuration raises :class:`~robrep.errors.InputError`); finished chunks in ``out`` without
    ``resume`` raise too, unless ``overwrite=True`` discards them. The device is not part of the
    fingerprint: resume on the device that started the run to get bit-identical results.

    Args:
        model: classifier on [0,1] inputs; switched to eval mode for the evaluation.
        data: an :class:`ImageData` or an ``(x, y)`` pair of tensors.
        threat: threat model; None evaluates clean accuracy only.
        attack: name in ``robrep list attacks`` (``pgd``, ``apgd-ce``, ``apgd-dlr``, ``apgd``).
        attack_kwargs: e.g. ``{"steps": 50, "step_size": 0.01, "restarts": 3}``.
        n: evaluate ``n`` examples only: ``robrep.data.take(data, n, seed)``, the first ``n``, or a
            seeded class-stratified subset when the labels come grouped by class (a folder per class).
        chunk_size: examples per chunk (None: all in one chunk).
        out: run folder for the chunk files (None: nothing is written).
        resume, overwrite: what to do with finished chunks already in ``out``.
        fingerprint_extra: more JSON settings identifying the run (e.g. dataset name and split).

    Returns:
        An :class:`EvalResult`; ``chunks_done`` counts the chunks merged, ``chunks_resumed``
        those read back from ``out`` instead of computed.
    """
    if n is not None and n <= 0:
        raise InputError(f"n must be positive, got {n}")
    if chunk_size is not None and chunk_size <= 0:
        raise InputError(f"chunk_size must be positive, got {chunk_size}")
    if batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    if (resume or overwrite) and out is None:
        raise InputError("resume and overwrite need a run folder: pass --out (out=...)")
    dev = torch.device(device) if device is not None else next(iter(model.parameters())).device
    atk = create_attack(attack, **(attack_kwargs or {})) if threat is not None else None
    total, chunk_batches, data_digest = _chunk_source(data, n, batch_size, model, seed)
    cs = chunk_size or max(total, 1)
    bounds = [(s, min(s + cs, total)) for s in range(0, total, cs)]
    store = None
    if out is not None:
        from ..io.chunks import ChunkStore, module_digest

        fp = {"kind": "evaluate", "model": module_digest(model), "data": data_digest(), "n": total,
              "threat": threat.to_dict() if threat is not None else None, "attack": attack if threat is not None else None,
              "attack_kwargs": (attack_kwargs or {}) if threat is not None else None, "seed": seed,
              "chunk_size": cs, "batch_size": batch_size, **(fingerprint_extra or {})}
        store = ChunkStore.open(out, fp, len(bounds), resume=resume, overwrite=overwrite)
    was_training = model.training
    model.eval()
    parts: list[dict[str, Any]] = []
    try:
        many = len(bounds) > 1
        for k in progress(range(len(bounds)), desc="evaluate (chunks)", total=len(bounds), enable=show_progress and many):
            if store is not None and k in store.done:
                parts.append(store.done[k])
                continue
            gen = _chunk_generator(seed, k)
            s, e = bounds[k]
            correct, robust, labels = [], [], []
            for xb, yb in progress(chunk_batches(s, e), desc="evaluate", enable=show_progress and not many):
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
            part = {"start": s, "stop": e, "labels": torch.cat(labels).tolist(),
                    "correct": torch.cat(correct).int().tolist(),
                    "robust": torch.cat(robust).int().tolist() if atk is not None else None}
            if store is not None:
                store.write(k, part)
            parts.append(part)
    finally:
        model.train(was_training)
    c = torch.tensor([v for p in parts for v in p["correct"]], dtype=torch.bool)
    y = torch.tensor([v for p in parts for v in p["labels"]], dtype=torch.long)
    r = torch.tensor([v for p in parts for v in p["robust"]], dtype=torch.bool) if atk is not None else None
    pc = {int(k): float(c[y == k].float().mean()) for k in torch.unique(y).tolist()}
    pr = {int(k): float(r[y == k].float().mean()) for k in torch.unique(y).tolist()} if r is not None else None
    return EvalResult(
        n=len(c), clean_accuracy=float(c.float().mean()), robust_accuracy=float(r.float().mean()) if r is not None else None,
        per_class_clean=pc, per_class_robust=pr, threat=threat.to_dict() if threat is not None else None,
        attack={"name": attack, **(attack_kwargs or {})} if threat is not None else None,
        chunks_done=len(parts), chunks_resumed=len(store.done) if store is not None else 0,
    )


def _chunk_generator(seed: int, k: int) -> torch.Generator:
    """The attack's generator for chunk ``k``: ``seed`` itself for chunk 0, else a stream derived from (seed, k)."""
    g = torch.Generator(device="cpu")
    if k == 0:
        return g.manual_seed(seed)
    state = int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return g.manual_seed(state)


def _chunk_source(data: ImageData | tuple[torch.Tensor, torch.Tensor], n: int | None, batch_size: int,
                  model: nn.Module, seed: int = 0) -> tuple[int, Callable[[int, int], Iterable[tuple[torch.Tensor, torch.Tensor]]], Callable[[], Any]]:
    """(number of examples, ``batches(start, stop)`` over examples [start, stop), data digest for fingerprints)."""
    from ..io.chunks import tensor_digest

    if isinstance(data, tuple):
        xs, ys = data
        check_images(xs, model)
        _check_labels(xs, ys, model)
        if n is not None:
            xs, ys = xs[:n], ys[:n]

        def tensor_batches(s: int, e: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
            return [(xs[i : min(i + batch_size, e)], ys[i : min(i + batch_size, e)]) for i in range(s, e, batch_size)]

        return len(xs), tensor_batches, lambda: tensor_digest(xs, ys)
    if n is not None and hasattr(data, "labels") and hasattr(data, "subset"):
        sub = take(data, n, seed)  # class-grouped data (a folder per class): seeded stratified subset
    else:
        sub = data.head(n) if (n is not None and hasattr(data, "head")) else data
    total = len(sub)

    def data_batches(s: int, e: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        if (s, e) == (0, total):
            return sub.batches(batch_size)
        if hasattr(sub, "subset"):
            return sub.subset(torch.arange(s, e)).batches(batch_size)
        x, y = (torch.cat(t) for t in zip(*sub.batches(batch_size)))  # any other ImageData: materialize
        return [(x[i : min(i + batch_size, e)], y[i : min(i + batch_size, e)]) for i in range(s, e, batch_size)]

    def digest() -> Any:
        if hasattr(sub, "images") and hasattr(sub, "labels"):
            return tensor_digest(sub.images, sub.labels)
        if hasattr(sub, "fingerprint"):  # streamed data: files, chosen indices, labels, transform
            return sub.fingerprint()
        return {"name": sub.info.name, "split": sub.split, "len": total}

    return total, data_batches, digest


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
