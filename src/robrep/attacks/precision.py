"""Mixed-precision attacks with exact float32 verdicts.

:func:`with_precision` wraps any attack of the registry signature
``attack(model, x, target, threat, **kw) -> AttackResult``. With ``bf16`` (or ``auto`` on
hardware with native bf16) the attack's forward and backward passes run in bfloat16: on a
bf16 copy of the model's weights in channels-last layout (falling back to bfloat16 autocast,
which keeps float32 where an op needs it, when a layer rejects bf16 inputs). 2-3x faster on
CPUs with AMX. The iterates, the projections and the step bookkeeping stay float32 (the input
gradient arrives in float32). Attacks with an ``early_exit`` keyword (``pgd``) drop an example
from the bf16 batch at its first bf16 success (unless the caller set ``early_exit``): that point
is judged in float32 below either way, and ``x_adv`` of a success is a first-found adversarial
example rather than the one of largest loss.
Then, in float32:

1. **Verdicts**: every example is re-judged from float32 logits of the attack's best point;
   a bf16 "success" that float32 does not confirm is not counted.
2. **Re-check**: every example not broken in float32 gets a short float32 PGD
   (``recheck_steps`` steps, default 3, with the attack's loss) started from that best point;
   any float32-confirmed success along the way is kept. For PGD itself (one restart, a
   classification loss) these are the attack's last steps: PGD-10 in ``auto`` runs 7 steps in
   bf16, then the 3 float32 steps from the best bf16 iterate at the same step length, so it
   makes as many gradient passes as float32 PGD-10 (``share_steps``).

So every reported success is a float32 misclassification (never an artefact of bf16 rounding),
and the re-check can only add successes to the bf16 attack's. It cannot promise that the bf16
attack finds every example a float32 attack would (the two trajectories differ after the first
rounding); on trained models robust accuracy with ``auto`` stays within a few tenths of a point
of float32's (tests/test_precision.py and ``docs/benchmarks/speed.md``).

``fp32`` returns the attack itself: results are bit-identical to the unwrapped attack.

A protocol (``autoattack-standard``, ``fast``, ...) is not judged once at the end: a bf16 cascade
would drop from its later stages the points bf16 called broken on a rounding error. It runs
every stage on the bf16 model (:func:`bf16_attack_model`) and judges and re-checks every run of a
stage in float32 with :class:`Fp32Check` (``run_protocol(..., precision=)``); ``with_precision``
and ``create_attack`` hand a protocol its precision that way.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..runtime import PRECISIONS, _warn_once, resolve_precision
from ..threats import ThreatModel
from .apgd_targeted import dlr_targeted_loss
from .losses import AttackLoss, get_loss, is_classification_loss
from .pgd import AttackResult, Tracker, default_step_size, pgd

__all__ = ["Bf16Model", "Bf16Forward", "Fp32Check", "bf16_attack_model", "with_precision", "failing_layer", "recheck_fp32"]


def _pop(stack: list[str]) -> None:  # a forward hook must return None (else it replaces the output)
    if stack:
        stack.pop()


def failing_layer(model: nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> str | None:
    """The name of the innermost module whose forward raises under ``dtype`` autocast on ``x``
    (``""`` for the model itself), or None when the forward pass runs."""
    stack: list[str] = []
    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(lambda m, i, _n=name: stack.append(_n)))
        handles.append(mod.register_forward_hook(lambda m, i, o: _pop(stack)))
    try:
        with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype):
            model(x)
    except Exception:
        return stack[-1] if stack else ""
    finally:
        for h in handles:
            h.remove()
    return None


def _autocast_failure(model: Any, x: torch.Tensor, e: Exception) -> str:
    """What failed under bf16 autocast, naming the layer where ``model`` is a module."""
    layer = failing_layer(model, x[:1]) if isinstance(model, nn.Module) else None
    where = (f"layer {layer!r} ({type(model.get_submodule(layer)).__name__})" if layer else
             "the model's forward pass" if layer == "" or not isinstance(model, nn.Module) else "the backward pass")
    return f"the model fails under bf16 autocast in {where}: {str(e).splitlines()[0][:200]}"


class _ChannelsLastView(nn.Module):
    """The same model with its 4-D parameters as channels-last copies (NHWC): oneDNN's bf16
    convolutions and GPU tensor cores run fastest in that layout. Shares nothing writable with
    ``model`` (the copies are detached); used only inside an attack, where no parameter
    gradient is needed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = [model]  # a list: not registered as a submodule
        self.params = {n: (t.detach().contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t.detach())
                       for n, t in list(model.named_parameters()) + list(model.named_buffers())}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.func.functional_call(self.inner[0], self.params, (x,))


