"""Clean and robust accuracy (overall and per class)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._modes import eval_mode
from ..attacks import create_attack, get_protocol, is_protocol
from ..attacks.flags import (
    Flag,
    black_box_flag,
    clean_below_robust_flag,
    gradient_flag,
    randomized_flag,
)
from ..attacks.protocols import CascadeResult
from ..data import ImageData, take
from ..errors import InputError
from ..io.chunks import run_chunks
from ..io.shard import Shard
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
        threat: the threat model as a dict, attack: the attack name and its settings (for a
            protocol also ``protocol_version`` and ``precision_ran``: what its stages' passes ran
            in, ``"fp32"`` or ``"bf16"``, when ``attack_kwargs`` sets ``precision``; verdicts
            are float32 either way).
        chunks_done: chunks merged into the result (1 for an unchunked evaluation).
        chunks_resumed: of those, chunks read back from the run folder instead of computed.
        stages: for a protocol (``autoattack-standard``, ``fast``, ...): robust accuracy after
            each stage, in order, starting with ``"clean"`` (None for single attacks).
        flags: findings that question the number (``robrep.attacks.flags.Flag.to_dict()``:
            code, message, meaning, action, value); empty when nothing was seen.
        notes: adjustments the protocol made (e.g. target counts clipped to classes - 1).
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
    stages: dict[str, float] | None = None
    flags: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = ()


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
    shard: Shard | None = None,
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
        attack: name in ``robrep list attacks``: single attacks (``pgd``, ``apgd-ce``, ``apgd-dlr``,
            ``apgd``, ``apgd-t``, ``fab-t``, ``square``) or protocols (``autoattack-standard``,
            ``autoattack-plus``, ``autoattack-rand``, ``fast``), whose result adds the robust
            accuracy after each stage and the flags.
        attack_kwargs: e.g. ``{"steps": 50, "step_size": 0.01, "restarts": 3}``.
        n: evaluate ``n`` examples only: ``robrep.data.take(data, n, seed)``, the first ``n``, or a
            seeded class-stratified subset when the labels come grouped by class (a folder per class).
        chunk_size: examples per chunk (None: all in one chunk).
        out: run folder for the chunk files (None: nothing is written).
        resume, overwrite: what to do with finished chunks already in ``out``.
        fingerprint_extra: more JSON settings identifying the run (e.g. dataset name and split).
        shard: this process's place in a ``torchrun`` job (needs ``out``): each rank evaluates
            its round-robin share of the missing chunks and every rank returns the merged result,
            equal to a single-process run (:mod:`robrep.io.shard`).

    Returns:
        An :class:`EvalResult`; ``chunks_done`` counts the chunks merged, ``chunks_resumed``
        those read back from ``out`` instead of computed.
    """
    _check_args(n, chunk_size, batch_size, resume, overwrite, out)
    dev = torch.device(device) if device is not None else next(iter(model.parameters()), torch.empty(0)).device
    atk = create_attack(attack, **(attack_kwargs or {})) if threat is not None else None
    total, chunk_batches, data_digest = _chunk_source(data, n, batch_size, model, seed)
    cs = chunk_size or max(total, 1)
    bounds = [(s, min(s + cs, total)) for s in range(0, total, cs)]
    proto = get_protocol(attack).for_norm(threat.norm).to_dict() if (threat is not None and is_protocol(attack)) else None
    with eval_mode(model):
        if threat is not None:  # refuse a model the attack cannot measure before anything is written
            _preflight(model, chunk_batches, bounds, dev, attack, proto)
        store = _open_store(out, model, data_digest, total, threat, attack, attack_kwargs, seed, cs, batch_size,
                            fingerprint_extra, proto, len(bounds), resume, overwrite, shard)
        many = len(bounds) > 1

        def chunk(k: int) -> dict[str, Any]:
            return _eval_chunk(model, chunk_batches, bounds[k], dev, atk, threat, _chunk_generator(seed, k),
                               check_data=not isinstance(data, tuple), show_progress=show_progress and not many,
                               stage_names=[st["stage"] for st in proto["stages"]] if proto else None)

        parts = run_chunks(store, len(bounds), chunk, shard=shard,
                           order=progress(range(len(bounds)), desc="evaluate (chunks)", total=len(bounds),
                                          enable=show_progress and many))
    return _merge(parts, threat, attack, attack_kwargs, proto, store)


