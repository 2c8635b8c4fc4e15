"""Unsupervised representation learning by (worst-case) mutual-information maximization.

Zhu, Zhang & Evans, *Learning Adversarially Robust Representations via Worst-Case Mutual
Information Maximization*, ICML 2020 (docs/methods/vulnerability.md):

    max_g  I(X; g(X)) - beta * RV_eps(g),   RV_eps = I(X; g(X)) - inf_{W_inf(mu', mu) <= eps} I(X'; g(X'))

* ``mi``: standard MI maximization (Deep InfoMax; beta = 0).
* ``worst-case-mi``: per batch, PGD on the inputs (model and critic in eval mode, the batch
  estimate as a joint loss, gradients only through g(x')) finds x', then the loss is
  ``-[(1 - beta) I(x; g(x)) + beta I(x'; g(x'))]``; beta = 1 (default, the paper's code) keeps
  only the adversarial term.

The model is an encoder (e.g. ``dim-encoder``) whose output is the representation; the critic
(``extra_modules()``) is trained jointly and checkpointed beside the model.

Note: these objectives use the critics, bounds and inner optimizer of :mod:`robrep.info`, the
same implementation as ``robrep vulnerability``, the demo and the profile card; the inner
optimizer ``batch_pgd`` is ``robrep.attacks.pgd_perturb`` run on the batch estimate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._modes import eval_mode
from ..errors import InputError
from ..info.critics import create_critic
from ..info.estimate import batch_pgd
from ..info.mi_bounds import get_bound
from .base import Objective, StepContext, register_objective

__all__ = ["MIMaximization", "WorstCaseMIMaximization"]


@register_objective("mi", help="unsupervised MI maximization with a critic (Deep InfoMax; Zhu et al. 2020 baseline)")
class MIMaximization(Objective):
    """Maximise a variational MI bound between images and the encoder output.

    Args:
        estimator: ``dv`` (paper default), ``jsd`` or ``infonce``.
        critic: critic name (``dim``: the paper's local/global critic).
        critic_hidden: K, the critic embedding (paper 2048; smaller on CPU).
        critic_width: channels of the critic's local conv branch (paper 64).
    """

    supervised = False
    needs_threat = False

    def __init__(self, estimator: str = "dv", critic: str = "dim", critic_hidden: int = 2048, critic_width: int = 64, **kw: Any) -> None:
        super().__init__(**kw)
        self.bound = get_bound(estimator)
        self.critic_name = critic
        self.critic_hidden = int(critic_hidden)
        self.critic_width = int(critic_width)
        self.critic: nn.Module | None = None

    def setup(self, model: nn.Module, example: torch.Tensor) -> None:
        with eval_mode(model), torch.no_grad():
            z = model(example[:2])
        if z.ndim != 2:
            raise InputError(f"the encoder must output (N, D) representations, got {tuple(z.shape)}")
        kw: dict[str, Any] = {"hidden": self.critic_hidden}
        if self.critic_name == "dim":
            kw["width"] = self.critic_width
        self.critic = create_critic(self.critic_name, tuple(example.shape[1:]), z.shape[1], **kw).to(example.device)

    def extra_modules(self) -> nn.Module | None:
        return self.critic

    def _critic(self) -> nn.Module:
        if self.critic is None:
            raise InputError("call setup(model, example_batch) before loss() (robrep.train does it)")
        return self.critic

    def mi(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The training bound on the batch (scalar, differentiable in model and critic)."""
        return self.bound.train(self._critic()(x, model(x)))

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        v = self.mi(model, x)
        return -v, {"mi": v.detach()}

    def config(self) -> dict[str, Any]:
        return {"estimator": self.bound.name, "critic": self.critic_name, "critic_hidden": self.critic_hidden,
                "critic_width": self.critic_width}


@register_objective("worst-case-mi", help="worst-case MI maximization, MI - beta*vulnerability (Zhu et al. 2020)")
class WorstCaseMIMaximization(MIMaximization):
    """Maximise ``(1 - beta) I(x; g(x)) + beta I(x'; g(x'))`` with x' the batch-PGD worst case.

    Args:
        beta: vulnerability coefficient (1 = worst-case MI, the paper's setting; 0 = ``mi``).
        attack_steps: PGD steps (paper: 7).
        step_size: PGD step (paper: 0.01 at eps 8/255; default 2.5 eps / steps).
        others: as :class:`MIMaximization`.
    """

    needs_threat = True

    def __init__(self, beta: float = 1.0, attack_steps: int = 7, step_size: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0 <= beta:
            raise InputError(f"beta must be >= 0, got {beta}")
        self.beta = float(beta)
        self.attack_steps = int(attack_steps)
        self.step_size = step_size

    def worst_case(self, model: nn.Module, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """x' in the eps-ball lowering the batch MI estimate (model and critic in eval mode)."""
        if ctx.threat is None:
            raise InputError("worst-case-mi needs a threat model: give --eps")
        critic = self._critic()
        model = ctx.attacker(model)  # the unwrapped module under DDP
        with eval_mode(model, critic):
            xa, _ = batch_pgd(lambda xx: self.bound.train(critic(xx.detach(), model(xx))), x, ctx.threat,
                              steps=self.attack_steps, step_size=self.step_size)
        return xa

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        xa = self.worst_case(model, x, ctx)
        critic = self._critic()
        if self.beta == 1.0:
            v_adv = self.bound.train(critic(xa, model(xa)))
            return -v_adv, {"mi_worst": v_adv.detach()}
        n = x.shape[0]
        z = model(torch.cat([x, xa]))  # one forward per backward (DDP)
        v = self.bound.train(critic(x, z[:n]))
        v_adv = self.bound.train(critic(xa, z[n:]))
        metrics: dict[str, torch.Tensor | float] = {"mi_worst": v_adv.detach(), "mi": v.detach()}
        obj = (1 - self.beta) * v + self.beta * v_adv
        return -obj, metrics

    def config(self) -> dict[str, Any]:
        return {**super().config(), "beta": self.beta, "attack_steps": self.attack_steps, "step_size": self.step_size}