class _Bf16Copy(nn.Module):
    """The model computed entirely in bfloat16: a bf16 copy of it (4-D weights channels-last,
    parameters frozen), the input cast to bf16 (channels-last), the output cast back to float32.
    Faster than autocast on CPUs (no per-op casts: PGD-10 on the small CNN measured 2.9x float32
    against 1.7x under autocast); the gradient w.r.t. the float32 input arrives in float32.
    Made once per attack call, so it always reflects the model's current weights."""

    def __init__(self, model: nn.Module, channels_last: bool = True) -> None:
        super().__init__()
        net = copy.deepcopy(model)
        for prm in net.parameters():
            prm.requires_grad_(False)
        net = net.to(torch.bfloat16)
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).float()


class _Fp32ChannelsLastCopy(nn.Module):
    """A float32 copy of the model with its 4-D weights channels-last (NHWC), parameters frozen,
    images made channels-last on entry: the same float32 function, evaluated in the layout
    oneDNN's convolutions run fastest in (input-gradient passes of the small MNIST CNN 1.3x
    faster than in the default layout). Used for the gradient passes of the float32 re-check;
    its successes are confirmed on the model itself."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        net = copy.deepcopy(model)
        for prm in net.parameters():
            prm.requires_grad_(False)
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))


class Bf16Model(nn.Module):
    """``model`` computed in bfloat16 with float32 outputs: a bf16 copy of its weights
    (channels-last where 4-D) applied to the bf16-cast input, ``Bf16Model(model)(x) =
    float(model_bf16(bf16(x)))``. The copy is taken at construction: build the wrapper after
    training. Where a layer rejects bf16 inputs, it runs ``model`` under bf16 autocast instead.

    This is another function than ``model``: logits differ from float32 ones by bf16 rounding
    (a few 1e-3 relative), so near-ties can change the predicted class. Randomized smoothing run
    on it (``robrep certify --precision bf16``) certifies the smoothed version of *this*
    classifier: the guarantee holds for predictions computed the same way (in bf16), not for
    the float32 model. The wrapped model is a registered submodule (``model``), so run
    fingerprints of the wrapper differ from those of the float32 model."""

    def __init__(self, model: nn.Module, channels_last: bool = True) -> None:
        super().__init__()
        self.model = model
        try:
            self._copy: list[nn.Module] = [_Bf16Copy(model, channels_last)]
        except Exception:  # not copyable: autocast
            self._copy = []

    def train(self, mode: bool = True) -> Bf16Model:
        super().train(mode)
        for c in self._copy:
            c.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._copy:
            try:
                return self._copy[0](x)
            except RuntimeError:
                self._copy = []
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.model(x)
        return out.float()


class Bf16Forward:
    """A forward-only map (feature extraction) in ``precision`` with float32 outputs.

    ``fn`` is a module (run as :class:`Bf16Model`: a bf16 copy, else bf16 autocast) or any
    callable (run under bf16 autocast); with ``fp32``, or ``auto`` where ``device`` lacks native
    bf16, it is ``fn`` itself. Where the bf16 forward fails, ``bf16`` raises an
    :class:`~robrep.errors.InputError` naming the layer, and ``auto`` warns once and continues
    in float32. ``ran`` says what computed the outputs (``"bf16"`` or ``"fp32"``).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], precision: str = "auto",
                 device: str | torch.device = "cpu") -> None:
        self.fn, self.precision = fn, precision
        self.ran = resolve_precision(precision, device)
        self._fast = Bf16Model(fn) if self.ran == "bf16" and isinstance(fn, nn.Module) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.ran == "fp32":
            return self.fn(x)
        try:
            if self._fast is not None:
                return self._fast(x)
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return self.fn(x).float()
        except RuntimeError as e:
            msg = _autocast_failure(self.fn, x, e)
            if self.precision == "bf16":
                raise InputError(f"{msg}; run with --precision fp32") from e
            _warn_once("autocast-fallback", f"{msg}; precision auto falls back to fp32 for this model")
            self.ran = "fp32"
            return self.fn(x)