def _check_args(n: int | None, chunk_size: int | None, batch_size: int, resume: bool, overwrite: bool, out: Any) -> None:
    if n is not None and n <= 0:
        raise InputError(f"n must be positive, got {n}")
    if chunk_size is not None and chunk_size <= 0:
        raise InputError(f"chunk_size must be positive, got {chunk_size}")
    if batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    if (resume or overwrite) and out is None:
        raise InputError("resume and overwrite need a run folder: pass --out (out=...)")


def _preflight(model: nn.Module, chunk_batches: Callable[[int, int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
               bounds: list[tuple[int, int]], dev: torch.device, attack: str, proto: dict[str, Any] | None) -> None:
    """The model checks on the first batch: finite logits (every attack), and for a protocol
    (``proto``) a deterministic output."""
    if not bounds:
        return
    from ..attacks.protocols import output_changes

    xb, _yb = next(iter(chunk_batches(*bounds[0])))
    xb = xb.to(dev)
    check_images(xb, model)
    with torch.no_grad():
        z = model(xb)
    if not torch.isfinite(z).all():
        raise InputError(f"the model returned non-finite logits (NaN or inf) for {int((~torch.isfinite(z)).any(1).sum())} "
                         f"of {len(xb)} images; fix the model (or its weights) before measuring robustness")
    if proto is None:
        return
    changed = int(output_changes(model, xb).sum())
    if changed and not proto["randomized"]:
        raise InputError(f"flag randomized-output: the model's output changed between two identical calls on {changed} "
                         f"of {len(xb)} images, so {attack} would overstate its robustness; use --attack autoattack-rand "
                         "(gradients averaged over 20 calls)")


def _open_store(out: Any, model: nn.Module, data_digest: Callable[[], Any], total: int, threat: ThreatModel | None,
                attack: str, attack_kwargs: dict[str, Any] | None, seed: int, cs: int, batch_size: int,
                fingerprint_extra: dict[str, Any] | None, proto: dict[str, Any] | None, num_chunks: int,
                resume: bool, overwrite: bool, shard: Shard | None = None) -> Any:
    """The chunk store of the run folder ``out`` (None without one); its fingerprint identifies the evaluation."""
    if out is None:
        return None
    from ..io.chunks import module_digest, open_store

    fp = {"kind": "evaluate", "model": module_digest(model), "data": data_digest(), "n": total,
          "threat": threat.to_dict() if threat is not None else None, "attack": attack if threat is not None else None,
          "attack_kwargs": (attack_kwargs or {}) if threat is not None else None, "seed": seed,
          "chunk_size": cs, "batch_size": batch_size, **(fingerprint_extra or {})}
    if proto is not None:
        fp["protocol_version"] = proto["version"]
    return open_store(out, fp, num_chunks, resume=resume, overwrite=overwrite, shard=shard)


def _eval_chunk(model: nn.Module, chunk_batches: Callable[[int, int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                bound: tuple[int, int], dev: torch.device, atk: Any, threat: ThreatModel | None, gen: torch.Generator,
                *, check_data: bool, show_progress: bool, stage_names: list[str] | None = None) -> dict[str, Any]:
    """Per-example flags of examples [start, stop): labels, clean correctness, robustness, and for
    protocols the robustness after each stage, the gradient-flag count and notes."""
    s, e = bound
    correct, robust, labels = [], [], []
    stages: dict[str, list[torch.Tensor]] = {}
    grad_bad, attacked, randomized = 0, 0, 0
    notes: list[str] = []
    ran: set[str] = set()
    for xb, yb in progress(chunk_batches(s, e), desc="evaluate", enable=show_progress):
        xb, yb = xb.to(dev), yb.to(dev)
        if check_data:  # data sets: same checks as tensors (channels, range, labels)
            check_images(xb, model)
            _check_labels(xb, yb, model)
        with torch.no_grad():
            ok = model(xb).argmax(1) == yb
        correct.append(ok.cpu())
        labels.append(yb.cpu())
        if atk is None:
            continue
        rob = ok.clone()
        idx = torch.nonzero(ok).flatten()
        res = atk(model, xb[idx], yb[idx], threat, generator=gen) if len(idx) > 0 else None
        if res is not None:
            rob[idx] = ~res.success
        robust.append(rob.cpu())
        if stage_names:
            done = dict(res.stages) if isinstance(res, CascadeResult) else {}
            for name in stage_names:
                st = ok.clone()
                if name in done:
                    st[idx] = ~done[name]
                stages.setdefault(name, []).append(st.cpu())
        if isinstance(res, CascadeResult):
            grad_bad += int(res.grad_bad.sum()) if res.grad_bad is not None else 0
            attacked += len(idx)
            randomized += int(res.randomized) * len(idx)
            notes += [m for m in res.notes if m not in notes]
            ran.add(res.precision)
    part: dict[str, Any] = {"start": s, "stop": e, "labels": torch.cat(labels).tolist(),
                            "correct": torch.cat(correct).int().tolist(),
                            "robust": torch.cat(robust).int().tolist() if atk is not None else None}
    if stage_names:
        part |= {"stages": {k: torch.cat(v).int().tolist() for k, v in stages.items()}, "grad_bad": grad_bad,
                 "attacked": attacked, "randomized": randomized, "notes": notes, "precision": sorted(ran)}
    return part


def _merge(parts: list[dict[str, Any]], threat: ThreatModel | None, attack: str, attack_kwargs: dict[str, Any] | None,
           proto: dict[str, Any] | None, store: Any) -> EvalResult:
    """One :class:`EvalResult` from the chunks' per-example flags (with stage accuracies and flags)."""
    c = torch.tensor([v for p in parts for v in p["correct"]], dtype=torch.bool)
    y = torch.tensor([v for p in parts for v in p["labels"]], dtype=torch.long)
    r = torch.tensor([v for p in parts for v in p["robust"]], dtype=torch.bool) if threat is not None else None
    pc = {int(k): float(c[y == k].float().mean()) for k in torch.unique(y).tolist()}
    pr = {int(k): float(r[y == k].float().mean()) for k in torch.unique(y).tolist()} if r is not None else None
    stage_acc: dict[str, float] | None = None
    # what a protocol's stages ran in ("fp32", "bf16"; both where chunks differ), the verdicts being float32
    ran = "+".join(sorted({v for p in parts for v in p.get("precision", [])}))
    flags: list[Flag] = []
    notes: list[str] = []
    if proto is not None and r is not None:
        stage_acc = {"clean": float(c.float().mean())}
        for st in proto["stages"]:
            vals = [v for p in parts for v in p["stages"][st["stage"]]]
            stage_acc[st["stage"]] = float(torch.tensor(vals, dtype=torch.float).mean()) if vals else 0.0
        attacked = sum(p.get("attacked", 0) for p in parts)
        changed = sum(p.get("randomized", 0) for p in parts)
        notes = list(dict.fromkeys(m for p in parts for m in p.get("notes", [])))
        flags += [f for f in (randomized_flag(changed, attacked, proto["randomized"]),
                              gradient_flag(sum(p.get("grad_bad", 0) for p in parts), attacked),
                              black_box_flag(stage_acc)) if f is not None]
    if pr is not None:
        f = clean_below_robust_flag(pc, pr)
        if f is not None:
            flags.append(f)
    return EvalResult(
        n=len(c), clean_accuracy=float(c.float().mean()), robust_accuracy=float(r.float().mean()) if r is not None else None,
        per_class_clean=pc, per_class_robust=pr, threat=threat.to_dict() if threat is not None else None,
        attack=({"name": attack, **(attack_kwargs or {})} | ({"protocol_version": proto["version"]} if proto else {})
                | ({"precision_ran": ran} if ran and "precision" in (attack_kwargs or {}) else {}))
        if threat is not None else None,
        chunks_done=len(parts), chunks_resumed=len(store.done) if store is not None else 0,
        stages=stage_acc, flags=tuple(f.to_dict() for f in flags), notes=tuple(notes),
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
