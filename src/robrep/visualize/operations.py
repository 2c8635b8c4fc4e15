"""Robust representations made visible (Engstrom et al. 2019, arXiv 1906.00945, docs/methods/visualization.md):
inversion, brittleness and interpolation (matching whole representations); the shared losses
and starts. Single components (feature visualization, feature addition, misclassification
insight) are in :mod:`robrep.visualize.features`.

Every operation is input-space optimization with :func:`~robrep.visualize.optimize.optimize_inputs`
(normalized l2 steps, [0,1] box, l2 ball of radius ``eps`` around the start). The library
defaults are the notebooks' settings (docs/methods/visualization.md, RestrictedImageNet ResNet-50); scale
``steps`` and ``step_size`` to small images and CPUs.

Each function takes a :class:`~robrep.models.RobrepModel` (any robrep / torchvision / timm net,
any ``layer``) or any module mapping [0,1] images to features, and returns a frozen dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attacks import representation_attack
from ..errors import InputError
from ..models.base import RobrepModel, check_images
from ..threats import L2Ball
from .optimize import as_representation, noise_seed, optimize_inputs

__all__ = [
    "InversionResult",
    "invert",
    "invert_representation",
    "inversion_loss",
    "BrittlenessResult",
    "brittleness",
    "feature_addition_loss",
    "InterpolationResult",
    "interpolate",
    "model_device",
    "start_images",
]

Start = str | torch.Tensor


def inversion_loss(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative representation error ``||z - r||_2 / ||r||_2`` per example (docs/methods/visualization.md).

    Args:
        z: (B, D) representations.
        target: (B, D) target representations.

    Returns:
        (B,) non-negative errors (``||r||`` is floored at 1e-12).
    """
    dt = torch.promote_types(z.dtype, torch.float32)
    t = target.flatten(1).to(dt)
    return (z.flatten(1).to(dt) - t).norm(dim=1) / t.norm(dim=1).clamp_min(1e-12)


def feature_addition_loss(z_i: torch.Tensor, target: float) -> torch.Tensor:
    """``min(z_i - target, 0)`` (to be maximised): zero, with zero gradient, once the activation
    reaches ``target`` (docs/methods/visualization.md, feature addition; the notebook uses target 1).

    Args:
        z_i: (B,) activations of one component.
        target: activation at which the push stops.
    """
    return torch.where(z_i < target, z_i - target, torch.zeros_like(z_i))


