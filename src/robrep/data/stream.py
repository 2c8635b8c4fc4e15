"""Streaming image data: images decoded on demand, batches served by a ``DataLoader``.

A :class:`StreamImageData` holds only its labels and a *source* (a list of files, an index of
tar members, a Hugging Face ``datasets`` folder); each image is decoded with PIL when a batch
needs it, resized and centre-cropped to the requested size, kept as uint8, and turned into
float in [0,1] at the last moment (on the target device). Memory is a few batches, whatever
the size of the data set. It has the same interface as the in-memory
:class:`~robrep.data.TensorImageData`: ``batches``, ``len``, ``info``, ``head``, ``subset``,
``fraction``, ``labels``; ``tensors()`` works for small data only.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import DataNotFoundError, InputError, RobrepError
from .core import DatasetInfo, ImageData, TensorImageData, fraction_indices

__all__ = [
    "ImageSource",
    "ImageTransform",
    "StreamImageData",
    "materialize_limit_bytes",
    "resolve_workers",
]

#: ``tensors()`` refuses data larger than this as float32 (bytes); ``$ROBREP_MAX_TENSORS_GB`` overrides.
DEFAULT_MAX_TENSORS_GB = 2.0
#: ``tensors()`` warns above this (bytes as float32).
WARN_TENSORS_BYTES = 512 * 2**20


class ImageSource(Protocol):
    """Where a stream's images come from. Must be picklable (DataLoader workers get a copy).

    ``read(i)`` returns the ``i``-th image as a PIL image (any mode); ``describe(i)`` names it
    in error messages; ``fingerprint()`` identifies the stored data (JSON-able).
    """

    def __len__(self) -> int: ...

    def read(self, i: int) -> Any: ...

    def describe(self, i: int) -> str: ...

    def fingerprint(self) -> Any: ...


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> uint8 tensor (C, crop, crop): convert ``mode``, resize the shorter side to
    ``resize`` (bilinear, antialiased: torchvision's ``Resize``), centre-crop ``crop``.

    With ``resize == crop`` this is exactly what the in-memory ``imagefolder:`` path did
    (``Resize(s), CenterCrop(s), ToTensor()``) before the division by 255.
    """

    resize: int
    crop: int
    mode: str = "RGB"

    def __post_init__(self) -> None:
        if self.crop <= 0 or self.resize < self.crop:
            raise InputError(f"image size: need 0 < crop <= resize, got resize {self.resize}, crop {self.crop}")
        if self.mode not in ("RGB", "L"):
            raise InputError(f"image mode must be RGB or L, got {self.mode!r}")

    @property
    def channels(self) -> int:
        return 3 if self.mode == "RGB" else 1

    def __call__(self, img: Any) -> torch.Tensor:
        from torchvision.transforms import functional as F

        if img.mode != self.mode:
            img = img.convert(self.mode)
        img = F.center_crop(F.resize(img, self.resize), self.crop)
        return F.pil_to_tensor(img)

    def to_dict(self) -> dict[str, Any]:
        return {"resize": self.resize, "crop": self.crop, "mode": self.mode, "interpolation": "bilinear", "antialias": True}


def parse_size(spec: str, default: tuple[int, int], what: str) -> tuple[str, tuple[int, int]]:
    """Split ``<location>[@<crop>|@<resize>/<crop>]`` into (location, (resize, crop))."""
    if "@" not in spec:
        return spec, default
    loc, s = spec.rsplit("@", 1)
    parts = s.split("/")
    if not all(p.isdigit() and int(p) > 0 for p in parts) or len(parts) > 2:
        raise InputError(f"{what} size must be <size> or <resize>/<crop> (positive integers), got {s!r} "
                         f"(e.g. {what}:<path>@224 or {what}:<path>@256/224)")
    resize, crop = (int(parts[0]), int(parts[-1]))
    if resize < crop:
        raise InputError(f"{what} size {s!r}: the resize ({resize}) must be >= the crop ({crop})")
    return loc, (resize, crop)


