"""Named, versioned attack protocols: AutoAttack's versions (Croce & Hein, ICML 2020) and a
faster one, run as a cascade over the points still robust.

==========================  =======  ================================================================
protocol                    version  stages (each on the points the previous ones did not break)
==========================  =======  ================================================================
``autoattack-standard``     1        APGD-CE (100 steps), APGD-T (9 targets x 100), FAB-T (9 x 100),
                                     Square (5,000 queries): the standard that RobustBench reports
``autoattack-plus``         1        APGD-CE and APGD-DLR (5 restarts each), FAB (5 restarts),
                                     Square, APGD-T, FAB-T
``autoattack-rand``         1        APGD-CE and APGD-DLR with the gradient averaged over 20 calls
                                     (EOT), for models whose output is random
``fast``                    2        APGD-CE (100 steps), APGD-T (100 steps) on the 3 targets
                                     nearest by the linear model of the logits (MALT, Melamed et al.
                                     2024), then Square (5,000 queries) on the 15 % of the points
                                     still robust with the largest margin reached (``select``); no
                                     FAB. Version 1 had no Square stage
==========================  =======  ================================================================

For an l1 threat model, ``autoattack-standard`` runs l1-APGD-CE (5 restarts) and l1-APGD-T (5
targets), both with the 3 eps, 2 eps, eps schedule of Croce & Hein (ICML 2021, "Mind the box";
:mod:`robrep.attacks.apgd_l1`): the settings the reference implementation gives its standard for
``norm='L1'``. The reference's list for L1 also names FAB-T and Square, which robrep implements
for linf and l2 only; the other protocols have no l1 version.

Every stage exits early on the points it broke. Each stage starts from a generator seeded with
the same stage seed (``seed``, or one draw from ``generator``), as the reference seeds each of its
attacks, so a seed reproduces the reference's random starts and Square queries.

A protocol is an attack (``attack(model, x, y, threat, ...) -> CascadeResult``): ``evaluate``,
``robrep eval --attack NAME`` and ``create_attack(NAME)`` take its name. Before attacking, it
checks the model: non-finite logits and (for a deterministic protocol) an output that changes
between two identical calls raise :class:`~robrep.errors.InputError`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._registry import Registry
from ..errors import InputError
from ..threats import ThreatModel
from .apgd_targeted import PassCounter, apgd_cascade, apgd_t
from .fab import fab, fab_t
from .losses import cw_margin
from .pgd import AttackResult, _validate
from .precision import Fp32Check, bf16_attack_model
from .square import square

__all__ = ["CascadeResult", "Protocol", "PROTOCOLS", "STAGE_ATTACKS", "run_protocol", "get_protocol", "list_protocols",
           "output_changes", "clip_targets"]

STAGE_ATTACKS: dict[str, Callable[..., AttackResult]] = {
    "apgd-ce": functools.partial(apgd_cascade, loss="ce"),
    "apgd-dlr": functools.partial(apgd_cascade, loss="dlr"),
    "apgd-t": apgd_t,
    "fab-t": fab_t,
    "fab": fab,
    "square": square,
}
_STEPPED = {"apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "fab"}
_TARGETED = {"apgd-t", "fab-t"}


@dataclass(frozen=True)
class Protocol:
    """A named cascade of attacks.

    Attributes:
        name, version: the protocol's identity (recorded in results and run fingerprints).
        stages: ``(stage name, attack name in STAGE_ATTACKS, settings)`` in order. A setting
            ``select`` (a share in (0, 1]) makes the runner attack, of the points still robust,
            only that share (rounded up) with the largest margin (other class's logit minus the
            true one's) reached by the earlier stages' points: where an expensive stage is most
            likely to break something.
        randomized: made for models whose output is random (EOT); the deterministic protocols
            refuse such models.
        help: one line for ``robrep list attacks``.
        l1_stages: the stages for an l1 threat model (None: the protocol has no l1 version).
    """

    name: str
    version: str
    stages: tuple[tuple[str, str, dict[str, Any]], ...]
    randomized: bool = False
    help: str = ""
    l1_stages: tuple[tuple[str, str, dict[str, Any]], ...] | None = None

    def for_norm(self, norm: str) -> Protocol:
        """The protocol as it runs for threat norm ``norm`` (its l1 stages for ``"l1"``)."""
        if norm != "l1":
            return self
        if self.l1_stages is None:
            with_l1 = [p for p in PROTOCOLS.names() if PROTOCOLS.get(p).l1_stages is not None]
            raise InputError(f"{self.name} supports linf and l2 threat models, not {norm}; for l1 use "
                             f"{', '.join(with_l1)} or pgd")
        return Protocol(self.name, self.version, self.l1_stages, self.randomized, self.help)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "randomized": self.randomized,
                "stages": [{"stage": s, "attack": a, **kw} for s, a, kw in self.stages]}


@dataclass(frozen=True)
class CascadeResult(AttackResult):
    """An :class:`AttackResult` plus what each stage did.

    Attributes:
        stages: ``(stage name, (B,) bool)``: points broken by that stage or an earlier one.
        grad_bad: (B,) bool: zero or non-finite input gradient of the margin at the clean point.
        randomized: (B,) bool only when the check ran on a randomized protocol: the output
            changed between two identical calls.
        notes: things the protocol adjusted (e.g. target counts clipped to ``C - 1``).
        passes: example-passes spent (``grad``: forward+backward, ``forward``: forward only; with
            bf16 stages also ``fp32_recheck_grad`` / ``fp32_recheck_forward``: the part of them
            spent on float32 verdicts and re-checks).
        protocol: the protocol's ``to_dict()``.
        precision: what the stages' passes ran in (``"fp32"`` or ``"bf16"``; the verdicts are
            float32 either way).
    """

    stages: tuple[tuple[str, torch.Tensor], ...] = ()
    grad_bad: torch.Tensor | None = None
    randomized: bool = False
    notes: tuple[str, ...] = ()
    passes: dict[str, int] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"


PROTOCOLS: Registry[Protocol] = Registry("attack protocol")


def _add(p: Protocol) -> None:
    PROTOCOLS.add(p.name, p, help=p.help)


_add(Protocol("autoattack-standard", "1", (
    ("apgd-ce", "apgd-ce", {"steps": 100}),
    ("apgd-t", "apgd-t", {"steps": 100, "targets": 9}),
    ("fab-t", "fab-t", {"steps": 100, "targets": 9}),
    ("square", "square", {"queries": 5000}),
), help="AutoAttack standard: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000 queries), cascaded; "
        "l1: l1-APGD-CE (5 restarts) and l1-APGD-T (5 targets)",
    l1_stages=(  # Croce & Hein 2021: the 3 eps, 2 eps, eps schedule ("largereps") in both
        ("apgd-ce", "apgd-ce", {"steps": 100, "restarts": 5, "largereps": True}),
        ("apgd-t", "apgd-t", {"steps": 100, "targets": 5, "largereps": True}),
    )))
_add(Protocol("autoattack-plus", "1", (
    ("apgd-ce", "apgd-ce", {"steps": 100, "restarts": 5}),
    ("apgd-dlr", "apgd-dlr", {"steps": 100, "restarts": 5}),
    ("fab", "fab", {"steps": 100, "restarts": 5}),
    ("square", "square", {"queries": 5000}),
    ("apgd-t", "apgd-t", {"steps": 100, "targets": 9}),
    ("fab-t", "fab-t", {"steps": 100, "targets": 9}),
), help="AutoAttack+: APGD-CE/DLR and FAB with 5 restarts, Square, APGD-T, FAB-T"))
_add(Protocol("autoattack-rand", "1", (
    ("apgd-ce", "apgd-ce", {"steps": 100, "eot_iter": 20}),
    ("apgd-dlr", "apgd-dlr", {"steps": 100, "eot_iter": 20}),
), randomized=True, help="AutoAttack for randomized models: APGD-CE and APGD-DLR with gradients averaged over 20 calls (EOT)"))
_add(Protocol("fast", "2", (
    ("apgd-ce", "apgd-ce", {"steps": 100}),
    ("apgd-t", "apgd-t", {"steps": 100, "targets": 3, "target_order": "malt"}),
    ("square", "square", {"queries": 5000, "select": 0.15}),
), help="APGD-CE, APGD-T on the 3 targets nearest by the linear model of the logits (MALT), then Square (5,000 queries) "
        "on the 15 % of the points left that came closest to the boundary: a fraction of the standard's passes"))


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)


def list_protocols() -> list[str]:
    return PROTOCOLS.names()


def clip_targets(targets: int, num_classes: int, stage: str) -> tuple[int, str | None]:
    """``min(targets, C - 1)`` and, when that clipped, a note saying so."""
    if targets < 1:
        raise InputError(f"{stage}: the number of target classes must be >= 1, got {targets}")
    if targets > num_classes - 1:
        return num_classes - 1, (f"{stage}: {targets} target classes asked but the model has {num_classes} classes; "
                                 f"used {num_classes - 1} (all other classes)")
    return targets, None


@torch.no_grad()
def output_changes(model: nn.Module, x: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    """(B,) bool: the model's output on ``x`` differs between two identical calls (normalized
    l2 difference above ``tol``, or a different prediction), as AutoAttack's randomness check."""
    a, b = model(x).float(), model(x).float()
    na = a / (a.norm(dim=1, keepdim=True) + 1e-10)
    nb = b / (b.norm(dim=1, keepdim=True) + 1e-10)
    return ((na - nb).norm(dim=1) > tol) | (a.argmax(1) != b.argmax(1))


