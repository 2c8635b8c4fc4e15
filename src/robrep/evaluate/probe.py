"""Linear (and MLP) probes on frozen representations, trained standard or adversarially, with
natural and adversarial accuracy -- the downstream protocol shared by vulnerability, SynBench,
contrastive learning and transfer.

The probed classifier is ``head(R(x))`` with ``R`` a frozen layer of an encoder; adversarial
training and evaluation attack it end to end in pixel space (through the frozen encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import is_protocol, pgd
from ..data import ImageData
from ..errors import InputError
from ..models.base import Representation, RobrepModel, representation
from ..threats import ThreatModel
from .accuracy import evaluate

__all__ = ["LinearFit", "ProbeResult", "ProbedClassifier", "extract_features", "fit_linear", "linear_probe", "make_head", "eval_attack_kwargs"]


class ProbedClassifier(nn.Module):
    """``head(R(x))`` for inputs in [0,1]; the encoder is frozen (eval mode, no gradients to
    its parameters). Use ``.train()`` freely: the encoder stays in eval mode."""

    def __init__(self, rep: Representation, head: nn.Module) -> None:
        super().__init__()
        self.rep = rep
        self.head = head
        for p in self.rep.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> ProbedClassifier:
        super().train(mode)
        self.rep.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rep(x))


def make_head(kind: str, dim: int, num_classes: int) -> nn.Module:
    """``linear``: Linear(dim, C); ``mlp``: Zhu et al.'s Linear(dim,200)-Dropout(0.1)-BN-ReLU-Linear(200,C)."""
    if kind == "linear":
        return nn.Linear(dim, num_classes)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, 200), nn.Dropout(0.1), nn.BatchNorm1d(200), nn.ReLU(), nn.Linear(200, num_classes))
    raise InputError(f"head must be 'linear' or 'mlp', got {kind!r}")


