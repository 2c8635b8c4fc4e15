"""Transfer learning from (robust) source models: fixed-feature and full-network fine-tuning.

Salman, Ilyas, Engstrom, Kapoor, Madry, *Do Adversarially Robust ImageNet Models Transfer
Better?* (NeurIPS 2020, arXiv 2007.08489), protocol of their ``microsoft/robust-models-transfer``
code (docs/methods/transfer.md):

* the source classifier's final ``nn.Linear`` is replaced by a new head ``Linear(feat_dim, C)``
  (optionally preceded by ``additional_hidden`` x [Linear(feat, feat) + ReLU], the code's
  ``--additional-hidden``);
* **fixed-feature** transfer (``mode="fixed"``, the code's ``--freeze-level 4``) trains only the
  new head; **full-network** transfer (``mode="full"``, ``--freeze-level -1``) trains everything;
* SGD, momentum 0.9, weight decay 5e-4, batch 64, lr x 0.1 every third of training
  (150 epochs, steps at 50 and 100 in the paper); lr 0.01 (fixed) / 0.001 (full) by default,
  the values that won most often in the paper's lr grid.

Documented differences from the paper's code (deliberate):

* **BatchNorm in fixed mode.** The code runs the frozen backbone in ``train()`` mode, so the
  running statistics of its BatchNorm layers keep updating on the target data (the "frozen"
  backbone is not a fixed function). Here ``bn="frozen"`` (default) runs the backbone in eval
  mode: every parameter *and buffer* outside the head stays bit-identical, and features can be
  cached. ``bn="update"`` reproduces the code (backbone in train mode: BN statistics update,
  dropout active; parameters still frozen).
* **Normalization.** The code normalizes with the *target* dataset's mean/std (or none), although
  the source was trained with ImageNet statistics. Here the source model's normalization stays
  inside the model (robrep's model contract), so target images are fed exactly as the source
  was trained to see them.
* **Augmentation.** The code trains with RandomResizedCrop + flips at 224 px; robrep trains on
  the target images as they are (after :func:`adapt_images`), with no augmentation.
* **Shape mismatches** (explicit, in :func:`adapt_images`): channels are replicated (1 -> 3) or
  converted to luminance (3 -> 1, ITU-R BT.601 weights); spatial size is changed with area
  averaging (down) / bilinear interpolation (up). ``resolution=r`` first resamples the target to
  r x r and then to the source's input size: the granularity experiment of the paper (8.4).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd
from ..data import DatasetInfo, ImageData, TensorImageData
from ..errors import InputError
from ..evaluate import evaluate
from ..models import ModelSpec, RobrepModel, final_linear_name
from ..threats import ThreatModel, threat

__all__ = [
    "MODES",
    "TransferConfig",
    "TransferResult",
    "adapt_data",
    "adapt_images",
    "head_name",
    "replace_head",
    "transfer",
    "trainable_parameters",
]

MODES = ("fixed", "full")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, for 3 -> 1 channel conversion


@dataclass(frozen=True)
class TransferConfig:
    """Settings of one transfer run (saved as JSON beside its results).

    Attributes:
        mode: ``"fixed"`` (train the new head only) or ``"full"`` (fine-tune everything).
        additional_hidden: hidden layers [Linear(feat, feat) + ReLU] before the new output layer
            (paper code's ``--additional-hidden``, default 0 = a linear head).
        bn: ``"frozen"``: in fixed mode the backbone runs in eval mode (parameters and buffers
            unchanged); ``"update"``: backbone in train mode as in the paper's code (BatchNorm
            running statistics update on the target). Ignored in full mode (all in train mode).
        epochs: training epochs on the target (paper: 150).
        batch_size: paper: 64.
        lr: learning rate; None = 0.01 for fixed, 0.001 for full (the paper's usual winners).
        momentum, weight_decay: SGD settings (paper: 0.9, 5e-4).
        lr_step: lr is multiplied by 0.1 every ``lr_step`` epochs; None = ``max(1, epochs // 3)``
            (paper: 50 of 150).
        train_norm, train_eps: adversarial training on the target (PGD, ``train_steps`` steps,
            step 2.5 eps / steps) of the head (fixed) or the whole network (full); eps 0 = natural
            training (the paper's setting).
        eval_norm, eval_eps: threat model of the adversarial accuracy on the target (eps 0 = none).
        eval_steps, eval_restarts: PGD settings of that evaluation.
        eval_n: adversarial accuracy on the first ``eval_n`` test images (None = all); natural
            accuracy always uses the whole test split.
        target_fraction: class-balanced fraction of the target training split (seeded by ``seed``).
        resolution: resample target images to ``resolution`` x ``resolution`` before resizing
            them to the source's input size (granularity experiment); None = direct resize.
        cache_features: in fixed mode with ``bn="frozen"`` and natural training, train the head on
            features computed once (exactly the same maths, much faster).
        seed: seeds the training subset, the head initialization, the data order and the attacks.
    """

    mode: str = "fixed"
    additional_hidden: int = 0
    bn: str = "frozen"
    epochs: int = 15
    batch_size: int = 64
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int | None = None
    train_norm: str = "linf"
    train_eps: float = 0.0
    train_steps: int = 7
    eval_norm: str = "linf"
    eval_eps: float = 0.0
    eval_steps: int = 20
    eval_restarts: int = 1
    eval_n: int | None = 1000
    target_fraction: float = 1.0
    resolution: int | None = None
    cache_features: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be 'fixed' or 'full', got {self.mode!r}")
        if self.bn not in ("frozen", "update"):
            raise InputError(f"bn must be 'frozen' or 'update', got {self.bn!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        if self.additional_hidden < 0:
            raise InputError(f"additional_hidden must be >= 0, got {self.additional_hidden}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive number, got {self.lr}")
        if self.lr_step is not None and self.lr_step < 1:
            raise InputError(f"lr_step must be >= 1 epoch, got {self.lr_step}")
        if not 0 < self.target_fraction <= 1:
            raise InputError(f"target_fraction must be in (0, 1], got {self.target_fraction}")
        if self.resolution is not None and self.resolution < 1:
            raise InputError(f"resolution must be a positive number of pixels, got {self.resolution}")
        if self.eval_n is not None and self.eval_n < 1:
            raise InputError(f"eval_n must be positive (or None for all), got {self.eval_n}")
        if self.train_steps < 1 or self.eval_steps < 1:
            raise InputError("train_steps and eval_steps must be >= 1")
        threat(self.train_norm, self.train_eps)  # validates
        threat(self.eval_norm, self.eval_eps)

    @property
    def resolved_lr(self) -> float:
        """``lr``, or the paper's default for the mode (0.01 fixed, 0.001 full)."""
        return self.lr if self.lr is not None else (0.01 if self.mode == "fixed" else 0.001)

    @property
    def resolved_lr_step(self) -> int:
        return self.lr_step if self.lr_step is not None else max(1, self.epochs // 3)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``: ``lr * 0.1 ** (epoch // lr_step)``."""
        return self.resolved_lr * 0.1 ** (epoch // self.resolved_lr_step)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransferConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown transfer options {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


@dataclass(frozen=True)
class TransferResult:
    """Outcome of :func:`transfer`.

    Attributes:
        natural_accuracy: clean top-1 accuracy on the whole target test split, in [0, 1].
        balanced_accuracy: mean over classes of the per-class clean accuracy (the paper's metric
            for Pets, Caltech, Flowers, Aircraft).
        adversarial_accuracy: accuracy under PGD (``eval_norm``, ``eval_eps``) on the first
            ``n_adversarial`` test images; None when ``eval_eps == 0``.
        n_natural, n_adversarial: test images behind each number.
        n_train: target training images used.
        n_trainable: trainable parameters (fixed, linear head: feat_dim * C + C).
        feat_dim: input size of the new head.
        history: per-epoch ``{"epoch", "lr", "loss", "train_accuracy"}``.
        config: the :class:`TransferConfig` as a dict.
        seconds: wall time.
        model: the transferred classifier (inputs in [0,1] at the source's input shape).
    """

    natural_accuracy: float
    balanced_accuracy: float
    adversarial_accuracy: float | None
    n_natural: int
    n_adversarial: int
    n_train: int
    n_trainable: int
    feat_dim: int
    history: list[dict[str, float]]
    config: dict[str, Any]
    seconds: float
    model: RobrepModel = field(repr=False)

    def metrics(self) -> dict[str, Any]:
        """Everything but the model, JSON-ready."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}


# ---------------------------------------------------------------------------------------------
# Input adaptation (channels, size, resolution).


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


# ---------------------------------------------------------------------------------------------
# Head replacement and freezing.


def head_name(model: RobrepModel) -> str:
    """Name (in ``model.net``) of the final linear classifier that transfer replaces."""
    return final_linear_name(model.net)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    *path, last = name.split(".")
    parent = root
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def replace_head(model: RobrepModel, num_classes: int, *, additional_hidden: int = 0, seed: int = 0) -> RobrepModel:
    """A copy of ``model`` whose final ``nn.Linear`` is a fresh head for ``num_classes`` classes.

    The head is ``Linear(feat_dim, C)`` (``additional_hidden=0``) or ``Sequential(
    [Linear(feat, feat), ReLU] * k, Linear(feat, C))``, initialized with PyTorch's default
    initialization under ``torch.manual_seed(seed)`` (the global RNG state is restored).
    ``model`` itself is not modified.

    Returns:
        a :class:`RobrepModel` with the same normalization and input shape, ``num_classes`` outputs.
    """
    if not isinstance(model, RobrepModel):
        raise InputError("transfer needs a RobrepModel; load a checkpoint with robrep.load or wrap your net")
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    name = head_name(model)
    new_net = copy.deepcopy(model.net)
    old = dict(new_net.named_modules())[name]
    assert isinstance(old, nn.Linear)
    feat = old.in_features
    ref = next(iter(old.parameters()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for _ in range(additional_hidden):
            layers += [nn.Linear(feat, feat), nn.ReLU()]
        layers.append(nn.Linear(feat, num_classes))
        head: nn.Module = layers[0] if additional_hidden == 0 else nn.Sequential(*layers)
    head = head.to(device=ref.device, dtype=ref.dtype)
    _set_module(new_net, name, head)
    # The spec rebuilds the architecture with a linear head of C classes (pretrained-weight options
    # dropped: the weights are in the state dict). A model with hidden head layers is not
    # rebuildable from its spec; save its state dict yourself.
    kwargs = {k: v for k, v in model.spec.kwargs.items() if k not in ("weights", "pretrained")}
    spec = ModelSpec(model.spec.arch, int(num_classes), model.spec.input_shape, model.spec.mean, model.spec.std, kwargs)
    out = RobrepModel(new_net, spec)
    out.load_state_dict({**out.state_dict(), "normalize.mean": model.normalize.mean, "normalize.std": model.normalize.std})
    return out


def trainable_parameters(model: nn.Module) -> int:
    """Number of scalar parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _head_module(model: RobrepModel, name: str) -> nn.Module:
    return dict(model.net.named_modules())[name]


def _set_mode(model: RobrepModel, head: nn.Module, cfg: TransferConfig, training: bool) -> None:
    """Train/eval modes: in fixed mode with bn='frozen' only the head follows ``training``."""
    model.train(training)
    if training and cfg.mode == "fixed" and cfg.bn == "frozen":
        model.eval()
        head.train()


class _Stop(Exception):
    pass


@torch.no_grad()
def _head_inputs(model: RobrepModel, head: nn.Module, data: ImageData, batch_size: int, dev: torch.device) -> torch.Tensor:
    """Inputs of ``head`` for all of ``data`` (the frozen features), model in eval mode."""
    box: list[torch.Tensor] = []

    def pre(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        box.append(args[0].detach())
        raise _Stop

    h = head.register_forward_pre_hook(pre)
    try:
        for xb, _ in data.batches(batch_size, device=dev):
            try:
                model(xb)
            except _Stop:
                pass
    finally:
        h.remove()
    return torch.cat(box)


# ---------------------------------------------------------------------------------------------


def transfer(
    source: RobrepModel,
    train_data: ImageData,
    test_data: ImageData,
    cfg: TransferConfig | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> TransferResult:
    """Transfer ``source`` to a target task and measure natural and adversarial accuracy.

    Salman et al. (NeurIPS 2020), docs/methods/transfer.md: replace the final linear layer by a
    new head for the target's classes, then train the head (``mode="fixed"``) or the whole network
    (``mode="full"``) with SGD (momentum 0.9, wd 5e-4, lr x0.1 every third of training).

    Args:
        source: a classifier on [0,1] inputs of shape ``source.input_shape``; not modified.
        train_data, test_data: target splits, any shape: images are adapted with
            :func:`adapt_images` (channels replicated / luminance, resized, optional resolution).
        cfg: :class:`TransferConfig` (defaults: fixed, linear head, 15 epochs, lr 0.01).
        log: optional callback for one line per epoch.

    Returns:
        :class:`TransferResult`; ``result.model`` is the transferred classifier (source input shape).
    """
    cfg = cfg if cfg is not None else TransferConfig()
    if not isinstance(source, RobrepModel):
        raise InputError("transfer needs a RobrepModel; load a checkpoint with robrep.load or wrap your net")
    if train_data.info.num_classes != test_data.info.num_classes:
        raise InputError("the target train and test splits have different numbers of classes")
    t0 = time.time()
    dev = next(iter(source.parameters())).device
    shape = source.input_shape
    if cfg.target_fraction < 1:
        if not hasattr(train_data, "fraction"):
            raise InputError("target_fraction < 1 needs an in-memory dataset (TensorImageData)")
        train_data = train_data.fraction(cfg.target_fraction, seed=cfg.seed)
    train_data = adapt_data(train_data, shape, cfg.resolution)
    test_data = adapt_data(test_data, shape, cfg.resolution)
    num_classes = train_data.info.num_classes

    model = replace_head(source, num_classes, additional_hidden=cfg.additional_hidden, seed=cfg.seed).to(dev)
    hname = head_name(source)
    head = _head_module(model, hname)
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(cfg.mode == "full" or id(p) in head_params)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    feat_dim = next(m for m in head.modules() if isinstance(m, nn.Linear)).in_features

    opt = torch.optim.SGD(params, lr=cfg.resolved_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    train_thr: ThreatModel | None = threat(cfg.train_norm, cfg.train_eps) if cfg.train_eps > 0 else None
    data_gen = torch.Generator().manual_seed(cfg.seed)
    atk_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    use_cache = cfg.cache_features and cfg.mode == "fixed" and cfg.bn == "frozen" and train_thr is None
    feats: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    if use_cache:
        model.eval()
        feats = _head_inputs(model, head, train_data, 500, dev)
        labels = torch.cat([yb for _, yb in train_data.batches(500)])
    n_train = len(train_data)
    history: list[dict[str, float]] = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # dropout in heads / in the backbone with bn="update"
        for epoch in range(cfg.epochs):
            lr = cfg.lr_at(epoch)
            for g in opt.param_groups:
                g["lr"] = lr
            _set_mode(model, head, cfg, True)
            tot_loss, tot_ok, count = 0.0, 0, 0
            if feats is not None and labels is not None:
                perm = torch.randperm(n_train, generator=data_gen)
                batches = ((feats[idx], labels[idx].to(dev)) for idx in (perm[i : i + cfg.batch_size] for i in range(0, n_train, cfg.batch_size)))
                forward: Callable[[torch.Tensor], torch.Tensor] = head
            else:
                batches = train_data.batches(cfg.batch_size, shuffle=True, generator=data_gen, device=dev)
                forward = model
            for xb, yb in batches:
                if train_thr is not None:  # attack in eval mode (as robrep's PGD training does)
                    model.eval()
                    xb = pgd(model, xb, yb, train_thr, steps=cfg.train_steps, step_size=2.5 * train_thr.eps / cfg.train_steps,
                             keep_best=False, generator=atk_gen, check=False).x_adv
                    _set_mode(model, head, cfg, True)
                out = forward(xb)
                loss = F.cross_entropy(out, yb)
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise InputError(f"transfer diverged at epoch {epoch + 1} (loss {lv}); lower the lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot_loss += lv * len(yb)
                tot_ok += int((out.argmax(1) == yb).sum())
                count += len(yb)
            rec = {"epoch": epoch + 1, "lr": lr, "loss": tot_loss / max(count, 1), "train_accuracy": tot_ok / max(count, 1)}
            history.append(rec)
            if log:
                log(" ".join(f"{k}={v:.4g}" for k, v in rec.items()))
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    nat = evaluate(model, test_data, seed=cfg.seed, device=dev)
    adv_acc, n_adv = None, 0
    if cfg.eval_eps > 0:
        ev = evaluate(model, test_data, threat=threat(cfg.eval_norm, cfg.eval_eps), attack="pgd",
                      attack_kwargs={"steps": cfg.eval_steps, "restarts": cfg.eval_restarts}, n=cfg.eval_n, seed=cfg.seed, device=dev)
        adv_acc, n_adv = ev.robust_accuracy, ev.n
    balanced = sum(nat.per_class_clean.values()) / max(len(nat.per_class_clean), 1)
    return TransferResult(
        natural_accuracy=nat.clean_accuracy, balanced_accuracy=balanced, adversarial_accuracy=adv_acc,
        n_natural=nat.n, n_adversarial=n_adv, n_train=n_train, n_trainable=n_trainable, feat_dim=feat_dim,
        history=history, config=cfg.to_dict(), seconds=time.time() - t0, model=model,
    )
