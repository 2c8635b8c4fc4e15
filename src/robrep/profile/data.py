"""The data of a profile, streamed: the probe's training images and the test images, chosen the
way ``--n`` chooses everywhere (a seeded class-stratified subset on class-sorted data, the first
``n`` on data in mixed order), adapted lazily to the model's input shape, and served in batches.

Nothing here holds a whole split in float memory: :class:`AdaptedData` resizes each batch as it
is served (the result is quantized to uint8, exactly as an in-memory copy of the adapted images
would hold it), and :func:`pick` gives each measure the images it needs (the ``n`` images it
attacks) as a subset, which the measure then materializes or iterates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..data import ImageData, load_dataset
from ..data.subset import grouped_by_class, stratified_subset
from ..errors import InputError

__all__ = ["AdaptedData", "adapt", "data_key", "materialize", "pick", "profile_data"]


def _adapt_batch(xb: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Float [0,1] images -> the model's (C, H, W): a gray channel repeated, an antialiased
    bilinear resize, then quantized to uint8 levels (returned as float in [0,1])."""
    c, h, w = shape
    if xb.shape[1] != c:
        xb = xb.expand(-1, c, -1, -1)
    if tuple(xb.shape[2:]) != (h, w):
        xb = torch.nn.functional.interpolate(xb, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return (xb.clamp(0, 1) * 255).round().div_(255.0)


class AdaptedData(ImageData):
    """``base`` with every image adapted to ``shape`` as its batch is served (see :func:`adapt`)."""

    def __init__(self, base: ImageData, shape: tuple[int, int, int]) -> None:
        self.base, self.shape, self.split = base, tuple(shape), base.split
        c = shape[0]
        m, s = base.info.mean, base.info.std
        self.info = dataclasses.replace(base.info, input_shape=self.shape, mean=tuple(m[:1]) * c if len(m) != c else m,
                                        std=tuple(s[:1]) * c if len(s) != c else s)
        self.selection = getattr(base, "selection", None)

    def __len__(self) -> int:
        return len(self.base)

    def __repr__(self) -> str:
        return f"AdaptedData({self.base!r}, shape={self.shape})"

    @property
    def labels(self) -> torch.Tensor:
        return self.base.labels  # type: ignore[attr-defined,no-any-return]

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False, device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for xb, yb in self.base.batches(batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last, device=device):
            yield _adapt_batch(xb, self.shape), yb  # type: ignore[arg-type]

    def subset(self, indices: Any) -> AdaptedData:
        return AdaptedData(self.base.subset(indices), self.shape)  # type: ignore[attr-defined]

    def head(self, n: int) -> AdaptedData:
        return self.subset(torch.arange(min(n, len(self))))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All adapted images as float (small data only: the measures' subsets)."""
        return materialize(self)

    def fingerprint(self) -> dict[str, Any]:
        return {"adapted_to": list(self.shape), "base": data_key(self.base)}


def adapt(data: ImageData, shape: Sequence[int]) -> tuple[ImageData, str | None]:
    """``data`` served at the model's input ``shape`` (C, H, W), and a note saying how (None when
    the shapes agree: then ``data`` itself). Only 1 -> 3 channels is adapted."""
    shape = tuple(int(v) for v in shape)
    have = tuple(int(v) for v in data.info.input_shape)
    if have == shape:
        return data, None
    how = []
    if have[0] != shape[0]:
        if have[0] == 1 and shape[0] == 3:
            how.append("gray channel repeated to 3")
        else:
            raise InputError(f"the data have {have[0]} channels and the model takes {shape[0]}; only 1 -> 3 is adapted: "
                             f"give data with {shape[0]} channels")
    if have[1:] != shape[1:]:
        how.append(f"bilinearly resized (antialiased) from {have[1]}x{have[2]} to {shape[1]}x{shape[2]}")
    return AdaptedData(data, shape), "; ".join(how) + "; quantized to uint8 levels"  # type: ignore[arg-type]


def pick(data: ImageData, n: int, seed: int = 0, *, mixed: bool = False) -> tuple[ImageData, torch.Tensor]:
    """(subset, its indices into ``data``): ``n`` examples chosen as ``robrep.data.take`` does
    (seeded class-stratified when the labels come grouped by class, else the first ``n``).

    ``mixed``: a stratified subset comes in a seeded random order instead of class by class
    (for a measure that splits its images by position, as the vulnerability's held-out part)."""
    n = min(int(n), len(data))
    labels = data.labels  # type: ignore[attr-defined]
    if grouped_by_class(labels) and (n < len(data) or mixed):
        idx = stratified_subset(labels, n, seed)
        if mixed:
            idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(int(seed)))]
        how = "stratified"
    else:
        idx = torch.arange(n)
        how = "first" if n < len(data) else "all"
    if not (n < len(data) or mixed and how == "stratified"):
        return data, idx  # all of it, in order: ``data`` itself, its own record of how it was chosen untouched
    out = data.subset(idx)  # type: ignore[attr-defined]
    try:
        out.selection = {"n": n, "of": len(data), "method": how, "seed": int(seed) if how == "stratified" else None}
    except AttributeError:  # pragma: no cover
        pass
    return out, idx