class _AutocastModel(nn.Module):
    """``model`` under bf16 autocast with float32 outputs (layers that insist on float32 stay float32)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model(x).float()


def bf16_attack_model(model: nn.Module, x: torch.Tensor, precision: str = "auto",
                      channels_last: bool = True) -> nn.Module | None:
    """The model an attack's bf16 passes run on, or None where they run in float32.

    ``precision`` ``fp32``, or ``auto`` where ``x``'s device lacks native bf16: None. Else a bf16
    copy of ``model`` (:class:`Bf16Model`'s copy: 4-D weights channels-last), or where a layer
    rejects bf16 inputs ``model`` under bf16 autocast; both tried with one forward+backward pass
    on ``x[:1]``. Where neither runs, ``bf16`` raises an :class:`~robrep.errors.InputError` naming
    the layer and ``auto`` warns once and returns None (float32)."""
    if resolve_precision(precision, x.device) == "fp32":
        return None

    def runs(net: nn.Module) -> None:
        xr = x[:1].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(net(xr).float().sum(), xr)

    try:
        net: nn.Module = _Bf16Copy(model, channels_last and x.ndim == 4)
        runs(net)
        return net
    except Exception:  # not copyable, or a layer that rejects bf16: autocast
        pass
    try:
        net = _AutocastModel(model)
        runs(net)
        return net
    except RuntimeError as e:
        msg = _autocast_failure(model, x, e)
        if precision == "bf16":
            raise InputError(f"{msg}; run with --precision fp32") from e
        _warn_once("autocast-fallback", f"{msg}; precision auto falls back to fp32 for this model")
        return None


def _margin_targeted(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    assert t is not None
    z = z.float()
    u = torch.arange(z.shape[0], device=z.device)
    return z[u, t] - z[u, y]


def _recheck_losses() -> dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]]:
    return {"ce": lambda z, y, t: get_loss("ce")(z, y), "dlr": lambda z, y, t: get_loss("dlr")(z, y),
            "margin": lambda z, y, t: get_loss("cw")(z, y), "dlr-targeted": dlr_targeted_loss,
            "margin-targeted": _margin_targeted}


class Fp32Check:
    """Float32 verdicts and a float32 re-check for an attack stage run on a bf16 model.

    A stage of a mixed-precision protocol (``run_protocol(..., precision="auto")``) calls it
    after every run (each restart, each target class) with, per point, the stage's bf16 verdict
    and its point: the adversarial iterate where bf16 saw a success, the best iterate (highest
    loss) elsewhere. Then, all in float32:

    1. each bf16 success is judged from float32 logits (one forward pass); a refuted one is
       attacked further below, and stays in the cascade if that fails;
    2. every point not confirmed broken gets ``steps`` float32 gradient steps of the stage's
       objective (``loss``: ``"ce"``, ``"dlr"``, ``"dlr-targeted"`` towards ``y_target``,
       ``"margin"``, ``"margin-targeted"``), started from its point projected onto the ball, each
       iterate judged from its float32 logits. The step (``step_size``, default ``eps / 10``) is
       short because the start is close to the boundary already: a bf16 success's point, or the
       best iterate of an APGD run whose step was halved a few times. On an adversarially trained
       MNIST CNN (linf 0.3, 100 images) ``eps / 4`` left 3 images more robust than float32 after
       APGD-CE, ``eps / 10`` and ``eps / 20`` left 1; after the cascade none.

    A point counts as broken only when float32 logits misclassify it (AutoAttack's verdict,
    also for targeted stages), so precision never adds a success; the re-check adds the ones
    bf16 rounding hid near the boundary. ``passes`` counts the float32 example-passes it made
    (``grad``: forward+backward, ``forward``), which are also added to ``counter``.
    """

    def __init__(self, model: nn.Module, threat: ThreatModel, *, steps: int = 3, step_size: float | None = None,
                 counter: Any = None) -> None:
        if steps < 0:
            raise InputError(f"recheck_steps must be >= 0, got {steps}")
        self.model, self.threat, self.steps, self.counter = model, threat, int(steps), counter
        self.alpha = threat.eps / 10 if step_size is None else float(step_size)
        self.losses = _recheck_losses()
        self.passes = {"grad": 0, "forward": 0}

    def _count(self, kind: str, n: int) -> None:
        self.passes[kind] += n
        if self.counter is not None:
            setattr(self.counter, kind, getattr(self.counter, kind) + n)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, success: torch.Tensor, x_pts: torch.Tensor, *,
                 loss: str = "ce", y_target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(success (B,), points)``: float32-confirmed misclassification within the ball, and per
        point the misclassified float32 point where broken, else its (projected) start point."""
        if loss not in self.losses:
            raise InputError(f"unknown re-check loss {loss!r}; choose one of {', '.join(self.losses)}")
        loss_fn = self.losses[loss]
        b = x.shape[0]
        ok = torch.zeros(b, dtype=torch.bool, device=x.device)
        if b == 0:
            return ok, x_pts
        with torch.autocast(x.device.type, enabled=False):
            x = x.detach().float()
            out = self.threat.project(x_pts.detach().float(), x)  # float32, inside the ball and the box
            hidx = torch.nonzero(success).flatten()
            if hidx.numel() > 0:  # the bf16 successes: one forward pass each
                with torch.no_grad():
                    ok[hidx] = self.model(out[hidx]).argmax(1) != y[hidx]
                self._count("forward", hidx.numel())
            todo = torch.nonzero(~ok).flatten()
            cur = out[todo]
            for k in range(self.steps + 1):
                if todo.numel() == 0:
                    break
                yy, tt = y[todo], (y_target[todo] if y_target is not None else None)
                if k < self.steps:
                    xr = cur.detach().requires_grad_(True)
                    with torch.enable_grad():
                        z = self.model(xr)
                        (grad,) = torch.autograd.grad(loss_fn(z, yy, tt).sum(), xr)
                    self._count("grad", todo.numel())
                else:
                    with torch.no_grad():
                        z = self.model(cur)
                    self._count("forward", todo.numel())
                wrong = z.detach().argmax(1) != yy
                ok[todo[wrong]] = True
                out[todo[wrong]] = cur[wrong].detach()
                if k == self.steps:
                    break
                keep = ~wrong
                todo, cur, grad = todo[keep], cur[keep].detach(), grad[keep]
                with torch.no_grad():
                    cur = self.threat.project(cur + self.threat.ascent(grad, self.alpha), x[todo])
        return ok, out


def _verdict(out: torch.Tensor, t: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Success from float32 logits: classified as the target (targeted) or not as the label."""
    pred = out.float().argmax(1)
    return pred == t if targeted else pred != t


def _attack_loss(attack: Callable[..., Any], kw: dict[str, Any]) -> str | AttackLoss:
    if "loss" in kw:
        return kw["loss"]
    return getattr(attack, "keywords", {}).get("loss", "ce")


def _attack_kw(attack: Callable[..., Any], kw: dict[str, Any], key: str, default: Any) -> Any:
    return kw[key] if key in kw else getattr(attack, "keywords", {}).get(key, default)


def _takes_early_exit(attack: Callable[..., Any]) -> bool:
    """Whether ``attack`` has an ``early_exit`` keyword that was not bound already."""
    if "early_exit" in getattr(attack, "keywords", {}):
        return False
    try:
        return "early_exit" in inspect.signature(attack).parameters
    except (TypeError, ValueError):
        return False


def _pgd_steps_to_share(attack: Callable[..., Any], kw: dict[str, Any], recheck_steps: int) -> int:
    """How many of a PGD attack's steps its float32 re-check takes over (0: none).

    PGD with one restart and a classification loss runs a constant step, so its last
    ``recheck_steps`` steps can be the re-check's float32 steps from the best bf16 iterate at the
    same step length: the bf16 run takes ``steps - recheck_steps`` (at least one) and the whole
    attack makes as many gradient passes as float32 PGD. Other attacks (APGD's step schedule
    depends on its step count; restarts; representation losses) keep all their steps in bf16."""
    fn = attack.func if isinstance(attack, functools.partial) else attack
    if fn is not pgd or recheck_steps <= 0:
        return 0
    if int(_attack_kw(attack, kw, "restarts", 1)) != 1 or not is_classification_loss(_attack_loss(attack, kw)):
        return 0
    steps = int(_attack_kw(attack, kw, "steps", 10))
    return max(0, min(recheck_steps, steps - 1))


def recheck_fp32(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    threat: ThreatModel,
    x_start: torch.Tensor,
    *,
    loss: str | AttackLoss = "ce",
    targeted: bool = False,
    steps: int = 1,
    step_size: float | None = None,
    hint: torch.Tensor | None = None,
    grad_model: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Float32 verdicts at ``x_start`` and a short float32 PGD from it on the examples not broken.

    Args:
        x_start: (B, C, H, W) points inside the ball (e.g. a bf16 attack's best iterates).
        loss, targeted: the attack's objective (success = misclassified / classified as target).
        steps: float32 gradient steps for the unbroken examples (0: verdicts only).
        step_size: step length (default ``threat.eps / 4``: the PGD-10 rule ``2.5 eps / 10``).
        hint: (B,) bool, examples expected broken already (e.g. the bf16 flags): they are
            judged by one forward pass without a gradient first; the others start with a
            gradient pass. Only a cost hint: the verdicts are the same without it.
        grad_model: another float32 evaluation of ``model`` (e.g. a channels-last copy) for the
            gradient passes; a success it finds counts only once ``model``'s own float32 logits
            confirm it (one forward pass of those examples).

    Returns:
        ``(x_adv, loss, success, queries)``: per example the first float32-confirmed success,
        else the point of largest (untargeted) / smallest (targeted) float32 loss; ``success``
        from float32 logits; ``queries`` the forward passes per example at most.
    """
    loss_fn = get_loss(loss)
    alpha = threat.eps / 4 if step_size is None else float(step_size)
    classification = is_classification_loss(loss) and target.dtype == torch.long and target.ndim == 1
    tracker = Tracker(x, targeted)
    queries = 0
    with torch.autocast(x.device.type, enabled=False):
        x_start = threat.project(x_start.detach().float(), x)  # fp32 and inside the ball, whatever came in
        todo = torch.arange(x.shape[0], device=x.device)
        if hint is not None and classification:  # judge the expected successes without a gradient pass
            hidx = torch.nonzero(hint).flatten()
            if hidx.numel() > 0:
                with torch.no_grad():
                    out = model(x_start[hidx])
                    tracker.update(x_start[hidx], loss_fn(out, target[hidx]), _verdict(out, target[hidx], targeted), hidx)
                queries = 1
                todo = torch.nonzero(~tracker.success).flatten()
        xs = x_start[todo]
        for k in range(steps + 1):
            if todo.numel() == 0:
                break
            ts, x0 = target[todo], x[todo]
            confirm = False
            if k < steps:
                xs = xs.detach().requires_grad_(True)
                out = (grad_model or model)(xs)
                confirm = grad_model is not None
                lval = loss_fn(out, ts)
                (grad,) = torch.autograd.grad(-lval.sum() if targeted else lval.sum(), xs)
                xs = xs.detach()
            else:
                with torch.no_grad():
                    out = model(xs)
                    lval = loss_fn(out, ts)
            s = _verdict(out, ts, targeted) if classification else torch.zeros(len(todo), dtype=torch.bool, device=x.device)
            if confirm and bool(s.any()):  # the model's own float32 logits decide
                sidx = torch.nonzero(s).flatten()
                with torch.no_grad():
                    s[sidx] = _verdict(model(xs[sidx]), ts[sidx], targeted)
            tracker.update(xs, lval.detach(), s, todo)
            queries += 1
            if k == steps:
                break
            with torch.no_grad():
                keep = ~s
                todo, xs, grad, x0 = todo[keep], xs[keep], grad[keep], x0[keep]
                xs = threat.project(xs + threat.ascent(grad, alpha), x0)
    return tracker.x, tracker.loss, tracker.success, queries


def with_precision(
    attack: Callable[..., AttackResult],
    precision: str = "auto",
    *,
    recheck_steps: int = 3,
    recheck_step_size: float | None = None,
    channels_last: bool = True,
    share_steps: bool = True,
) -> Callable[..., AttackResult]:
    """``attack`` run in ``precision`` (``auto``, ``fp32``, ``bf16``) with float32 verdicts.

    Args:
        attack: ``attack(model, x, target, threat, **kw) -> AttackResult`` (e.g. ``pgd``,
            ``apgd``, ``create_attack("pgd", steps=20)``).
        precision: ``fp32`` returns ``attack`` unchanged (bit-identical results); ``bf16`` runs
            the attack's passes in bfloat16 (the model in bf16, else under autocast; an :class:`~robrep.errors.InputError` where the
            device lacks native bf16, or where the model fails under autocast: the message
            names the layer); ``auto`` = bf16 where supported, else float32, and falls back to
            float32 (with one warning) when the model fails under autocast.
        recheck_steps: float32 PGD steps from the best bf16 point for every example that
            float32 does not confirm as broken (see the module docs); 0: verdicts only.
        recheck_step_size: their step length (default: the attack's PGD step rule,
            ``2.5 eps / steps`` with the attack's ``steps``, else ``eps / 4``).
        channels_last: in bf16, run the attack's passes on channels-last (NHWC) copies of the
            model's 4-D weights and of the images (the float32 verdicts use the model as it is).
        share_steps: for PGD with one restart and a classification loss, the re-check's float32
            steps are the attack's last steps: the bf16 run makes ``steps - recheck_steps``
            steps at the step length of the full run (``2.5 eps / steps`` unless set), then the
            float32 re-check continues from the best bf16 iterate with the same step, so
            ``auto`` PGD-10 makes 10 gradient passes per example like float32 PGD-10 (7 in bf16,
            3 in float32). False: the bf16 run makes all ``steps`` and the re-check comes on top.

    Returns:
        An attack of the same signature. Its :class:`AttackResult` has ``x_adv`` inside the
        ball and [0,1] (float32), ``loss`` and ``success`` from float32 logits, and ``queries``
        including the re-check's passes.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if recheck_steps < 0:
        raise InputError(f"recheck_steps must be >= 0, got {recheck_steps}")
    if precision == "fp32":
        return attack
    if getattr(attack, "protocol", None) is not None:  # a protocol judges and re-checks each of its stages itself
        return functools.partial(attack, precision=precision, recheck_steps=recheck_steps,
                                 recheck_step_size=recheck_step_size)
    exits = _takes_early_exit(attack)

    def run(model: nn.Module, x: torch.Tensor, target: torch.Tensor, threat: ThreatModel, **kw: Any) -> AttackResult:
        mode = resolve_precision(precision, x.device)
        if mode == "fp32":
            return attack(model, x, target, threat, **kw)
        cl = channels_last and x.ndim == 4
        x_in = x.contiguous(memory_format=torch.channels_last) if cl else x
        gen = kw.get("generator")
        gen_state = gen.get_state() if gen is not None else None
        fast_kw = {"early_exit": True, **kw} if exits else dict(kw)  # broken examples leave the bf16 batch (judged below)
        shared = _pgd_steps_to_share(attack, kw, recheck_steps) if share_steps else 0
        if shared:  # the last `shared` steps are the float32 re-check's, at the full run's step length
            total = int(_attack_kw(attack, kw, "steps", 10))
            if _attack_kw(attack, kw, "step_size", None) is None:
                fast_kw["step_size"] = default_step_size(threat, total)
            fast_kw["steps"] = total - shared
        try:  # 1. the whole model in bf16 (fastest); 2. bf16 autocast (layers that insist on float32 inputs stay float32)
            res = attack(_Bf16Copy(model, channels_last), x_in, target, threat, **fast_kw)
        except Exception:  # not copyable, or a layer that rejects bf16: autocast below
            if gen is not None:
                gen.set_state(gen_state)
            res = None
        try:
            if res is None:
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    res = attack(_ChannelsLastView(model) if cl else model, x_in, target, threat, **fast_kw)
        except RuntimeError as e:
            msg = _autocast_failure(model, x, e)
            if precision == "bf16":
                raise InputError(f"{msg}; run with --precision fp32") from e
            _warn_once("autocast-fallback", f"{msg}; precision auto falls back to fp32 for this model")
            if gen is not None:
                gen.set_state(gen_state)  # the same random draws as a float32 run
            return attack(model, x, target, threat, **kw)
        loss = _attack_loss(attack, kw)
        targeted = bool(_attack_kw(attack, kw, "targeted", False))
        alpha = recheck_step_size
        if shared and alpha is None:  # the attack's own step length continues
            alpha = _attack_kw(attack, kw, "step_size", None)
        if alpha is None:
            steps = _attack_kw(attack, kw, "steps", None)
            alpha = default_step_size(threat, int(steps)) if steps else threat.eps / 4
        fast = None
        if cl and recheck_steps > 0:
            try:
                fast = _Fp32ChannelsLastCopy(model)
            except Exception:  # not copyable: the re-check runs on the model itself
                fast = None
        x_adv, lval, success, q = recheck_fp32(model, x.detach(), target, threat, res.x_adv.contiguous(), loss=loss, targeted=targeted,
                                               steps=recheck_steps, step_size=alpha, hint=res.success, grad_model=fast)
        return AttackResult(x_adv, lval, success, res.queries + q)

    functools.update_wrapper(run, attack) if hasattr(attack, "__name__") else None
    run.precision = precision  # type: ignore[attr-defined]
    return run
