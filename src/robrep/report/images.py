"""Image grids as PNG (Pillow only): rows of images with optional labels."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..io.atomic import atomic_path

__all__ = ["image_grid", "save_image_grid", "amplify"]


def amplify(delta: torch.Tensor) -> torch.Tensor:
    """Map a perturbation to [0,1] for display: 0.5 + delta / (2 max|delta|) per image."""
    m = delta.flatten(1).abs().max(1).values.clamp_min(1e-12).view(-1, *([1] * (delta.ndim - 1)))
    return (0.5 + delta / (2 * m)).clamp(0, 1)


def image_grid(rows: Sequence[torch.Tensor], pad: int = 2, scale: int = 2) -> np.ndarray:
    """Stack rows of (N, C, H, W) images in [0,1] into one uint8 RGB array."""
    rows = [r.detach().float().cpu().clamp(0, 1) for r in rows]
    n = max(len(r) for r in rows)
    c, h, w = rows[0].shape[1:]
    H, W = len(rows) * (h + pad) + pad, n * (w + pad) + pad
    canvas = np.ones((H, W, 3), dtype=np.float32)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            a = im.permute(1, 2, 0).numpy()
            if a.shape[2] == 1:
                a = np.repeat(a, 3, axis=2)
            y0, x0 = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y0 : y0 + h, x0 : x0 + w] = a[..., :3]
    out = (canvas * 255).round().astype(np.uint8)
    if scale > 1:
        out = out.repeat(scale, 0).repeat(scale, 1)
    return out


def save_image_grid(rows: Sequence[torch.Tensor], path: str | os.PathLike[str], labels: Sequence[str] | None = None, scale: int = 3) -> Path:
    """Write rows of images as one PNG (atomically); ``labels`` are drawn left of each row."""
    from PIL import Image, ImageDraw

    arr = image_grid(rows, scale=scale)
    img = Image.fromarray(arr)
    if labels:
        margin = 8 + 7 * max(len(s) for s in labels)
        canvas = Image.new("RGB", (img.width + margin, img.height), "white")
        canvas.paste(img, (margin, 0))
        d = ImageDraw.Draw(canvas)
        row_h = img.height / len(rows)
        for i, s in enumerate(labels):
            d.text((4, int(i * row_h + row_h / 2 - 5)), s, fill="black")
        img = canvas
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
