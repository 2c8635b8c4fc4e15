"""Single representation components made visible (Engstrom et al. 2019, arXiv 1906.00945):
feature visualization, top-activating images, feature addition and misclassification insight.

Input-space optimization with :func:`~robrep.visualize.optimize.optimize_inputs`, as in
:mod:`robrep.visualize.operations`; each function returns a frozen dataclass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..models.base import RobrepModel, check_images, final_linear_name
from .operations import feature_addition_loss, model_device, start_images
from .optimize import as_representation, optimize_inputs

__all__ = [
    "FeatureAdditionResult",
    "FeatureVisualization",
    "MisclassificationInsight",
    "TopImages",
    "add_feature",
    "explain_misclassification",
    "top_activating",
    "visualize_features",
]


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
        like = torch.zeros((n, *model.input_shape), device=model_device(model))
        x0 = start_images(start, like, generator)
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
    dev = model_device(model) or images.device
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