def resolve_workers(n_examples: int, requested: int | None = None) -> int:
    """DataLoader workers: ``requested``, else ``$ROBREP_DATA_WORKERS``, else 0 for small data
    (< 2048 images) and ``min(8, cpus // 2)`` otherwise."""
    if requested is not None:
        if requested < 0:
            raise InputError(f"num_workers must be >= 0, got {requested}")
        return int(requested)
    env = os.environ.get("ROBREP_DATA_WORKERS", "").strip()
    if env:
        if not env.isdigit():
            raise InputError(f"ROBREP_DATA_WORKERS must be a non-negative integer, got {env!r}")
        return int(env)
    if n_examples < 2048:
        return 0
    return max(0, min(8, (os.cpu_count() or 1) // 2))


_TRIM: Any = None


def release_free_memory() -> None:
    """Give freed heap pages back to the system (glibc ``malloc_trim(0)``; a no-op elsewhere).

    Decoding a batch, stacking it and the model's temporaries allocate and free buffers of
    10-100 MB each step; with glibc's default settings the freed ones stay resident and the
    heap's footprint creeps up with every batch (measured: peak RSS 1.8 GB instead of 0.9 GB
    after 5,000 images at 224 px). Trimming once per batch keeps the footprint at a few batches.
    ``ROBREP_MALLOC_TRIM=0`` turns it off.
    """
    global _TRIM
    if _TRIM is None:
        _TRIM = False
        if os.environ.get("ROBREP_MALLOC_TRIM", "1") != "0" and sys.platform.startswith("linux"):
            try:
                import ctypes

                _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                _TRIM = False
    if _TRIM:
        _TRIM(0)


def materialize_limit_bytes() -> int:
    env = os.environ.get("ROBREP_MAX_TENSORS_GB", "").strip()
    try:
        gb = float(env) if env else DEFAULT_MAX_TENSORS_GB
    except ValueError as e:
        raise InputError(f"ROBREP_MAX_TENSORS_GB must be a number of GB, got {env!r}") from e
    return int(gb * 2**30)


class _Decoded(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Position j -> (uint8 image, label) of the stream's j-th example."""

    def __init__(self, source: ImageSource, indices: np.ndarray, labels: torch.Tensor, transform: ImageTransform) -> None:
        self.source, self.indices, self.labels, self.transform = source, indices, labels, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.indices[j])
        try:
            img = self.source.read(i)
            x = self.transform(img)
        except (OSError, ValueError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise DataNotFoundError(f"cannot decode image {self.source.describe(i)}: {e}; remove or replace the file") from e
        return x, self.labels[j]


def _unwrap_worker_error(e: RobrepError) -> RobrepError:
    """A DataLoader worker's error arrives as "Caught X in DataLoader worker ... Original Traceback
    ...": give back the original message (the traceback's last line, without the class name)."""
    text = str(e)
    if "Original Traceback" not in text:
        return e
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    head, sep, msg = last.partition(": ")
    return type(e)(msg if sep and head.split(".")[-1] == type(e).__name__ else last)


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.stack(ys)


class StreamImageData(ImageData):
    """A dataset whose images are decoded on demand (uint8 until the batch is formed).

    Args:
        source: an :class:`ImageSource` (picklable).
        labels: (len(source),) integer labels, or (len(indices),) when ``indices`` is given.
        info: the dataset's :class:`DatasetInfo` (``input_shape`` = (C, crop, crop)).
        split: "train" or "test".
        transform: the :class:`ImageTransform` every image goes through.
        indices: which source images, in which order (default: all, in source order).
        num_workers: DataLoader workers (None: :func:`resolve_workers`).
    """

    selection: dict[str, Any] | None = None

    def __init__(
        self,
        source: ImageSource,
        labels: torch.Tensor,
        info: DatasetInfo,
        split: str,
        transform: ImageTransform,
        *,
        indices: np.ndarray | None = None,
        num_workers: int | None = None,
    ) -> None:
        self.source, self.info, self.split, self.transform = source, info, split, transform
        self.indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        self.labels = torch.as_tensor(labels).long()
        self.num_workers = num_workers
        if len(self.indices) == 0:
            raise InputError(f"dataset {info.name!r} ({split}) is empty: give at least one image")
        if self.labels.shape != (len(self.indices),):
            raise InputError(f"{len(self.indices)} images but labels of shape {tuple(self.labels.shape)}: give one label per image")
        self._float: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"StreamImageData({self.info.name!r}, split={self.split!r}, n={len(self)}, shape={self.info.input_shape})"

    # -- iteration ---------------------------------------------------------------------------
    def loader(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
        """The ``DataLoader`` behind :meth:`batches`: uint8 (B, C, H, W) images and labels."""
        if batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if drop_last:
            order = order[: n - n % batch_size]
        w = resolve_workers(n, self.num_workers)
        kw: dict[str, Any] = {"prefetch_factor": 2, "persistent_workers": False} if w > 0 else {}
        return torch.utils.data.DataLoader(
            _Decoded(self.source, self.indices, self.labels, self.transform), batch_size=batch_size,
            sampler=order.tolist(), num_workers=w, pin_memory=pin_memory, collate_fn=_collate, **kw,
        )

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Float batches in [0,1] (the same order and values as the in-memory path: the
        permutation is ``torch.randperm(len, generator=generator)``); uint8 travels to ``device``
        (pinned when it is a GPU) and becomes float there."""
        dev = torch.device(device) if device is not None else None
        pin = dev is not None and dev.type == "cuda" and torch.cuda.is_available()
        it = iter(self.loader(batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last, pin_memory=pin))
        while True:
            try:
                xb, yb = next(it)
            except StopIteration:
                return
            except RobrepError as e:  # from a worker: keep the original one-line message
                raise _unwrap_worker_error(e) from None
            release_free_memory()
            if dev is not None:
                xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            yield xb.float().div_(255.0), yb

    # -- subsets -----------------------------------------------------------------------------
    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> StreamImageData:
        idx = np.asarray(torch.as_tensor(np.asarray(indices), dtype=torch.long))
        if idx.ndim != 1:
            raise InputError(f"subset indices must be 1-D, got shape {idx.shape}")
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise InputError(f"subset indices must lie in [0, {len(self) - 1}], got [{idx.min()}, {idx.max()}]")
        return StreamImageData(self.source, self.labels[torch.from_numpy(idx)], self.info, self.split, self.transform,
                               indices=self.indices[idx], num_workers=self.num_workers)

    def head(self, n: int) -> StreamImageData:
        """The first ``n`` examples."""
        return self.subset(torch.arange(min(n, len(self))))

    def fraction(self, frac: float, seed: int = 0, balanced: bool = True) -> StreamImageData:
        """A seeded (class-balanced) subset holding ``frac`` of the examples (as ``TensorImageData.fraction``)."""
        if frac == 1:
            return self
        return self.subset(fraction_indices(self.labels, frac, seed, balanced))

    def with_workers(self, num_workers: int | None) -> StreamImageData:
        """The same data served with ``num_workers`` DataLoader workers."""
        out = self.subset(torch.arange(len(self)))
        out.num_workers = num_workers
        return out

    # -- materialization (small data only) ---------------------------------------------------
    def float_bytes(self) -> int:
        c, h, w = self.info.input_shape
        return len(self) * c * h * w * 4

    def _check_size(self, what: str) -> None:
        need, limit = self.float_bytes(), materialize_limit_bytes()
        if need > limit:
            raise InputError(
                f"{what} of {self.info.name} ({len(self)} images of {self.info.input_shape}) would need "
                f"{need / 2**30:.1f} GB in memory (limit {limit / 2**30:.1f} GB): iterate with .batches(...), take a "
                f"subset first (--n / robrep.data.take(data, n)), or raise ROBREP_MAX_TENSORS_GB"
            )
        if need > WARN_TENSORS_BYTES:
            warnings.warn(f"{what} decodes all {len(self)} images of {self.info.name} into {need / 2**20:.0f} MB; "
                          f"iterate with .batches(...) to stream them", ResourceWarning, stacklevel=3)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as float in [0,1] and all labels (small data only: raises above
        ``ROBREP_MAX_TENSORS_GB``, default 2 GB, and warns above 512 MB)."""
        if self._float is None:
            self._check_size("tensors()")
            self._float = torch.cat([x for x, _ in self.batches(256)])
        return self._float, self.labels

    def to_memory(self) -> TensorImageData:
        """The same examples as an in-memory :class:`TensorImageData` (uint8; small data only)."""
        self._check_size("to_memory()")
        loader = self.loader(256)
        xs = torch.cat([x for x, _ in loader])
        out = TensorImageData(xs, self.labels.clone(), self.info, self.split)
        return out

    def fingerprint(self) -> dict[str, Any]:
        """Identifies the examples (source, chosen indices, labels, transform) for resumable runs."""
        h = hashlib.sha256(self.indices.tobytes())
        h.update(self.labels.numpy().tobytes())
        return {"name": self.info.name, "split": self.split, "len": len(self), "source": self.source.fingerprint(),
                "indices": h.hexdigest(), "transform": self.transform.to_dict()}


def image_stats(data: StreamImageData, max_images: int = 256, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Per-channel mean and std of ``data`` from a seeded class-stratified sample of at most
    ``max_images`` images (all of them when there are fewer). Returns (mean, std, images used).

    float64 sums of the same [0,1] values the batches give; std is the population std
    over all pixels of the sample (clamped below at 1e-3, as the in-memory path did)."""
    from .subset import stratified_subset

    sample = data if len(data) <= max_images else data.subset(stratified_subset(data.labels, max_images, seed))
    c = data.info.input_shape[0]
    s1, s2, cnt = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for xb, _ in sample.with_workers(0 if len(sample) < 64 else None).batches(64):
        xd = xb.double()
        s1 += xd.sum((0, 2, 3))
        s2 += (xd * xd).sum((0, 2, 3))
        cnt += xb.shape[0] * xb.shape[2] * xb.shape[3]
    mean = s1 / cnt
    var = (s2 / cnt - mean * mean).clamp_min(0) * cnt / max(cnt - 1, 1)  # unbiased, as torch.std
    return tuple(mean.tolist()), tuple(var.sqrt().clamp_min(1e-3).tolist()), len(sample)


def open_image(data: bytes | str | os.PathLike[str], name: str) -> Any:
    """Open an image with PIL (fully loaded, file closed); a bad file raises DataNotFoundError naming it."""
    from PIL import Image

    try:
        f = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")
        with f, Image.open(f) as img:
            img.load()
            return img.copy() if img.mode in ("RGB", "L") else img.convert("RGB")
    except FileNotFoundError as e:
        raise DataNotFoundError(f"image {name} is missing: {e}; restore it or rebuild the dataset index") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise DataNotFoundError(f"cannot decode image {name}: {e}; remove or replace the file") from e