def start_images(start: Start, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The start of an optimization shaped like ``like``: ``"noise"`` (the paper's seed),
    ``"gray"`` (0.5 everywhere) or given images (checked: same shape, in [0,1])."""
    if isinstance(start, torch.Tensor):
        if start.shape != like.shape:
            raise InputError(f"the start images must have shape {tuple(like.shape)}, got {tuple(start.shape)}")
        check_images(start, what="start images")
        return start.to(like.device, like.dtype)
    if start == "noise":
        return noise_seed(like.shape, generator=generator, device=like.device).to(like.dtype)
    if start == "gray":
        return torch.full_like(like, 0.5)
    raise InputError(f"start must be 'noise', 'gray' or a tensor of images, got {start!r}")


# ------------------------------------------------------------------------------- inversion


@dataclass(frozen=True)
class InversionResult:
    """Representation inversion (docs/methods/visualization.md).

    Attributes:
        x: (B, C, H, W) inverted images in [0, 1].
        start: (B, C, H, W) starts (noise seed or other images).
        rep_error: (B,) relative representation error ``||R(x) - r|| / ||r||`` at ``x``.
        history: (steps + 1,) batch-mean relative error along the optimization.
    """

    x: torch.Tensor
    start: torch.Tensor
    rep_error: torch.Tensor
    history: torch.Tensor


def invert_representation(
    rep: nn.Module,
    target: torch.Tensor,
    start: torch.Tensor,
    *,
    steps: int = 10_000,
    step_size: float = 1.0,
    eps: float = 1000.0,
    use_best: bool = False,
) -> InversionResult:
    """Find ``x`` with ``R(x)`` close to the representations ``target`` (targeted l2 PGD).

    Args:
        rep: maps (B, C, H, W) images in [0,1] to (B, D) features.
        target: (B, D) target representations.
        start: (B, C, H, W) starts.
        steps, step_size, eps, use_best: optimizer settings (paper: 10000, 1, 1000, False).
    """
    tgt = target.detach().flatten(1)
    if tgt.shape[0] != start.shape[0]:
        raise InputError(f"{tgt.shape[0]} target representations but {start.shape[0]} starts")
    res = optimize_inputs(lambda x: inversion_loss(rep(x), tgt), start, steps=steps, step_size=step_size,
                          eps=eps, targeted=True, use_best=use_best)
    return InversionResult(x=res.x, start=res.start, rep_error=res.loss, history=res.history)


def invert(
    model: nn.Module,
    x_target: torch.Tensor,
    *,
    layer: str = "penultimate",
    start: Start = "noise",
    steps: int = 10_000,
    step_size: float = 1.0,
    eps: float = 1000.0,
    use_best: bool = False,
    fake_relu: bool = False,
    generator: torch.Generator | None = None,
) -> InversionResult:
    """Representation inversion: ``argmin_x ||R(x) - R(x_t)||_2 / ||R(x_t)||_2`` over [0,1]
    images (Engstrom et al. 2019, Sec. "Inverting representations"; docs/methods/visualization.md).

    Args:
        model: RobrepModel (read at ``layer``) or any module mapping images to features.
        x_target: (B, C, H, W) images in [0, 1] whose representations are inverted.
        layer: representation layer (``penultimate``, ``logits`` or a module name).
        start: ``"noise"`` (paper: ``0.5 + N(0, 0.05^2)``, not clipped), ``"gray"`` (0.5) or
            (B, C, H, W) other images (the paper also seeds from other images).
        steps: iterations (paper: 10,000).
        step_size: l2 step length ``eta`` (paper: 1 on ImageNet-size images).
        eps: l2 radius around the start (paper: 1000, inactive).
        use_best: keep the best iterate (paper: False, the final iterate).
        fake_relu: straight-through last ReLU (:class:`~robrep.visualize.FakeReLU`).
        generator: random source of the noise start.

    Returns:
        :class:`InversionResult`.
    """
    check_images(x_target, model if isinstance(model, RobrepModel) else None, what="x_target")
    rep = as_representation(model, layer, fake_relu)
    with torch.no_grad():
        tgt = rep(x_target)
    x0 = start_images(start, x_target, generator)
    return invert_representation(rep, tgt, x0, steps=steps, step_size=step_size, eps=eps, use_best=use_best)


# ------------------------------------------------------------------------------ brittleness


@dataclass(frozen=True)
class BrittlenessResult:
    """Two visually different images with (nearly) the same representation (Engstrom et al. 2019,
    "Standard representations are brittle").

    Attributes:
        x_source: (B, C, H, W) the image that is perturbed.
        x_target: (B, C, H, W) the image whose representation is matched.
        x_adv: (B, C, H, W) ``x_source`` moved inside an l2 ball of radius ``eps``.
        rep_error_before: (B,) ``||R(x_source) - R(x_target)|| / ||R(x_target)||``.
        rep_error_after: (B,) ``||R(x_adv) - R(x_target)|| / ||R(x_target)||``.
        dist_source: (B,) ``||x_adv - x_source||_2`` (<= eps).
        dist_target: (B,) ``||x_adv - x_target||_2`` (large: the images stay different).
        eps: the l2 radius.
    """

    x_source: torch.Tensor
    x_target: torch.Tensor
    x_adv: torch.Tensor
    rep_error_before: torch.Tensor
    rep_error_after: torch.Tensor
    dist_source: torch.Tensor
    dist_target: torch.Tensor
    eps: float


def brittleness(
    model: RobrepModel,
    x_source: torch.Tensor,
    x_target: torch.Tensor,
    *,
    eps: float = 2.0,
    layer: str = "penultimate",
    steps: int = 200,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> BrittlenessResult:
    """Move ``x_source`` by at most ``eps`` (l2) to match ``R(x_target)``
    (:func:`robrep.attacks.representation_attack`). For a standard model the relative error
    drops close to 0 while the image stays ``x_source``; for a robust one it cannot.

    Args:
        model: the classifier whose representation is read at ``layer``.
        x_source, x_target: (B, C, H, W) images in [0, 1].
        eps: l2 radius in pixel units.
        steps, step_size: PGD settings (step default ``2.5 eps / steps``).
        generator: random source of PGD's random start.
    """
    check_images(x_source, model, what="x_source")
    check_images(x_target, model, what="x_target")
    if x_source.shape != x_target.shape:
        raise InputError(f"x_source {tuple(x_source.shape)} and x_target {tuple(x_target.shape)} must have the same shape")
    res = representation_attack(model, x_source, L2Ball(float(eps)), x_target=x_target, layer=layer, steps=steps,
                                step_size=step_size, generator=generator)
    rep = as_representation(model, layer)
    with torch.no_grad():
        zt = rep(x_target)
        before, after = inversion_loss(rep(x_source), zt), inversion_loss(rep(res.x_adv), zt)
    return BrittlenessResult(
        x_source=x_source.detach(), x_target=x_target.detach(), x_adv=res.x_adv, rep_error_before=before,
        rep_error_after=after, dist_source=(res.x_adv - x_source).flatten(1).norm(dim=1),
        dist_target=(res.x_adv - x_target).flatten(1).norm(dim=1), eps=float(eps))


# ------------------------------------------------------------------------------ interpolation


@dataclass(frozen=True)
class InterpolationResult:
    """Inversions of interpolated representations (docs/methods/visualization.md).

    Attributes:
        lambdas: (n,) the weights ``lambda_j = j / (n - 1)``.
        x: (B, n, C, H, W) inversions of ``(1 - lambda) R(x1) + lambda R(x2)``.
        pixel: (B, n, C, H, W) the pixel interpolations ``(1 - lambda) x1 + lambda x2`` (the starts).
        rep_error: (B, n) relative representation error of each inversion.
    """

    lambdas: torch.Tensor
    x: torch.Tensor
    pixel: torch.Tensor
    rep_error: torch.Tensor


def interpolate(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    *,
    n: int = 10,
    layer: str = "penultimate",
    steps: int = 10_000,
    step_size: float = 1.0,
    eps: float = 1000.0,
    fake_relu: bool = False,
) -> InterpolationResult:
    """Invert ``r_lambda = (1 - lambda) R(x1) + lambda R(x2)``, ``lambda = j / (n - 1)``, each
    from the pixel interpolation (Engstrom et al. 2019, "Input interpolation"; docs/methods/visualization.md).

    Args:
        model: RobrepModel or feature module.
        x1, x2: (B, C, H, W) images in [0, 1].
        n: number of interpolation points (paper: 10).
        steps, step_size, eps: optimizer settings (paper: 10000; step 0.1 CIFAR, 1 ImageNet; 1000).
    """
    m = model if isinstance(model, RobrepModel) else None
    check_images(x1, m, what="x1")
    check_images(x2, m, what="x2")
    if x1.shape != x2.shape:
        raise InputError(f"x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} must have the same shape")
    if n < 2:
        raise InputError(f"n must be >= 2 (both ends included), got {n}")
    rep = as_representation(model, layer, fake_relu)
    lam = torch.linspace(0, 1, n, device=x1.device, dtype=x1.dtype)
    with torch.no_grad():
        z1, z2 = rep(x1), rep(x2)
    b = x1.shape[0]
    lz = lam.view(1, n, 1).to(z1.dtype)
    tgt = ((1 - lz) * z1[:, None] + lz * z2[:, None]).reshape(b * n, -1)
    lx = lam.view(1, n, 1, 1, 1)
    pix = (1 - lx) * x1[:, None] + lx * x2[:, None]
    res = invert_representation(rep, tgt, pix.reshape(b * n, *x1.shape[1:]), steps=steps, step_size=step_size, eps=eps)
    return InterpolationResult(lambdas=lam.cpu(), x=res.x.reshape(b, n, *x1.shape[1:]), pixel=pix.detach(),
                               rep_error=res.rep_error.reshape(b, n))


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the first parameter (or buffer) of ``model``; None if it has neither."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return None
