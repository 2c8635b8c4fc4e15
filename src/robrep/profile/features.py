"""Forward-only work of a profile: features computed once per (model, layer, data) under
``torch.inference_mode``, in batches sized automatically within a memory cap.

:class:`FeatureCache` keys each entry by the model's weights digest, the layer and a digest of
the images, so every measure that needs the clean features of the same images (probe training,
natural accuracy, the embedding-sensitivity baseline) reuses one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data import ImageData
from ..errors import InputError
from ..models.memory import (
    DEFAULT_MEMORY_CAP,
    activation_bytes_per_image,
    auto_batch_size,
    grad_batch_size,
)

__all__ = ["FeatureCache", "activation_bytes_per_image", "auto_batch_size", "data_digest", "model_digest",
           "DEFAULT_MEMORY_CAP"]


def model_digest(model: nn.Module) -> str:
    """Digest of a module's parameters and buffers (names, shapes, values)."""
    from ..io.chunks import module_digest

    return module_digest(model)


_PROJ: dict[tuple[int, str], torch.Tensor] = {}


def data_digest(x: torch.Tensor) -> str:
    """A fingerprint of a batch of images: SHA-256 of its shape, dtype and, per image, the sum of
    its values and their dot product with a fixed pseudo-random vector (one pass over the data,
    on its device: cheap beside a forward pass, and different images give different keys)."""
    from ..io.chunks import tensor_digest

    flat = x.detach().reshape(len(x), -1)
    key = (flat.shape[1], str(flat.device))
    if key not in _PROJ:
        g = torch.Generator().manual_seed(0)
        _PROJ[key] = torch.rand(flat.shape[1], generator=g).to(flat.device)
    f = flat.float()
    sig = torch.stack([f.sum(1), f @ _PROJ[key]], 1).double().cpu()
    return f"{tuple(x.shape)}{x.dtype}" + tensor_digest(sig)


@dataclass
class FeatureCache:
    """Features of (model, layer, images) computed once, under ``inference_mode``.

    Attributes:
        memory_cap: bytes one forward batch may use (:func:`auto_batch_size`).
        max_batch: upper limit of the batch size.
        hits, misses: lookups served from the cache / computed.
        batch_sizes: the batch size chosen per (model, layer).
    """

    memory_cap: int = DEFAULT_MEMORY_CAP
    max_batch: int = 512
    hits: int = 0
    misses: int = 0
    batch_sizes: dict[str, int] = field(default_factory=dict)
    _store: dict[tuple[str, str, str], torch.Tensor] = field(default_factory=dict, repr=False)
    _digests: dict[int, str] = field(default_factory=dict, repr=False)
    _labels: dict[tuple[str, str, str], torch.Tensor] = field(default_factory=dict, repr=False)

    def batch_size(self, model: Any, layer: str) -> int:
        from ..models import representation

        key = f"{self._model_key(model)}:{layer}"
        if key not in self.batch_sizes:
            dev = next(model.parameters()).device
            self.batch_sizes[key] = auto_batch_size(representation(model, layer), tuple(model.input_shape),
                                                    memory_cap=self.memory_cap, max_batch=self.max_batch, device=dev)
        return self.batch_sizes[key]

    def attack_batch_size(self, model: Any, layer: str, default: int = 500) -> int:
        """Batch size of the measures that back-propagate through the encoder (attacks, smoothing,
        the vulnerability's attacks through :class:`~robrep.models.memory.ChunkedGrad`):
        ``default`` when ``GRAD_FACTOR`` (3) times its forward activations fit in the memory cap
        (the saved activations and their gradients), else the largest power of two that does
        (:func:`~robrep.models.memory.grad_batch_size`)."""
        from ..models import representation

        key = f"{self._model_key(model)}:{layer}:attack"
        if key not in self.batch_sizes:
            dev = next(model.parameters()).device
            self.batch_sizes[key] = grad_batch_size(representation(model, layer), tuple(model.input_shape),
                                                    memory_cap=self.memory_cap, max_batch=default, device=dev)
        return self.batch_sizes[key]

    def _model_key(self, model: nn.Module) -> str:
        k = id(model)
        if k not in self._digests:
            self._digests[k] = model_digest(model)
        return self._digests[k]

    def features(self, model: Any, layer: str, x: torch.Tensor) -> torch.Tensor:
        """(N, D) float32 CPU features of images ``x`` (N, C, H, W) in [0,1] at ``layer``."""
        from ..models import representation

        key = (self._model_key(model), layer, data_digest(x))
        if key in self._store:
            self.hits += 1
            return self._store[key]
        self.misses += 1
        model.eval()
        rep = representation(model, layer)
        dev = next(model.parameters()).device
        bs = self.batch_size(model, layer)
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), bs):
                out.append(rep(x[i : i + bs].to(dev)).float().cpu())
        f = torch.cat(out).clone()  # an ordinary tensor (usable by autograd outside inference mode)
        self._store[key] = f
        return f

    def data_features(self, model: Any, layer: str, data: ImageData, *, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of ``data``, streamed: its batches go through the encoder one at a
        time (a streamed set is decoded batch by batch, never held whole), and only the (N, D)
        features are kept. ``precision="bf16"`` runs the forward passes on a bf16 copy of the
        encoder (:class:`robrep.attacks.precision.Bf16Model`; features returned in float32),
        cached apart from the float32 ones."""
        from ..models import representation
        from .data import data_key

        if precision not in ("fp32", "bf16"):
            raise InputError(f"feature precision must be fp32 or bf16 (resolve auto first), got {precision!r}")
        key = (self._model_key(model), layer if precision == "fp32" else f"{layer}@{precision}", data_key(data))
        if key in self._store:
            self.hits += 1
            return self._store[key], self._labels[key]
        self.misses += 1
        model.eval()
        rep: nn.Module = representation(model, layer)
        if precision == "bf16":
            from ..attacks.precision import Bf16Model

            rep = Bf16Model(rep).eval()
        dev = next(model.parameters()).device
        bs = self.batch_size(model, layer)
        out: torch.Tensor | None = None
        ys = []
        i = 0
        with torch.inference_mode():
            for xb, yb in data.batches(bs, device=dev):
                f = rep(xb).float().cpu()
                if out is None:
                    out = torch.empty((len(data), f.shape[1]), dtype=torch.float32)
                out[i : i + len(f)] = f
                ys.append(yb.cpu())
                i += len(f)
        assert out is not None
        feats, labels = out.clone(), torch.cat(ys).clone()  # ordinary tensors (usable by autograd outside inference mode)
        self._store[key], self._labels[key] = feats, labels
        return feats, labels
