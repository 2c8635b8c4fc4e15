"""A linear probe's natural and PGD accuracy on a representation, read beside the Fano bound
(docs/methods/vulnerability.md)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ..threats import ThreatModel
from .training import _device, _features, _Standardise

__all__ = ["probe_robust_accuracy"]


class _Probe(nn.Module):
    def __init__(self, rep: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.rep, self.head = rep, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rep(x).flatten(1))


def probe_robust_accuracy(
    rep: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    eval_fraction: float = 0.3,
    num_classes: int | None = None,
    epochs: int = 100,
    lr: float = 1e-2,
    attack_steps: int = 20,
    seed: int = 0,
    attack: str = "pgd",
) -> tuple[float, float]:
    """Natural and adversarial accuracy of a linear probe on ``rep``: trained (full-batch Adam,
    standard cross-entropy) on the first ``1 - eval_fraction`` of the inputs, evaluated on the rest
    with ``robrep.attacks.pgd`` (``attack_steps``, random start) through representation and probe,
    or with ``attack`` (any name of ``robrep list attacks``, e.g. ``autoattack-standard`` or
    ``fast``, at its own budget) on the correctly classified held-out inputs.
    Fano's bound on *any* classifier's adversarial accuracy must lie above the second number.

    Returns:
        (natural accuracy, robust accuracy) on the held-out inputs.
    """
    from ..attacks import pgd

    if y.shape[0] != x.shape[0]:
        raise InputError(f"labels must pair with the inputs: {y.shape[0]} vs {x.shape[0]}")
    dev = _device(rep, x)
    x, y = x.to(dev), y.to(dev).long()
    n_ev = max(1, int(round(eval_fraction * x.shape[0])))
    xt, yt, xe, ye = x[:-n_ev], y[:-n_ev], x[-n_ev:], y[-n_ev:]
    f = _features(rep, xt)
    mu, sd = f.mean(0), f.std(0) + 1e-6
    k = int(num_classes or int(y.max()) + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lin = nn.Linear(f.shape[1], k).to(dev)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    for _ in range(epochs):
        loss = nn.functional.cross_entropy(lin((f - mu) / sd), yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    head = nn.Sequential()
    head.append(_Standardise(mu, sd))
    head.append(lin)
    net = _Probe(rep, head).eval()
    for p in lin.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        nat = float((net(xe).argmax(1) == ye).float().mean())
    if threat.eps == 0:
        return nat, nat
    if attack == "pgd":
        r = pgd(net, xe, ye, threat, steps=attack_steps, generator=torch.Generator().manual_seed(seed), check=False)
        return nat, float((~r.success).float().mean())
    from ..attacks import create_attack

    with torch.no_grad():
        rob = net(xe).argmax(1) == ye
    idx = torch.nonzero(rob).flatten()
    if len(idx):
        r = create_attack(attack)(net, xe[idx], ye[idx], threat, generator=torch.Generator().manual_seed(seed))
        rob[idx] = ~r.success
    return nat, float(rob.float().mean())
