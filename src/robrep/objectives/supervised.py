"""Supervised objectives: standard, PGD-AT (Madry), TRADES, fast AT (FGSM-RS), Gaussian noise."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._modes import eval_mode
from ..attacks.apgd import apgd
from ..attacks.pgd import pgd_perturb
from ..errors import InputError
from .base import Objective, StepContext, register_objective

__all__ = ["Standard", "MadryAT", "Trades", "FastAT", "GaussianNoise", "Linearization", "linearization_error"]


def _acc(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == y).float().mean().detach()


class Linearization(NamedTuple):
    error: torch.Tensor  # (batch,) |CE(x_adv) - CE(x) - (x_adv - x) . grad CE(x)|
    ce_adv: torch.Tensor  # (batch,)
    ce_clean: torch.Tensor  # (batch,)
    logits_adv: torch.Tensor  # (batch, classes)


def linearization_error(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                        create_graph: bool = False) -> Linearization:
    """Per-example ``|CE(x_adv) - CE(x) - (x_adv - x) . grad_x CE(x)|``: how far the loss is from
    its first-order Taylor model along the attack's perturbation (Qin et al. 2019, "local
    linearity regularization"). Returns the error, both losses (each of shape (batch,)) and the
    adversarial logits. With ``create_graph`` the error back-propagates into the weights through
    ``grad_x CE(x)`` too (double backprop); without it, only through the two losses. Clean and
    adversarial inputs go through the model in one batch.

    Qin et al. maximise this error itself over the ball with an inner loop of its own and add a
    gradient term ``|d . grad CE(x)|``; the ``llr`` option of the ``pgd`` objective evaluates it at
    the adversarial-training perturbation instead, which costs no extra attack."""
    n = len(x)
    xc = x.detach().clone().requires_grad_(True)
    out = model(torch.cat([x_adv.detach(), xc]))
    ce = F.cross_entropy(out, torch.cat([y, y]), reduction="none")
    ce_adv, ce_clean = ce[:n], ce[n:]
    (g,) = torch.autograd.grad(ce_clean.sum(), xc, create_graph=create_graph, retain_graph=True)
    delta = (x_adv - x).detach()
    err = (ce_adv - ce_clean - (delta * g).flatten(1).sum(1)).abs()
    return Linearization(err, ce_adv, ce_clean, out[:n])


@register_objective("standard", help="cross-entropy on clean inputs")
class Standard(Objective):
    def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
        out = model(x)
        loss = F.cross_entropy(out, y)
        return loss, {"loss": loss.detach(), "acc": _acc(out, y)}


@register_objective("pgd", help="PGD adversarial training (Madry et al. 2018): CE on PGD examples; llr=w adds a local-linearity penalty (Qin et al. 2019)")
class MadryAT(Objective):
    """``min E max_{delta in ball} CE(f(x + delta), y)`` with a K-step PGD inner maximisation.

    Args:
        steps: PGD steps in training (default 10).
        step_size: PGD step (default 2.5 eps / steps).
        random_start: uniform start in the ball.
        attack_eval_mode: run the attack with the model in eval mode (BatchNorm statistics are
            not updated by adversarial batches during the attack).
        mix: fraction of the loss on clean inputs (0 = pure adversarial training).
        attack: inner maximisation, ``"pgd"`` (fixed step, last iterate) or ``"apgd"`` (APGD-CE
            with ``steps`` iterations and its own step-size schedule, Croce & Hein 2020; the best
            iterate per example; ``step_size`` and ``random_start`` do not apply).
        llr: weight of a local-linearity penalty (Qin et al. 2019), the mean over the batch of
            :func:`linearization_error` at the attack's perturbation; 0 (default) turns it off.
            It keeps the loss close to linear inside the ball, where small fixed-step attacks
            and large-step ones (APGD) find the same maxima; costs a double backprop per batch.
    """

    needs_threat = True

    def __init__(self, steps: int = 10, step_size: float | None = None, random_start: bool = True,
                 attack_eval_mode: bool = True, mix: float = 0.0, attack: str = "pgd", llr: float = 0.0,
                 **kw: Any) -> None:
        super().__init__(**kw)
        if not llr >= 0:
            raise InputError(f"pgd training needs llr >= 0 (the local-linearity weight), got {llr}")
        if steps < 1:
            raise InputError(f"pgd training needs steps >= 1, got {steps}")
        if attack not in ("pgd", "apgd"):
            raise InputError(f"pgd training: attack must be 'pgd' or 'apgd', got {attack!r}")
        if attack == "apgd" and step_size is not None:
            raise InputError("pgd training with attack=apgd: APGD sets its own step sizes; drop step_size")
        self.steps, self.step_size, self.random_start = int(steps), step_size, bool(random_start)
        self.attack_eval_mode, self.mix, self.attack, self.llr = bool(attack_eval_mode), float(mix), attack, float(llr)

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        assert ctx.threat is not None
        if ctx.threat.eps == 0:
            return x
        am = ctx.attacker(model)
        with eval_mode(am, enable=self.attack_eval_mode):
            if self.attack == "apgd":
                return apgd(am, x, y, ctx.threat, steps=self.steps, loss="ce", generator=ctx.generator, check=False).x_adv
            alpha = self.step_size if self.step_size is not None else 2.5 * ctx.threat.eps / self.steps
            # the last iterate only: no best-iterate bookkeeping and no extra forward pass
            return pgd_perturb(am, x, y, ctx.threat, steps=self.steps, step_size=alpha, random_start=self.random_start,
                               generator=ctx.generator, check=False)

    def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
        if self.llr > 0 and (isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod")):
            raise InputError("pgd training with llr > 0 needs a double backprop, which neither "
                             "distributed training nor --compile supports; drop one of them")
        x_adv = self.adversarial(model, x, y, ctx)
        if self.llr > 0:
            lin = linearization_error(model, x, x_adv, y, create_graph=True)
            loss = (1 - self.mix) * lin.ce_adv.mean() + self.mix * lin.ce_clean.mean() + self.llr * lin.error.mean()
            return loss, {"loss": loss.detach(), "llr": lin.error.mean().detach(), "adv_acc": _acc(lin.logits_adv, y)}
        if self.mix > 0:  # one forward per backward (DDP): clean and adversarial in one batch
            out_all = model(torch.cat([x_adv, x]))
            out = out_all[: len(x)]
            loss = (1 - self.mix) * F.cross_entropy(out, y) + self.mix * F.cross_entropy(out_all[len(x) :], y)
        else:
            out = model(x_adv)
            loss = F.cross_entropy(out, y)
        return loss, {"loss": loss.detach(), "adv_acc": _acc(out, y)}

    def config(self) -> dict[str, Any]:
        return {"steps": self.steps, "step_size": self.step_size, "random_start": self.random_start,
                "attack_eval_mode": self.attack_eval_mode, "mix": self.mix, "attack": self.attack, "llr": self.llr}


@register_objective("fast", help="fast adversarial training: FGSM with random start (Wong et al. 2020)")
class FastAT(MadryAT):
    """One FGSM step from a uniform random start with step ``alpha = 1.25 eps`` (Wong et al.)."""

    def __init__(self, step_size_factor: float = 1.25, **kw: Any) -> None:
        kw.setdefault("steps", 1)
        if kw.get("attack", "pgd") != "pgd":
            raise InputError("fast adversarial training is one FGSM step; use --objective pgd for attack=apgd")
        super().__init__(**kw)
        self.step_size_factor = float(step_size_factor)

    def adversarial(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
        assert ctx.threat is not None
        if ctx.threat.eps == 0:
            return x
        alpha = self.step_size if self.step_size is not None else self.step_size_factor * ctx.threat.eps
        am = ctx.attacker(model)
        with eval_mode(am, enable=self.attack_eval_mode):
            return pgd_perturb(am, x, y, ctx.threat, steps=1, step_size=alpha, random_start=True,
                               generator=ctx.generator, check=False)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "step_size_factor": self.step_size_factor}


@register_objective("trades", help="TRADES (Zhang et al. 2019): CE(clean) + beta * KL(clean || adversarial)")
class Trades(Objective):
    """``CE(f(x), y) + beta * KL(p(x) || p(x'))`` with x' maximising the KL by PGD from
    ``x + 0.001 N(0, I)`` (the reference code's start)."""

    needs_threat = True

    def __init__(self, beta: float = 6.0, steps: int = 10, step_size: float | None = None, attack_eval_mode: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.beta, self.steps, self.step_size, self.attack_eval_mode = float(beta), int(steps), step_size, bool(attack_eval_mode)

    def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
        assert ctx.threat is not None
        thr = ctx.threat
        am = ctx.attacker(model)
        with eval_mode(am, enable=self.attack_eval_mode):
            with torch.no_grad():
                p_clean = F.softmax(am(x), 1)
            if thr.eps > 0:
                dev = ctx.generator.device if ctx.generator is not None else x.device
                x_adv = thr.project(x + 0.001 * torch.randn(x.shape, generator=ctx.generator, device=dev).to(x.device), x)
                alpha = self.step_size if self.step_size is not None else 2.5 * thr.eps / self.steps
                for _ in range(self.steps):
                    x_adv.requires_grad_(True)
                    kl = F.kl_div(F.log_softmax(am(x_adv), 1), p_clean, reduction="sum")
                    (g,) = torch.autograd.grad(kl, x_adv)
                    x_adv = thr.project(x_adv.detach() + thr.ascent(g, alpha), x)
            else:
                x_adv = x
        out_all = model(torch.cat([x, x_adv.detach()]))  # one forward per backward (DDP)
        out, out_adv = out_all[: len(x)], out_all[len(x) :]
        nat = F.cross_entropy(out, y)
        rob = F.kl_div(F.log_softmax(out_adv, 1), F.softmax(out, 1), reduction="batchmean")
        loss = nat + self.beta * rob
        return loss, {"loss": loss.detach(), "acc": _acc(out, y), "adv_acc": _acc(out_adv, y)}

    def config(self) -> dict[str, Any]:
        return {"beta": self.beta, "steps": self.steps, "step_size": self.step_size}


@register_objective("noise", help="Gaussian noise augmentation N(0, sigma^2) (Cohen et al. 2019)")
class GaussianNoise(Objective):
    """CE on ``x + sigma * N(0, I)`` (not clipped, as in Cohen et al.'s code)."""

    def __init__(self, sigma: float = 0.25, **kw: Any) -> None:
        super().__init__(**kw)
        if sigma < 0:
            raise InputError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
        dev = ctx.generator.device if ctx.generator is not None else x.device
        noise = torch.randn(x.shape, generator=ctx.generator, device=dev).to(x.device)
        out = model(x + self.sigma * noise)
        loss = F.cross_entropy(out, y)
        return loss, {"loss": loss.detach(), "acc": _acc(out, y)}

    def config(self) -> dict[str, Any]:
        return {"sigma": self.sigma}
