"""Evaluation subsets: ``n`` examples chosen the same way by every command.

``stratified_subset(labels, n, seed)`` draws a seeded, class-stratified subset (class counts
differ by at most one, except where a class has fewer examples than its share: it then gives all
it has and the rest is shared among the others). :func:`take` is what ``--n`` means everywhere:
on data whose labels come grouped by class (an ImageFolder, a class-sorted shard list) the first
``n`` examples would cover a few classes only, so ``take`` uses the stratified subset there; on
data in mixed order (MNIST, CIFAR, ImageNet validation) it keeps the first ``n``, as before.
The choice is written to ``data.selection`` so that results can record it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = ["grouped_by_class", "stratified_subset", "take"]


def _labels_array(labels: torch.Tensor | np.ndarray | list[int]) -> np.ndarray:
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise InputError(f"labels must be a 1-D sequence of integers, got shape {y.shape} and dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def stratified_subset(labels: torch.Tensor | np.ndarray | list[int], n: int, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded, class-stratified subset of ``n`` examples.

    Every class gets ``n // K`` or ``n // K + 1`` examples (``K`` classes present; which classes
    get the extra one is drawn from ``seed``); a class with fewer examples than its share gives
    all of them and the remainder is spread over the other classes, so exactly ``n`` indices are
    returned. Within a class the examples are a uniform draw without replacement. With
    ``n >= K`` every class is present.

    Args:
        labels: (N,) integer labels.
        n: subset size, 1 <= n <= N.
        seed: the draw's seed (same seed, same subset).

    Returns:
        (n,) int64 indices into ``labels``, ascending (files are read in their stored order).
    """
    y = _labels_array(labels)
    if not 1 <= int(n) <= len(y):
        raise InputError(f"subset size n must be in [1, {len(y)}] (the number of examples), got {n}")
    n = int(n)
    rng = np.random.default_rng(int(seed))
    classes, counts = np.unique(y, return_counts=True)
    quota = np.zeros(len(classes), dtype=np.int64)
    while True:  # water-filling: equal shares, capped by each class's size
        rem = n - int(quota.sum())
        open_ = np.flatnonzero(quota < counts)
        if rem == 0 or len(open_) == 0:
            break
        q = rem // len(open_)
        if q == 0:
            quota[rng.permutation(open_)[:rem]] += 1
            break
        quota[open_] = np.minimum(quota[open_] + q, counts[open_])
    keep = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, quota) if k > 0]
    return torch.from_numpy(np.sort(np.concatenate(keep)))


def grouped_by_class(labels: torch.Tensor | np.ndarray | list[int]) -> bool:
    """True when each class's examples are contiguous (e.g. a folder per class) and there are >= 2 classes."""
    y = _labels_array(labels)
    if len(y) < 2:
        return False
    k = len(np.unique(y))
    return k >= 2 and int(np.count_nonzero(y[1:] != y[:-1])) == k - 1


def take(data: Any, n: int | None, seed: int = 0, *, method: str = "auto") -> Any:
    """``n`` examples of ``data`` for an evaluation (what ``--n`` means in every command).

    Args:
        data: an :class:`~robrep.data.ImageData` (anything with ``labels``, ``subset``, ``len``).
        n: how many; None or ``n >= len(data)`` keeps all.
        seed: seed of the stratified draw.
        method: ``"auto"`` (stratified when the labels are grouped by class, else the first
            ``n``), ``"stratified"`` or ``"first"``.

    Returns:
        The subset (``data`` itself when all are kept; an earlier ``take``'s record is kept), with ``.selection`` set to
        ``{"n", "of", "method", "seed"}`` (``method``: ``all``, ``first`` or ``stratified``;
        ``seed`` is None unless stratified).
    """
    if method not in ("auto", "stratified", "first"):
        raise InputError(f"subset method must be auto, stratified or first, got {method!r}")
    total = len(data)
    if n is not None and int(n) <= 0:
        raise InputError(f"n must be positive, got {n}")
    if n is None or int(n) >= total:  # all: ``data`` itself, keeping the record of an earlier take
        if getattr(data, "selection", None) is None:
            _set_selection(data, {"n": total, "of": total, "method": "all", "seed": None})
        return data
    else:
        n = int(n)
        if method == "stratified" or (method == "auto" and grouped_by_class(data.labels)):
            out = data.subset(stratified_subset(data.labels, n, seed))
            sel = {"n": n, "of": total, "method": "stratified", "seed": int(seed)}
        else:
            out = data.subset(torch.arange(n))
            sel = {"n": n, "of": total, "method": "first", "seed": None}
    _set_selection(out, sel)
    return out


def _set_selection(data: Any, sel: dict[str, Any]) -> None:
    try:
        data.selection = sel
    except AttributeError:  # pragma: no cover - objects without attribute storage
        pass
