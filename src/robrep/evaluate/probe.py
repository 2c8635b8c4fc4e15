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

from ..attacks import pgd
from ..data import ImageData
from ..errors import InputError
from ..models.base import Representation, RobrepModel, representation
from ..threats import ThreatModel
from .accuracy import evaluate

__all__ = ["ProbeResult", "ProbedClassifier", "extract_features", "linear_probe", "make_head"]


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


@torch.no_grad()
def extract_features(rep: nn.Module, data: ImageData, batch_size: int = 500, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All representations (N, D) and labels (N,) of ``data``."""
    dev = device or next(iter(rep.parameters())).device
    feats, labels = [], []
    for xb, yb in data.batches(batch_size):
        feats.append(rep(xb.to(dev)).float().cpu())
        labels.append(yb)
    return torch.cat(feats), torch.cat(labels)


@dataclass(frozen=True)
class ProbeResult:
    """A trained probe and its accuracies.

    Attributes:
        natural_accuracy: clean test accuracy.
        adversarial_accuracy: test accuracy under the evaluation attack (None without a threat).
        train_threat: threat model used to train the probe (None for a standard probe).
        eval: attack settings of the evaluation.
        classifier: the frozen-encoder classifier (inputs in [0,1]).
    """

    natural_accuracy: float
    adversarial_accuracy: float | None
    train_threat: dict[str, Any] | None
    eval: dict[str, Any]
    classifier: ProbedClassifier


def linear_probe(
    encoder: RobrepModel,
    train_data: ImageData,
    test_data: ImageData,
    *,
    layer: str = "penultimate",
    head: str = "linear",
    train_threat: ThreatModel | None = None,
    eval_threat: ThreatModel | None = None,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 128,
    attack_steps: int = 7,
    eval_steps: int = 20,
    eval_restarts: int = 1,
    eval_n: int | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Train a probe on a frozen layer of ``encoder`` and measure natural/adversarial accuracy.

    A standard probe (``train_threat=None``) is trained with Adam on cached features; an
    adversarial probe with PGD (``attack_steps`` steps, 2.5 eps / steps) through the frozen
    encoder in pixel space. ``eval_threat`` defaults to ``train_threat``.
    """
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
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
    if train_threat is None or train_threat.eps == 0:
        f, y = extract_features(rep, train_data, device=dev)
        f, y = f.to(dev), y.to(dev)
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
    ev = evaluate(clf, test_data, threat=thr if (thr is not None and thr.eps > 0) else None, attack="pgd",
                  attack_kwargs={"steps": eval_steps, "restarts": eval_restarts}, n=eval_n, seed=seed, device=dev)
    return ProbeResult(ev.clean_accuracy, ev.robust_accuracy, train_threat.to_dict() if train_threat is not None else None,
                       {"threat": ev.threat, "attack": ev.attack, "n": ev.n}, clf)
