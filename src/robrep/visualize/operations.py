"""Robust representations made visible (Engstrom et al. 2019, arXiv 1906.00945, docs/methods/visualization.md).

Every operation is input-space optimization with :func:`~robrep.visualize.optimize.optimize_inputs`
(normalized l2 steps, [0,1] box, l2 ball of radius ``eps`` around the start). The library
defaults are the notebooks' settings (docs/methods/visualization.md, RestrictedImageNet ResNet-50); scale
``steps`` and ``step_size`` to small images and CPUs.

Each function takes a :class:`~robrep.models.RobrepModel` (any robrep / torchvision / timm net,
any ``layer``) or any module mapping [0,1] images to features, and returns a frozen dataclass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks import representation_attack
from ..errors import InputError
from ..models.base import RobrepModel, check_images, final_linear_name
from ..threats import L2Ball
from .optimize import as_representation, noise_seed, optimize_inputs

__all__ = [
    "InversionResult",
    "invert",
    "invert_representation",
    "inversion_loss",
    "BrittlenessResult",
    "brittleness",
    "FeatureVisualization",
    "visualize_features",
    "TopImages",
    "top_activating",
    "FeatureAdditionResult",
    "feature_addition_loss",
    "add_feature",
    "InterpolationResult",
    "interpolate",
    "MisclassificationInsight",
    "explain_misclassification",
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


def _start(start: Start, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
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
    x0 = _start(start, x_target, generator)
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


# --------------------------------------------------------------------- feature visualization


@dataclass(frozen=True)
class FeatureVisualization:
    """Inputs maximizing single components (docs/methods/visualization.md, direct feature visualization).

    Attributes:
        components: (K,) component indices.
        x: (K, N, C, H, W) maximizing inputs, one per component and start.
        start: (N, C, H, W) the starts (shared by all components).
        activation: (K, N) the component's value at ``x``.
        activation_start: (K, N) its value at the start.
    """

    components: torch.Tensor
    x: torch.Tensor
    start: torch.Tensor
    activation: torch.Tensor
    activation_start: torch.Tensor


def _check_components(components: Sequence[int], dim: int) -> list[int]:
    comps = [int(c) for c in components]
    if not comps:
        raise InputError("give at least one component")
    bad = [c for c in comps if not 0 <= c < dim]
    if bad:
        raise InputError(f"components {bad} out of range: the representation has {dim} components (0..{dim - 1})")
    return comps


def visualize_features(
    model: nn.Module,
    components: Sequence[int],
    start: torch.Tensor | str = "noise",
    *,
    n: int = 1,
    layer: str = "penultimate",
    steps: int = 200,
    step_size: float = 1.0,
    eps: float = 1000.0,
    fake_relu: bool = False,
    generator: torch.Generator | None = None,
) -> FeatureVisualization:
    """Maximise ``R(x)_i`` for each component ``i`` (untargeted l2 PGD; Engstrom et al. 2019,
    "Feature visualization"; docs/methods/visualization.md).

    Args:
        model: RobrepModel (read at ``layer``) or any module mapping images to features.
        components: indices ``i`` into the flattened representation.
        start: (N, C, H, W) seed images in [0, 1], or ``"noise"`` / ``"gray"`` (then ``n``
            starts of the model's input shape; the paper's "maximizing inputs" use gray with
            ``eps=500, step_size=0.5, steps=1500``).
        n: number of starts when ``start`` is a string.
        layer: representation layer.
        steps, step_size, eps: optimizer settings (paper: 200, 1, 1000).
        fake_relu: straight-through last ReLU, so dead units can be visualized.
        generator: random source of the noise start.
    """
    if isinstance(start, str):
        if not isinstance(model, RobrepModel):
            raise InputError("with a string start the model must be a RobrepModel (its input shape is needed); pass start images")
        like = torch.zeros((n, *model.input_shape), device=_device(model))
        x0 = _start(start, like, generator)
    else:
        check_images(start, model if isinstance(model, RobrepModel) else None, what="start images")
        x0 = start.detach()
    rep = as_representation(model, layer, fake_relu)
    with torch.no_grad():
        z0 = rep(x0)
    comps = _check_components(components, z0.shape[1])
    xs, acts, acts0 = [], [], []
    for i in comps:
        res = optimize_inputs(lambda x, i=i: rep(x)[:, i], x0, steps=steps, step_size=step_size, eps=eps, targeted=False)
        xs.append(res.x)
        acts.append(res.loss)
        acts0.append(z0[:, i].detach())
    return FeatureVisualization(components=torch.tensor(comps), x=torch.stack(xs), start=x0,
                                activation=torch.stack(acts), activation_start=torch.stack(acts0))


@dataclass(frozen=True)
class TopImages:
    """The real images that activate one component most and least.

    Attributes:
        component: the component index.
        top_index, bottom_index: (k,) indices into the searched images (descending / ascending).
        top_value, bottom_value: (k,) the activations.
        top_images, bottom_images: (k, C, H, W).
    """

    component: int
    top_index: torch.Tensor
    top_value: torch.Tensor
    bottom_index: torch.Tensor
    bottom_value: torch.Tensor
    top_images: torch.Tensor
    bottom_images: torch.Tensor


@torch.no_grad()
def top_activating(
    model: nn.Module,
    images: torch.Tensor,
    component: int,
    *,
    k: int = 5,
    layer: str = "penultimate",
    batch_size: int = 500,
) -> TopImages:
    """Top-k and bottom-k images of ``images`` ranked by ``R(x)_component`` (docs/methods/visualization.md,
    "maximizing inputs" plus top-5 / bottom-5 test images). Ties keep the lower index first.

    Args:
        model: RobrepModel or feature module.
        images: (N, C, H, W) in [0, 1] (e.g. a test set).
        component: representation index.
        k: images per side (<= N).
    """
    check_images(images, model if isinstance(model, RobrepModel) else None)
    if not 1 <= k <= images.shape[0]:
        raise InputError(f"k must be in 1..{images.shape[0]}, got {k}")
    rep = as_representation(model, layer)
    dev = _device(model) or images.device
    vals = torch.cat([rep(images[s:s + batch_size].to(dev))[:, :].float().cpu() for s in range(0, images.shape[0], batch_size)])
    (i,) = _check_components([component], vals.shape[1])
    v = vals[:, i]
    order = torch.sort(v, descending=True, stable=True).indices
    top = order[:k]
    asc = torch.sort(v, descending=False, stable=True).indices
    bot = asc[:k]
    return TopImages(component=i, top_index=top, top_value=v[top], bottom_index=bot, bottom_value=v[bot],
                     top_images=images[top.to(images.device)], bottom_images=images[bot.to(images.device)])


# --------------------------------------------------------------------------- feature addition


@dataclass(frozen=True)
class FeatureAdditionResult:
    """Feature addition (docs/methods/visualization.md): one component of real images pushed up to a target.

    Attributes:
        x: (B, C, H, W) manipulated images in [0, 1].
        x_start: (B, C, H, W) originals.
        component: the component index.
        target_activation: activation at which the push stops.
        before, after: (B,) the component's value before and after.
        dist: (B,) ``||x - x_start||_2``.
    """

    x: torch.Tensor
    x_start: torch.Tensor
    component: int
    target_activation: float
    before: torch.Tensor
    after: torch.Tensor
    dist: torch.Tensor


def add_feature(
    model: nn.Module,
    x: torch.Tensor,
    component: int,
    *,
    target_activation: float = 1.0,
    layer: str = "penultimate",
    steps: int = 800,
    step_size: float = 0.1,
    eps: float = 1000.0,
    fake_relu: bool = False,
) -> FeatureAdditionResult:
    """Maximise ``min(R(x)_i - target, 0)`` from real images (Engstrom et al. 2019, "Feature
    manipulation"; docs/methods/visualization.md): the push stops once the activation reaches the target.

    Args:
        model: RobrepModel or feature module.
        x: (B, C, H, W) images in [0, 1].
        component: index ``i``.
        target_activation: the notebook's value is 1 (its features are ReLU outputs); choose it
            relative to the component's scale (e.g. its top activation on real images).
        layer: representation layer.
        steps, step_size, eps: optimizer settings (paper: 800, 0.1, 1000).
        fake_relu: straight-through last ReLU.
    """
    check_images(x, model if isinstance(model, RobrepModel) else None)
    rep = as_representation(model, layer, fake_relu)
    with torch.no_grad():
        z0 = rep(x)
    (i,) = _check_components([component], z0.shape[1])
    t = float(target_activation)
    res = optimize_inputs(lambda u: feature_addition_loss(rep(u)[:, i], t), x, steps=steps, step_size=step_size, eps=eps,
                          targeted=False)
    with torch.no_grad():
        after = rep(res.x)[:, i].detach()
    return FeatureAdditionResult(x=res.x, x_start=x.detach(), component=i, target_activation=t, before=z0[:, i].detach(),
                                 after=after, dist=(res.x - x).flatten(1).norm(dim=1))


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


# ------------------------------------------------------------------ misclassification insight


@dataclass(frozen=True)
class MisclassificationInsight:
    """Why a prediction is what it is, as for a linear classifier on ``R(x)`` (Engstrom et al.
    2019, "Insight into model predictions"; procedure reconstructed, docs/methods/visualization.md).

    Attributes:
        label: (B,) true labels.
        pred: (B,) predicted classes.
        misclassified: (B,) ``pred != label``.
        contributions: (B, D) ``w_pred,i * R(x)_i`` (sum + bias = the predicted logit).
        components: (B, k) the k components contributing most to the predicted class.
        x_pushed: (B, k, C, H, W) the input with each of those components maximized.
        pred_pushed: (B, k) predictions of the pushed inputs.
    """

    label: torch.Tensor
    pred: torch.Tensor
    misclassified: torch.Tensor
    contributions: torch.Tensor
    components: torch.Tensor
    x_pushed: torch.Tensor
    pred_pushed: torch.Tensor


def explain_misclassification(
    model: RobrepModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: int = 3,
    steps: int = 200,
    step_size: float = 1.0,
    eps: float = 1000.0,
    fake_relu: bool = False,
) -> MisclassificationInsight:
    """Components behind each prediction, and the input pushed along them.

    The logit of class ``c`` is ``w_c . R(x) + b_c`` (``R`` = penultimate, the input of the final
    linear layer), so ``w_c,i R(x)_i`` is component ``i``'s contribution. For the predicted
    (for misclassified inputs: the wrong) class, the ``k`` largest contributions are taken and
    each component is maximized from ``x`` (untargeted normalized l2 PGD, as feature
    visualization seeded with the image).

    Args:
        model: a RobrepModel whose last module is its final ``nn.Linear`` classifier.
        x: (B, C, H, W) images in [0, 1]; y: (B,) labels.
        k: components per image.
        steps, step_size, eps: optimizer settings for the push.
        fake_relu: straight-through last ReLU during the push.
    """
    if not isinstance(model, RobrepModel):
        raise InputError("explain_misclassification needs a RobrepModel (its final linear layer gives w_c)")
    check_images(x, model)
    if y.shape != (x.shape[0],):
        raise InputError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    fc = model.layer(final_linear_name(model.net))
    if not isinstance(fc, nn.Linear):  # pragma: no cover - final_linear_name returns a Linear
        raise InputError("the final layer is not nn.Linear")
    rep = as_representation(model, "penultimate")
    with torch.no_grad():
        z = rep(x)
        logits = model(x)
    pred = logits.argmax(1)
    w = fc.weight.detach()[pred]  # (B, D)
    contrib = w * z
    if not 1 <= k <= contrib.shape[1]:
        raise InputError(f"k must be in 1..{contrib.shape[1]}, got {k}")
    comps = torch.sort(contrib, dim=1, descending=True, stable=True).indices[:, :k]
    rep_push = as_representation(model, "penultimate", fake_relu)
    pushed = []
    for j in range(k):
        idx = comps[:, j]
        res = optimize_inputs(lambda u, idx=idx: rep_push(u).gather(1, idx[:, None]).squeeze(1), x, steps=steps,
                              step_size=step_size, eps=eps, targeted=False)
        pushed.append(res.x)
    xp = torch.stack(pushed, 1)
    with torch.no_grad():
        pp = model(xp.flatten(0, 1)).argmax(1).view(x.shape[0], k)
    return MisclassificationInsight(label=y.detach(), pred=pred, misclassified=pred != y, contributions=contrib,
                                    components=comps, x_pushed=xp, pred_pushed=pp)


def _device(model: nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return None
