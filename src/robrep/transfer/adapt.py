"""Target images adapted to a source model's input: channels, size, resolution (transfer, Salman et al. 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import DatasetInfo, ImageData, TensorImageData
from ..errors import InputError

__all__ = ["LUMA", "adapt_data", "adapt_images"]

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, for 3 -> 1 channel conversion


def adapt_images(x: torch.Tensor, input_shape: tuple[int, int, int] | list[int], resolution: int | None = None) -> torch.Tensor:
    """Convert target images to the source model's input shape.

    Channels: 1 -> C by replication; 3 -> 1 by luminance ``0.299 R + 0.587 G + 0.114 B``;
    any other mismatch raises. Size: ``resolution`` (if given) first resamples to r x r, then the
    result is resampled to the model's (H, W). Downsampling uses area averaging (for an integer
    factor k it is exactly k x k average pooling, i.e. anti-aliased); upsampling is bilinear
    (``align_corners=False``). Output is clamped to [0, 1].

    Args:
        x: (N, C, H, W) images in [0, 1] (float) or uint8.
        input_shape: the model's (C', H', W').
        resolution: the effective resolution of the granularity experiment, or None.

    Returns:
        (N, C', H', W') float images in [0, 1]. Unchanged (same tensor) when no change is needed.
    """
    if x.ndim != 4:
        raise InputError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")
    c_out, h_out, w_out = (int(v) for v in input_shape)
    if x.dtype == torch.uint8:
        x = x.float().div(255.0)
    c = x.shape[1]
    if c != c_out:
        if c == 1:
            x = x.expand(-1, c_out, -1, -1).contiguous()
        elif c == 3 and c_out == 1:
            w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        else:
            raise InputError(
                f"cannot map {c}-channel target images to a {c_out}-channel source model; "
                "convert the dataset (only 1->C replication and 3->1 luminance are built in)"
            )

    def resize(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if (t.shape[2], t.shape[3]) == (h, w):
            return t
        down = h <= t.shape[2] and w <= t.shape[3]
        if down:
            return F.interpolate(t, size=(h, w), mode="area")
        return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)

    if resolution is not None:
        x = resize(x, int(resolution), int(resolution))
    x = resize(x, h_out, w_out)
    return x.clamp_(0.0, 1.0) if x.is_floating_point() else x


def adapt_data(data: ImageData, input_shape: tuple[int, int, int], resolution: int | None = None, batch_size: int = 2000) -> ImageData:
    """:func:`adapt_images` applied to a whole dataset (returns ``data`` itself when nothing changes)."""
    info = data.info
    shape = tuple(int(v) for v in input_shape)
    if tuple(info.input_shape) == shape and resolution is None:
        return data
    if not isinstance(data, TensorImageData):
        raise InputError("adapt_data needs an in-memory dataset (robrep.data.TensorImageData)")
    x, y = data.tensors()
    parts = [adapt_images(x[i : i + batch_size], shape, resolution) for i in range(0, len(x), batch_size)]
    new_info = DatasetInfo(info.name + (f"@{resolution}" if resolution is not None else ""), info.num_classes, shape,  # type: ignore[arg-type]
                           _per_channel(info.mean, shape[0]), _per_channel(info.std, shape[0]), info.classes, info.citation)
    return TensorImageData(torch.cat(parts), y, new_info, data.split)


def _per_channel(v: tuple[float, ...], c: int) -> tuple[float, ...]:
    """Dataset statistics for ``c`` channels (informative only: models normalize with their own)."""
    v = tuple(v)
    if len(v) == c:
        return v
    return v * c if len(v) == 1 else (sum(v) / len(v),) * c