def _margin_grad_bad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, counter: PassCounter) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(cw_margin(model(xr), y).sum(), xr)
    counter.grad += x.shape[0]
    g = g.flatten(1)
    return (g == 0).all(1) | ~torch.isfinite(g).all(1)


def run_protocol(
    name: str | Protocol,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    steps: int | None = None,
    targets: int | None = None,
    queries: int | None = None,
    restarts: int | None = None,
    eot_iter: int | None = None,
    check: bool = True,
    counter: PassCounter | None = None,
    precision: str = "fp32",
    recheck_steps: int = 3,
    recheck_step_size: float | None = None,
) -> CascadeResult:
    """Run protocol ``name`` on ``(x, target)`` within ``threat``.

    Args:
        x: (B, C, H, W) images in [0,1]; target: (B,) true labels. Every point is attacked
            (``evaluate`` passes only the correctly classified ones).
        generator, seed: the stage seed is ``seed`` when given, else one draw from ``generator``.
        steps, targets, queries, restarts, eot_iter: override the protocol's budgets (for quick
            runs and tests); ``targets`` above ``C - 1`` is clipped, with a note.
        precision: ``fp32`` (default; the stages as they are), ``bf16`` or ``auto`` (bf16 where
            the device has native bf16): every stage's gradient and forward passes run on a bf16
            copy of the model, and after every run of a stage (each restart, each APGD-T / FAB-T
            target) :class:`~robrep.attacks.precision.Fp32Check` judges its points from float32
            logits and gives every point not confirmed broken ``recheck_steps`` float32 steps
            (length ``recheck_step_size``, default ``eps / 10``) of the stage's objective from its
            best iterate. Only float32-confirmed points leave the cascade, so a point bf16 called
            broken on a rounding error goes on to the next stage, and every verdict is float32.

    Returns:
        :class:`CascadeResult`; ``success`` = broken by some stage; ``stages`` the cumulative
        success after each stage.
    """
    proto = name if isinstance(name, Protocol) else get_protocol(name)
    if check:
        _validate(model, x, threat, 1, 1)
    proto = proto.for_norm(threat.norm)  # its l1 stages, or an error naming the protocols that have them
    if queries is not None and (not isinstance(queries, int) or queries <= 0):
        raise InputError(f"square needs a query budget > 0, got {queries!r}; use e.g. queries=5000")
    if steps is not None and steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if recheck_steps < 0:
        raise InputError(f"recheck_steps must be >= 0, got {recheck_steps}")
    x = x.detach()
    b = x.shape[0]
    counter = counter if counter is not None else PassCounter()
    net = bf16_attack_model(model, x, precision) if b else None  # None: the stages run in float32
    verify = (Fp32Check(model, threat, steps=recheck_steps, step_size=recheck_step_size, counter=counter)
              if net is not None else None)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item()) if generator is not None else 0
    with torch.no_grad():
        z = model(x)
    counter.forward += b
    if not torch.isfinite(z).all():
        bad = int((~torch.isfinite(z)).any(1).sum())
        raise InputError(f"the model returned non-finite logits (NaN or inf) for {bad} of {b} images; "
                         "fix the model (or its weights) before measuring robustness")
    num_classes = z.shape[1]
    changes = output_changes(model, x)
    counter.forward += 2 * b
    randomized = bool(changes.any())
    if randomized and not proto.randomized:
        raise InputError(f"flag randomized-output: the model's output changed between two identical calls on "
                         f"{int(changes.sum())} of {b} images, so {proto.name} would overstate its robustness; "
                         "use --attack autoattack-rand (gradients averaged over 20 calls)")
    grad_bad = _margin_grad_bad(model, x, target, counter)
    success = torch.zeros(b, dtype=torch.bool, device=x.device)
    x_adv = x.clone()
    # the largest margin (other class's logit minus the true one's) reached so far per point, for
    # stages that run only on the points closest to the boundary ("select")
    closest = cw_margin(z, target) if any("select" in kw for _, _, kw in proto.stages) else None
    stages: list[tuple[str, torch.Tensor]] = []
    notes: list[str] = []
    for stage, attack, kw in proto.stages:
        kw = dict(kw)
        if steps is not None and attack in _STEPPED:
            kw["steps"] = steps
        if restarts is not None and "restarts" in kw:
            kw["restarts"] = restarts
        if eot_iter is not None and "eot_iter" in kw:
            kw["eot_iter"] = eot_iter
        if attack == "square" and queries is not None:
            kw["queries"] = queries
        if attack in _TARGETED:
            want = targets if targets is not None else kw["targets"]
            kw["targets"], note = clip_targets(int(want), num_classes, stage)
            if note and note not in notes:
                notes.append(note)
        if attack in ("apgd-dlr", "apgd-t") and num_classes < (4 if attack == "apgd-t" else 3):
            notes.append(f"{stage}: skipped, the DLR loss needs at least {4 if attack == 'apgd-t' else 3} classes")
            stages.append((stage, success.clone()))
            continue
        idx = torch.nonzero(~success).flatten()
        share = kw.pop("select", None)
        if share is not None and len(idx) > 0:
            # the share of the points still robust that came closest to the boundary so far
            k = min(len(idx), math.ceil(share * len(idx)))
            order = torch.sort(-closest[idx], stable=True).indices
            idx = idx[order[:k]].sort().values
            note = (f"{stage}: ran only on the {100 * share:g} % of the points still robust (per batch) with the "
                    "largest margin reached so far; the others were not attacked by this stage")
            if note not in notes:
                notes.append(note)
        if len(idx) > 0:
            g = torch.Generator(device="cpu").manual_seed(seed)
            if verify is None:
                r = STAGE_ATTACKS[attack](model, x[idx], target[idx], threat, generator=g, check=False, counter=counter, **kw)
            else:
                r = STAGE_ATTACKS[attack](net, x[idx], target[idx], threat, generator=g, check=False, counter=counter,
                                          verify=verify, **kw)
            success[idx[r.success]] = True
            x_adv[idx[r.success]] = r.x_adv[r.success]
            if closest is not None and not r.success.all():
                left = ~r.success
                with torch.no_grad():
                    m = cw_margin(model(r.x_adv[left]), target[idx[left]])
                counter.forward += int(left.sum())
                closest[idx[left]] = torch.maximum(closest[idx[left]], m)
        stages.append((stage, success.clone()))
    with torch.no_grad():
        margin = -cw_margin(model(x_adv), target) if b else torch.zeros(0)
    counter.forward += b
    passes = {"grad": counter.grad, "forward": counter.forward}
    if verify is not None:
        passes |= {"fp32_recheck_grad": verify.passes["grad"], "fp32_recheck_forward": verify.passes["forward"]}
    return CascadeResult(x_adv, margin, success, counter.grad + counter.forward, tuple(stages), grad_bad, randomized,
                         tuple(notes), passes, proto.to_dict(), "fp32" if verify is None else "bf16")


def protocol_attack(name: str) -> Callable[..., CascadeResult]:
    """``run_protocol`` with the protocol bound: an attack for the ``ATTACKS`` registry."""

    def attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor, threat: ThreatModel, **kw: Any) -> CascadeResult:
        return run_protocol(name, model, x, target, threat, **kw)

    attack.__doc__ = get_protocol(name).help
    attack.protocol = get_protocol(name)  # type: ignore[attr-defined]
    return attack
