"""Saliency maps: input gradient (Simonyan et al. 2014) and SmoothGrad (Smilkov et al. 2017).

Engstrom et al. (2019) and Tsipras et al. (2019) observe that the input gradients of robust
models are perceptually aligned, those of standard models look like noise; these functions make
the comparison on any model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._registry import Registry
from ..errors import InputError
from ..models.base import RobrepModel, check_images

__all__ = ["SALIENCY", "SaliencyResult", "input_gradient", "smoothgrad", "saliency", "saliency_image"]

SaliencyFn = Callable[..., torch.Tensor]
SALIENCY: Registry[SaliencyFn] = Registry("saliency method")


def _target(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        with torch.no_grad():
            return model(x).argmax(1)
    if target.shape != (x.shape[0],) or target.dtype != torch.long:
        raise InputError(f"target must be a long tensor of shape ({x.shape[0]},), got {tuple(target.shape)} {target.dtype}")
    return target.to(x.device)


def _score_grad(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), x)
    return g


@SALIENCY.register("gradient", help="gradient of the class logit w.r.t. the input (Simonyan et al. 2014)")
def input_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """``d logit_target / d x`` (Simonyan et al. 2014).

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, K) logits.
        x: (B, C, H, W) images in [0, 1].
        target: (B,) classes (default: the predicted ones).

    Returns:
        (B, C, H, W) gradients.
    """
    check_images(x, model if isinstance(model, RobrepModel) else None)
    return _score_grad(model, x, _target(model, x, target))


@SALIENCY.register("smoothgrad", help="input gradient averaged over Gaussian-noised copies (Smilkov et al. 2017)")
def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    samples: int = 50,
    noise_level: float = 0.15,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): ``mean_s grad(x + n_s)``, ``n_s ~ N(0, sigma^2)``
    with ``sigma = noise_level * (max(x) - min(x))`` per image (the paper recommends 10-20%).
    Noisy copies are not clipped to [0,1] (as in the paper). Targets are fixed at the clean
    prediction.

    Args:
        model: maps images to logits.
        x: (B, C, H, W) images in [0, 1].
        target: (B,) classes (default: predicted on the clean ``x``).
        samples: noisy copies per image.
        noise_level: sigma relative to each image's value range.
        generator: random source (reproducibility).

    Returns:
        (B, C, H, W) averaged gradients.
    """
    check_images(x, model if isinstance(model, RobrepModel) else None)
    if samples < 1 or noise_level < 0:
        raise InputError(f"samples must be >= 1 and noise_level >= 0, got {samples}, {noise_level}")
    t = _target(model, x, target)
    b = x.shape[0]
    rng = (x.flatten(1).max(1).values - x.flatten(1).min(1).values).view(b, 1, 1, 1)
    sigma = noise_level * rng
    acc = torch.zeros_like(x)
    gdev = generator.device if generator is not None else x.device
    for _ in range(samples):
        noise = torch.randn(tuple(x.shape), generator=generator, device=gdev, dtype=x.dtype).to(x.device)
        acc += _score_grad(model, x + sigma * noise, t)
    return acc / samples


@dataclass(frozen=True)
class SaliencyResult:
    """A saliency map.

    Attributes:
        method: registry name (``gradient``, ``smoothgrad``).
        target: (B,) explained classes.
        grad: (B, C, H, W) raw attribution.
        image: (B, 1, H, W) display map in [0, 1] (:func:`saliency_image`).
    """

    method: str
    target: torch.Tensor
    grad: torch.Tensor
    image: torch.Tensor


def saliency_image(grad: torch.Tensor) -> torch.Tensor:
    """``|g|`` maximized over channels, divided by its per-image maximum: (B, 1, H, W) in [0, 1]."""
    a = grad.detach().abs().amax(1, keepdim=True)
    return a / a.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *, method: str = "gradient",
             **kwargs: object) -> SaliencyResult:
    """Run a registered saliency method (``SALIENCY``) and build the display map.

    Args:
        model: maps images to logits; x: (B, C, H, W) in [0, 1]; target: (B,) or None.
        method: ``gradient`` or ``smoothgrad``; kwargs go to the method.
    """
    fn = SALIENCY.get(method)
    t = _target(model, x, target)
    g = fn(model, x, t, **kwargs)
    return SaliencyResult(method=method, target=t, grad=g, image=saliency_image(g))