def extract_features(rep: nn.Module, data: ImageData, batch_size: int = 500, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All representations (N, D) float32 on the CPU and labels (N,) of ``data``.

    The forward passes run under ``torch.inference_mode`` (no autograd bookkeeping); the
    returned tensors are ordinary tensors (usable as inputs of a trained head).
    """
    dev = device or next(iter(rep.parameters())).device
    feats, labels = [], []
    with torch.inference_mode():
        for xb, yb in data.batches(batch_size):
            feats.append(rep(xb.to(dev)).float().cpu())
            labels.append(yb)
    return torch.cat(feats).clone(), torch.cat(labels).clone()


@dataclass(frozen=True)
class LinearFit:
    """A multinomial logistic regression fitted to convergence (see :func:`fit_linear`).

    Attributes:
        weight, bias: (C, D) and (C,) in the units of the raw features (float32).
        loss: the final objective (mean cross-entropy + l2 / 2 * ||W_std||^2).
        grad_norm: max-abs gradient of the objective at the solution (convergence check).
        iterations: L-BFGS iterations used.
        converged: ``grad_norm <= tol``.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    loss: float
    grad_norm: float
    iterations: int
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return {"solver": "lbfgs", "loss": self.loss, "grad_norm": self.grad_norm, "iterations": self.iterations,
                "converged": self.converged}


def fit_linear(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, l2: float = 1e-2,
               max_iter: int = 1000, tol: float = 1e-6, scale: str = "global") -> LinearFit:
    """Multinomial logistic regression on fixed features, trained to convergence.

    Minimizes ``mean_i CE(W s(f_i) + b, y_i) + l2 / 2 * ||W||_F^2`` with full-batch L-BFGS
    (strong-Wolfe line search, float64). ``s`` centers the features and, with ``scale="global"``
    (default), divides them by one number, the RMS deviation per feature, so the ridge is
    isotropic in the raw feature space and ``l2`` means the same for every encoder;
    ``scale="feature"`` standardizes each feature on its own, which lets the probe put large
    weights on low-variance directions (measured on the demo data: a probe that is much less
    robust to PGD for the same clean accuracy). The objective is strictly convex in ``W``
    (``l2 > 0``), so its minimizer is unique -- also on separable data, where the unregularized
    problem has no finite solution. The result is folded back to raw-feature units
    (``W / sd``, ``b - W mu / sd``).

    Args:
        features: (N, D) float features; labels: (N,) int64 in [0, num_classes).
        num_classes: C.
        l2: ridge weight on the scaled weights (bias not penalized).
        max_iter: L-BFGS iteration cap per run (up to 3 runs); tol: max-abs gradient that
            counts as converged.
        scale: ``global`` or ``feature`` (see above).
    """
    if features.ndim != 2 or len(features) != len(labels) or len(labels) < 1:
        raise InputError(f"features must be (N, D) with one label each, got {tuple(features.shape)} and {tuple(labels.shape)}")
    if not torch.isfinite(features).all():
        raise InputError("the features contain NaN/inf; check the encoder")
    if l2 <= 0:
        raise InputError(f"l2 must be > 0 (the probe's objective needs it to have a unique minimizer), got {l2}")
    dt = torch.float64 if features.numel() <= 50_000_000 else torch.float32
    f = features.to(dt)
    y = labels.to(features.device, torch.long)
    mu = f.mean(0)
    if scale == "feature":
        sd = f.std(0, unbiased=False)
        sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))
    elif scale == "global":
        rms = float((f - mu).pow(2).sum(1).mean().sqrt()) / max(f.shape[1], 1) ** 0.5
        sd = torch.full_like(mu, rms if rms > 1e-12 else 1.0)
    else:
        raise InputError(f"scale must be 'global' or 'feature', got {scale!r}")
    z = (f - mu) / sd
    w = torch.zeros(num_classes, f.shape[1], dtype=dt, device=f.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=dt, device=f.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        return F.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * (w * w).sum()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    for _ in range(3):  # L-BFGS may stop early on a flat stretch; restart from where it stopped
        opt.step(closure)
        loss = closure()
        gmax = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
        if gmax <= tol:
            break
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    with torch.no_grad():
        wr = w / sd
        br = b - wr @ mu
    return LinearFit(wr.float().detach(), br.float().detach(), float(loss.detach()), gmax, iters, gmax <= tol)


def attack_kwargs_for(attack: str, **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments among ``kwargs`` that the registered attack ``attack`` accepts
    (e.g. ``steps`` for PGD/APGD; a fixed protocol may take none). Unknown names raise
    :class:`~robrep.errors.UnknownNameError` listing the registered attacks."""
    import inspect

    from ..attacks.compose import ATTACKS

    params = inspect.signature(ATTACKS.get(attack)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def eval_attack_kwargs(attack: str, steps: int | None, restarts: int | None = None) -> dict[str, Any]:
    """The settings a command's evaluation budget (``steps``, ``restarts``) gives ``attack``: the
    ones it accepts for a single attack (PGD, APGD...), none for a protocol (``autoattack-standard``,
    ``fast``...), whose budgets are part of its name and version. Unknown names raise
    :class:`~robrep.errors.UnknownNameError` listing the registered attacks."""
    kw = attack_kwargs_for(attack, **({"steps": steps} if steps is not None else {}),
                           **({"restarts": restarts} if restarts not in (None, 1) else {}))
    return {} if is_protocol(attack) else kw


@dataclass(frozen=True)
class ProbeResult:
    """A trained probe and its accuracies.

    Attributes:
        natural_accuracy: clean test accuracy.
        adversarial_accuracy: test accuracy under the evaluation attack (None without a threat).
        train_threat: threat model used to train the probe (None for a standard probe).
        eval: attack settings of the evaluation.
        classifier: the frozen-encoder classifier (inputs in [0,1]).
        fit: how the head was trained (solver, epochs or L-BFGS convergence: loss, grad_norm).
    """

    natural_accuracy: float
    adversarial_accuracy: float | None
    train_threat: dict[str, Any] | None
    eval: dict[str, Any]
    classifier: ProbedClassifier
    fit: dict[str, Any] | None = None


def linear_probe(
    encoder: RobrepModel,
    train_data: ImageData,
    test_data: ImageData,
    *,
    layer: str = "penultimate",
    head: str = "linear",
    train_threat: ThreatModel | None = None,
    eval_threat: ThreatModel | None = None,
    epochs: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 128,
    attack_steps: int = 7,
    eval_steps: int | None = None,
    eval_restarts: int = 1,
    eval_n: int | None = None,
    seed: int = 0,
    attack: str = "pgd",
    l2: float = 1e-2,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_batch_size: int = 500,
) -> ProbeResult:
    """Train a probe on a frozen layer of ``encoder`` and measure natural/adversarial accuracy.

    A standard linear probe (``train_threat=None``, ``head="linear"``) with ``epochs=None`` (the
    default) is trained **to convergence** on cached features: full-batch L-BFGS on the
    l2-regularized logistic loss (:func:`fit_linear`; ``l2`` its ridge weight on centered,
    globally scaled features). With an integer
    ``epochs`` it is trained with Adam (``lr``, ``batch_size``) for that many epochs instead. An
    MLP head is trained with Adam (20 epochs when ``epochs`` is None); an adversarial probe
    with PGD (``attack_steps`` steps, 2.5 eps / steps) through the frozen encoder in pixel space
    (20 epochs when None). ``eval_threat`` defaults to ``train_threat``; the evaluation attack is
    ``attack`` from the attack registry (``robrep list attacks``: PGD, APGD, ... or a protocol such as
    ``autoattack-standard`` or ``fast``) with ``eval_steps`` steps (None: 20 for a single attack, the
    protocol's own budgets for a protocol); for a protocol, ``eval`` adds the robust accuracy after
    each stage and the flags.
    ``features``: precomputed ``(features, labels)`` of ``train_data`` at ``layer`` (a feature
    cache), used instead of extracting them again. ``eval_batch_size``: images per attacked
    batch of the evaluation (memory only). A protocol (``autoattack-standard``, ``fast``...) runs
    with its own fixed settings (``eval_steps`` does not apply to it).
    """
    if epochs is not None and epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    attack_kwargs_for(attack)  # checks the name before any training: unknown names list the attacks
    if eval_steps is None and not is_protocol(attack):
        eval_steps = 20
    dev = next(encoder.parameters()).device
    encoder.eval()
    rep = representation(encoder, layer)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        x0, _ = next(iter(train_data.batches(2)))
        dim = rep(x0.to(dev)).shape[1]
    h = make_head(head, dim, train_data.info.num_classes).to(dev)
    clf = ProbedClassifier(rep, h).to(dev)
    opt = torch.optim.Adam(h.parameters(), lr=lr)
    fit: dict[str, Any]
    standard = train_threat is None or train_threat.eps == 0
    if standard and head == "linear" and epochs is None:
        f, y = features if features is not None else extract_features(rep, train_data, device=dev)
        lf = fit_linear(f.to(dev), y.to(dev), train_data.info.num_classes, l2=l2)
        with torch.no_grad():
            h.weight.copy_(lf.weight)
            h.bias.copy_(lf.bias)
        fit = lf.to_dict() | {"l2": l2, "train_n": len(y)}
    elif standard:
        epochs = epochs or 20
        f, y = features if features is not None else extract_features(rep, train_data, device=dev)
        f, y = f.to(dev), y.to(dev)
        fit = {"solver": "adam", "epochs": epochs, "lr": lr, "batch_size": batch_size, "train_n": len(y)}
        for _ in range(epochs):
            h.train()
            perm = torch.randperm(len(y), generator=g).to(dev)
            for i in range(0, len(y), batch_size):
                idx = perm[i : i + batch_size]
                if len(idx) < 2 and head == "mlp":
                    continue
                loss = F.cross_entropy(h(f[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    else:
        epochs = epochs or 20
        fit = {"solver": "adam-pgd", "epochs": epochs, "lr": lr, "batch_size": batch_size, "attack_steps": attack_steps,
               "train_n": len(train_data)}
        agen = torch.Generator(device=dev).manual_seed(seed + 1)
        for _ in range(epochs):
            for xb, yb in train_data.batches(batch_size, shuffle=True, generator=g, device=dev):
                clf.eval()
                xa = pgd(clf, xb, yb, train_threat, steps=attack_steps, keep_best=False, generator=agen, check=False).x_adv
                clf.train()
                loss = F.cross_entropy(clf(xa), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    clf.eval()
    thr = eval_threat if eval_threat is not None else train_threat
    akw = {} if is_protocol(attack) else attack_kwargs_for(attack, **({"steps": eval_steps} if eval_steps is not None else {}),
                                                       **({"restarts": eval_restarts} if attack == "pgd" else {}))
    ev = evaluate(clf, test_data, threat=thr if (thr is not None and thr.eps > 0) else None, attack=attack,
                  attack_kwargs=akw, n=eval_n, seed=seed, device=dev, batch_size=eval_batch_size)
    detail: dict[str, Any] = {"threat": ev.threat, "attack": ev.attack, "n": ev.n}
    if ev.stages is not None:
        detail |= {"stages": ev.stages, "flags": list(ev.flags), "notes": list(ev.notes)}
    return ProbeResult(ev.clean_accuracy, ev.robust_accuracy, train_threat.to_dict() if train_threat is not None else None,
                       detail, clf, fit)