def materialize(data: ImageData, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of ``data`` as float (N, C, H, W) and its labels, assembled from its batches
    (for the few images one measure works on; a streamed set never goes through ``tensors()``)."""
    n = len(data)
    x: torch.Tensor | None = None
    ys = []
    i = 0
    for xb, yb in data.batches(batch_size):
        if x is None:
            x = torch.empty((n, *xb.shape[1:]), dtype=torch.float32)
        x[i : i + len(xb)] = xb
        ys.append(yb)
        i += len(xb)
    assert x is not None
    return x, torch.cat(ys)


def data_key(data: ImageData) -> str:
    """A digest naming the examples of ``data``: its ``fingerprint()`` where it has one (streamed
    sets: source, indices, labels, transform), else a digest of its in-memory images."""
    from .features import data_digest

    fp: Callable[[], Any] | None = getattr(data, "fingerprint", None)
    if callable(fp):
        return "fp:" + hashlib.sha256(json.dumps(fp(), sort_keys=True, default=str).encode()).hexdigest()
    images = getattr(data, "images", None)
    if isinstance(images, torch.Tensor):
        y = data.labels  # type: ignore[attr-defined]
        return "mem:" + data_digest(images) + hashlib.sha256(np.asarray(y.numpy()).tobytes()).hexdigest()[:16]
    return f"id:{id(data)}"


def profile_data(dataset: str, budget: Any, *, input_shape: Sequence[int] | None = None, root: str | None = None,
                 download: bool = False, seed: int = 0, data: tuple[ImageData, ImageData] | None = None,
                 log: Callable[[str], None] | None = None) -> tuple[ImageData, ImageData, str | None]:
    """(train, test, adaptation) of a profile: ``probe_train_n`` training and ``test_n`` test
    images (chosen by :func:`pick`: stratified on class-sorted data), served at ``input_shape``
    when it differs (said in the returned note). Nothing is decoded here.

    ``data``: (train, test) :class:`ImageData` to use instead of loading ``dataset``."""
    if data is not None:
        tr, te = data
    else:
        tr = load_dataset(dataset, "train", root=root, download=download)
        te = load_dataset(dataset, "test", root=root, download=download)
    tr, _ = pick(tr, budget.probe_train_n, seed)
    te, _ = pick(te, budget.test_n, seed)
    note = None
    if input_shape is not None:
        sel = (tr.selection, te.selection)
        tr, note = adapt(tr, input_shape)
        te, _ = adapt(te, input_shape)
        tr.selection, te.selection = sel
        if note and log:
            log(f"[profile] {dataset} images adapted to the model's input {tuple(input_shape)}: {note}")
    return tr, te, note
