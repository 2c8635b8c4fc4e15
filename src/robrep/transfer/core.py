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

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._config import config_from_dict
from ..attacks import pgd
from ..data import ImageData
from ..errors import InputError
from ..evaluate import evaluate
from ..evaluate.probe import eval_attack_kwargs
from ..models import RobrepModel
from ..threats import ThreatModel, check_eps_units, threat
from .adapt import adapt_data, adapt_images
from .heads import _head_inputs, _head_module, head_name, replace_head, trainable_parameters

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
        eval_attack: the attack of that evaluation (``robrep list attacks``: ``pgd``, ``apgd``, ... or a
            protocol such as ``autoattack-standard`` or ``fast``).
        eval_steps, eval_restarts: settings of a single attack (PGD, APGD...); a protocol uses its
            own budgets.
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
    eval_attack: str = "pgd"
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
        check_eps_units(self.train_norm, self.train_eps)
        check_eps_units(self.eval_norm, self.eval_eps)
        eval_attack_kwargs(self.eval_attack, self.eval_steps)  # unknown names list the attacks

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
        return config_from_dict(cls, d, "transfer")


@dataclass(frozen=True)
class TransferResult:
    """Outcome of :func:`transfer`.

    Attributes:
        natural_accuracy: clean top-1 accuracy on the whole target test split, in [0, 1].
        balanced_accuracy: mean over classes of the per-class clean accuracy (the paper's metric
            for Pets, Caltech, Flowers, Aircraft).
        adversarial_accuracy: accuracy under ``eval_attack`` (PGD by default; ``eval_norm``,
            ``eval_eps``) on the first ``n_adversarial`` test images; None when ``eval_eps == 0``.
        n_natural, n_adversarial: test images behind each number.
        n_train: target training images used.
        n_trainable: trainable parameters (fixed, linear head: feat_dim * C + C).
        feat_dim: input size of the new head.
        history: per-epoch ``{"epoch", "lr", "loss", "train_accuracy"}``.
        config: the :class:`TransferConfig` as a dict.
        seconds: wall time.
        model: the transferred classifier (inputs in [0,1] at the source's input shape).
        attack: the evaluation attack: its name, settings and, for a protocol, ``protocol_version``
            (None when ``eval_eps == 0``).
        stages, flags: for a protocol, the adversarial accuracy after each stage and the flags
            (:class:`robrep.evaluate.EvalResult`).
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
    attack: dict[str, Any] | None = None
    stages: dict[str, float] | None = None
    flags: tuple[dict[str, Any], ...] = ()

    def metrics(self) -> dict[str, Any]:
        """Everything but the model, JSON-ready."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}


def _set_mode(model: RobrepModel, head: nn.Module, cfg: TransferConfig, training: bool) -> None:
    """Train/eval modes: in fixed mode with bn='frozen' only the head follows ``training``."""
    model.train(training)
    if training and cfg.mode == "fixed" and cfg.bn == "frozen":
        model.eval()
        head.train()


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
    train_data, test_data = _target_data(source, train_data, test_data, cfg)
    model, head, params = _new_model(source, train_data.info.num_classes, cfg, dev)
    n_trainable = sum(p.numel() for p in params)
    feat_dim = next(m for m in head.modules() if isinstance(m, nn.Linear)).in_features
    history = _fit(model, head, params, train_data, cfg, dev, log)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    nat = evaluate(model, test_data, seed=cfg.seed, device=dev)
    adv_acc, n_adv, ev = None, 0, None
    if cfg.eval_eps > 0:
        ev = evaluate(model, test_data, threat=threat(cfg.eval_norm, cfg.eval_eps), attack=cfg.eval_attack,
                      attack_kwargs=eval_attack_kwargs(cfg.eval_attack, cfg.eval_steps, cfg.eval_restarts), n=cfg.eval_n,
                      seed=cfg.seed, device=dev)
        adv_acc, n_adv = ev.robust_accuracy, ev.n
    balanced = sum(nat.per_class_clean.values()) / max(len(nat.per_class_clean), 1)
    return TransferResult(
        natural_accuracy=nat.clean_accuracy, balanced_accuracy=balanced, adversarial_accuracy=adv_acc,
        n_natural=nat.n, n_adversarial=n_adv, n_train=len(train_data), n_trainable=n_trainable, feat_dim=feat_dim,
        history=history, config=cfg.to_dict(), seconds=time.time() - t0, model=model,
        attack=ev.attack if ev is not None else None, stages=ev.stages if ev is not None else None,
        flags=ev.flags if ev is not None else (),
    )


def _target_data(source: RobrepModel, train_data: ImageData, test_data: ImageData,
                 cfg: TransferConfig) -> tuple[ImageData, ImageData]:
    """The target splits (``cfg.target_fraction`` of the training split) in the source's input shape."""
    if cfg.target_fraction < 1:
        if not hasattr(train_data, "fraction"):
            raise InputError("target_fraction < 1 needs an in-memory dataset (TensorImageData)")
        train_data = train_data.fraction(cfg.target_fraction, seed=cfg.seed)
    shape = source.input_shape
    return adapt_data(train_data, shape, cfg.resolution), adapt_data(test_data, shape, cfg.resolution)


def _new_model(source: RobrepModel, num_classes: int, cfg: TransferConfig,
               dev: torch.device) -> tuple[RobrepModel, nn.Module, list[nn.Parameter]]:
    """A copy of ``source`` with a new head; (model, head, the parameters that train)."""
    model = replace_head(source, num_classes, additional_hidden=cfg.additional_hidden, seed=cfg.seed).to(dev)
    head = _head_module(model, head_name(source))
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(cfg.mode == "full" or id(p) in head_params)
    return model, head, [p for p in model.parameters() if p.requires_grad]


def _fit(model: RobrepModel, head: nn.Module, params: list[nn.Parameter], train_data: ImageData, cfg: TransferConfig,
         dev: torch.device, log: Callable[[str], None] | None) -> list[dict[str, float]]:
    """SGD on the target training split (head only, or everything); one history row per epoch.

    In fixed mode with frozen BatchNorm and no adversarial training the head's inputs are
    computed once and cached (the backbone is a fixed function then)."""
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
    return history
