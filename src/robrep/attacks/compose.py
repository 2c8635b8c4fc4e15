"""Attack registry and composition (cascade over the points still robust)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._registry import Registry
from ..threats import ThreatModel
from .apgd import apgd
from .apgd_targeted import apgd_t
from .fab import fab, fab_t
from .pgd import AttackResult, fgsm, pgd
from .protocols import get_protocol, list_protocols, protocol_attack
from .square import square

__all__ = ["ATTACKS", "Attack", "create_attack", "is_protocol", "list_attacks", "worst_case"]

Attack = Callable[..., AttackResult]
ATTACKS: Registry[Attack] = Registry("attack")

ATTACKS.add("pgd", pgd, help="PGD with random start, restarts, best iterate (Madry et al. 2018)")
ATTACKS.add("fgsm", fgsm, help="one signed-gradient step (Goodfellow et al. 2015)")
ATTACKS.add("apgd-ce", functools.partial(apgd, loss="ce"), help="Auto-PGD on cross-entropy (Croce & Hein 2020)")
ATTACKS.add("apgd-dlr", functools.partial(apgd, loss="dlr"), help="Auto-PGD on the DLR loss (Croce & Hein 2020)")


def worst_case(attacks: Sequence[Attack]) -> Attack:
    """Run ``attacks`` in order, each on the examples the previous ones did not break, and keep
    every success (AutoAttack's cascade)."""

    def run(model: nn.Module, x: torch.Tensor, target: torch.Tensor, threat: ThreatModel, **kw: Any) -> AttackResult:
        x_adv, loss = x.clone(), torch.full((x.shape[0],), float("nan"), device=x.device)
        success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        queries = 0
        for i, atk in enumerate(attacks):
            idx = torch.nonzero(~success).flatten()
            if len(idx) == 0:
                break
            r = atk(model, x[idx], target[idx], threat, check=(i == 0), **kw)
            queries += r.queries
            first = i == 0
            upd = torch.ones_like(r.success) if first else r.success
            x_adv[idx[upd]], loss[idx[upd]] = r.x_adv[upd], r.loss[upd]
            success[idx] = success[idx] | r.success
        return AttackResult(x_adv, loss, success, queries)

    return run


ATTACKS.add("apgd", worst_case([ATTACKS.get("apgd-ce"), ATTACKS.get("apgd-dlr")]),
            help="APGD-CE then APGD-DLR on the survivors (the untargeted half of AutoAttack)")
ATTACKS.add("apgd-t", apgd_t, help="APGD on the targeted DLR loss, 9 target classes ranked by the logits (Croce & Hein 2020)")
ATTACKS.add("fab-t", fab_t, help="targeted FAB, minimal-distance attack, 9 target classes (Croce & Hein 2020)")
ATTACKS.add("fab", fab, help="untargeted FAB with 5 restarts (Croce & Hein 2020)")
ATTACKS.add("square", square, help="Square Attack, black-box random search, 5,000 queries (Andriushchenko et al. 2020)")
for _name in list_protocols():
    ATTACKS.add(_name, protocol_attack(_name), help=f"protocol v{get_protocol(_name).version}: {get_protocol(_name).help}")


def list_attacks() -> list[str]:
    return ATTACKS.names()


def is_protocol(name: str) -> bool:
    """Whether ``name`` is a protocol (a cascade whose result has per-stage verdicts and flags)."""
    return name in list_protocols()


def create_attack(name: str, **defaults: Any) -> Attack:
    """An attack by name with default keyword arguments bound: ``create_attack("pgd", steps=50)``,
    ``create_attack("autoattack-standard")``.

    ``precision="auto"|"bf16"`` (default ``"fp32"``: the attack itself) runs it in bf16 autocast
    with float32 verdicts and a float32 re-check (:func:`robrep.attacks.precision.with_precision`);
    ``recheck_steps=`` sets the re-check's length. A protocol takes these settings itself
    (``run_protocol(..., precision=)``: bf16 stages, each judged and re-checked in float32, and
    the per-stage result kept)."""
    from .precision import with_precision

    fn = ATTACKS.get(name)
    if is_protocol(name):
        return functools.partial(fn, **defaults) if defaults else fn
    precision = defaults.pop("precision", "fp32")
    recheck = {k: defaults.pop(k) for k in ("recheck_steps", "recheck_step_size", "share_steps") if k in defaults}
    fn = functools.partial(fn, **defaults) if defaults else fn
    return with_precision(fn, precision, **recheck)
