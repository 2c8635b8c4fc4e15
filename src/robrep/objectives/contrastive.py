"""Contrastive representation learning seen as neighbourhood component analysis (NCA).

Reference: Ko, Mohapatra, Liu, Chen, Daniel, Weng, "Revisiting Contrastive Learning through the
Lens of Neighborhood Component Analysis: an Integrated Framework", ICML 2022 (arXiv 2112.04468).

.. warning::
   Only the paper's abstract was available when this module was written. The NCA view below
   (InfoNCE with cosine similarity *is* the NCA log objective with instance identities as
   classes) is standard maths; the loss family ``nacl`` / ``intnacl`` is a **reconstruction**
   that follows the ideas stated in the abstract (multi-positive stochastic-nearest-neighbour
   losses, with and without the log; integrated losses combining clean and adversarial views
   to get accuracy and robustness). It is **not** guaranteed to be the paper's exact loss, and
   its hyper-parameters (temperature, eps, PGD steps, alpha) are our choices. See
   ``docs/reproductions/ko2022-nca-robust-contrastive.md``.

Notation (Goldberger et al., NeurIPS 2004, "Neighbourhood Components Analysis"). For an anchor
embedding ``a`` and a bank of candidate neighbours ``{v_j}``, the stochastic nearest neighbour of
``a`` is ``v_j`` with probability

    p(a -> v_j) = exp(s(a, v_j) / tau) / sum_{k not excluded} exp(s(a, v_k) / tau)

(``s`` a similarity, the anchor itself excluded). With positives ``P(a)`` (other views of the
same image) the losses are

* NCA-log (multi-positive InfoNCE):  ``-log sum_{j in P(a)} p(a -> v_j)``  in [0, inf);
* NCA expected accuracy (no log):     ``-sum_{j in P(a)} p(a -> v_j)``      in [-1, 0].

With one positive and cosine similarity the NCA-log loss over the 2B views of a batch is
SimCLR's NT-Xent (Chen et al., ICML 2020), and for unit vectors
``-||u - v||^2 / (2 tau) = (u.v - 1) / tau``, so NCA's squared-distance softmax with temperature
``2 tau`` gives the same probabilities.

Objectives (``robrep train --objective ...``, all ``supervised = False``, labels ignored):

* ``simclr``  -- NT-Xent on two augmented views (baseline).
* ``nacl``    -- NCA loss (log or expected accuracy) on ``views`` augmented views, i.e.
  ``views - 1`` positives per anchor.
* ``intnacl`` -- integrated loss: an adversarial view of each image is found by PGD on the
  NCA loss itself (instance-wise, against the detached clean views), then either
  ``L_clean + alpha * L_adv`` (``mode="weighted"``) or the adversarial view joins the clean
  views as an extra positive (``mode="positive"``).
* ``acl``     -- ACL-style adversarial contrastive baseline (Jiang et al., NeurIPS 2020,
  "Robust Pre-Training by Adversarial Contrastive Learning"; cf. RoCL, Kim et al. 2020): both
  views attacked jointly to maximise NT-Xent, loss ``NT-Xent(adv pair) + clean_weight *
  NT-Xent(clean pair)`` (dual stream without separate BatchNorm).

Encoder and representation: the model is any :class:`~robrep.models.RobrepModel`. With
``head="mlp"`` (default) the objective owns a projection head ``g`` (Linear-ReLU-Linear, in
:meth:`extra_modules`, checkpointed as ``objective.safetensors``) applied to the model's
``layer`` (default ``"penultimate"``); the contrastive loss is computed on ``g(R(x))`` and the
**representation to probe is ``R`` = the penultimate layer** (SimCLR's convention). The model's
own final ``fc`` is then unused. With ``head="logits"`` the loss is computed on the model's
output (its ``fc`` acts as a linear projection head) and the penultimate layer is still the
representation to probe.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.pgd import pgd
from ..data.augment import Augment, augment_preset
from ..errors import InputError
from ..models.base import RobrepModel, representation
from .base import Objective, StepContext, register_objective

__all__ = [
    "SIMILARITIES",
    "AdversarialContrastive",
    "IntNaCl",
    "NaCl",
    "SimCLR",
    "multiview_masks",
    "nca_accuracy_loss",
    "nca_log_loss",
    "neighbour_logits",
    "neighbour_probabilities",
    "nt_xent",
]

SIMILARITIES = ("cosine", "sqeuclidean", "dot")


# ---------------------------------------------------------------------------------------------
# pure losses


def neighbour_logits(anchors: torch.Tensor, bank: torch.Tensor, *, temperature: float = 0.5, similarity: str = "cosine") -> torch.Tensor:
    """``s(a_i, v_j) / tau`` for all anchor/bank pairs.

    Args:
        anchors: (A, D) embeddings.
        bank: (N, D) candidate neighbours.
        temperature: tau > 0.
        similarity: ``cosine`` (``a.v / (|a||v|)``, SimCLR), ``sqeuclidean`` (``-|a - v|^2``,
            Goldberger et al.'s NCA, no normalization) or ``dot`` (``a.v``).

    Returns:
        (A, N) logits.
    """
    if anchors.ndim != 2 or bank.ndim != 2 or anchors.shape[1] != bank.shape[1]:
        raise InputError(f"anchors and bank must be (A, D) and (N, D) with the same D, got {tuple(anchors.shape)} and {tuple(bank.shape)}")
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    if similarity == "cosine":
        s = F.normalize(anchors, dim=1) @ F.normalize(bank, dim=1).T
    elif similarity == "dot":
        s = anchors @ bank.T
    elif similarity == "sqeuclidean":
        s = -(anchors.pow(2).sum(1, keepdim=True) - 2 * anchors @ bank.T + bank.pow(2).sum(1)[None, :]).clamp_min(0)
    else:
        raise InputError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    return s / temperature


def _masked_logits(anchors: torch.Tensor, bank: torch.Tensor, positives: torch.Tensor, exclude: torch.Tensor | None,
                   temperature: float, similarity: str) -> torch.Tensor:
    logits = neighbour_logits(anchors, bank, temperature=temperature, similarity=similarity)
    shape = logits.shape
    if positives.shape != shape or positives.dtype != torch.bool:
        raise InputError(f"positives must be a bool mask of shape {tuple(shape)}, got {positives.dtype} {tuple(positives.shape)}")
    if exclude is not None:
        if exclude.shape != shape or exclude.dtype != torch.bool:
            raise InputError(f"exclude must be a bool mask of shape {tuple(shape)}, got {exclude.dtype} {tuple(exclude.shape)}")
        if bool((positives & exclude).any()):
            raise InputError("a positive is also excluded; an anchor's own row must not be its positive")
        logits = logits.masked_fill(exclude, float("-inf"))
    if not bool(positives.any(1).all()):
        raise InputError("every anchor needs at least one positive (another view of the same image)")
    return logits


def _reduce(v: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return v.mean()
    if reduction == "sum":
        return v.sum()
    if reduction == "none":
        return v
    raise InputError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def neighbour_probabilities(anchors: torch.Tensor, bank: torch.Tensor, exclude: torch.Tensor | None = None, *,
                            temperature: float = 0.5, similarity: str = "cosine") -> torch.Tensor:
    """NCA's stochastic-nearest-neighbour probabilities ``p(a_i -> v_j)`` (Goldberger et al. 2004).

    Args:
        anchors: (A, D); bank: (N, D).
        exclude: (A, N) bool, True where ``v_j`` is not a candidate (the anchor itself).
        temperature, similarity: see :func:`neighbour_logits`.

    Returns:
        (A, N) probabilities in [0, 1]; each row sums to 1; excluded entries are 0.
    """
    logits = neighbour_logits(anchors, bank, temperature=temperature, similarity=similarity)
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return torch.softmax(logits, dim=1)


def nca_log_loss(anchors: torch.Tensor, bank: torch.Tensor, positives: torch.Tensor, exclude: torch.Tensor | None = None, *,
                 temperature: float = 0.5, similarity: str = "cosine", reduction: str = "mean") -> torch.Tensor:
    """Multi-positive NCA-log loss ``-log sum_{j in P(i)} p(a_i -> v_j)`` ("sum inside the log").

    [RECONSTRUCTED] loss (1) of Ko et al. (ICML 2022), docs/methods/contrastive.md. With one positive per
    anchor and cosine similarity it equals NT-Xent / InfoNCE (Chen et al. 2020). Computed as
    ``logsumexp(logits over positives) - logsumexp(logits over candidates)`` (stable).

    Args:
        anchors: (A, D) anchor embeddings.
        bank: (N, D) neighbours (may be the anchors themselves; then exclude the diagonal).
        positives: (A, N) bool, True where ``v_j`` is a positive of ``a_i`` (>= 1 per row).
        exclude: (A, N) bool, True where ``v_j`` is not a candidate neighbour of ``a_i``.
        temperature, similarity: see :func:`neighbour_logits`.
        reduction: ``mean`` | ``sum`` over anchors, or ``none`` for the (A,) values.

    Returns:
        Scalar (or (A,)) loss >= 0. Identical embeddings give ``-log(M / K)`` with ``M``
        positives among ``K`` candidates.
    """
    logits = _masked_logits(anchors, bank, positives, exclude, temperature, similarity)
    pos = logits.masked_fill(~positives, float("-inf"))
    v = torch.logsumexp(logits, dim=1) - torch.logsumexp(pos, dim=1)
    return _reduce(v, reduction)


def nca_accuracy_loss(anchors: torch.Tensor, bank: torch.Tensor, positives: torch.Tensor, exclude: torch.Tensor | None = None, *,
                      temperature: float = 0.5, similarity: str = "cosine", reduction: str = "mean") -> torch.Tensor:
    """NCA expected-accuracy loss (no log) ``-sum_{j in P(i)} p(a_i -> v_j)``.

    [RECONSTRUCTED] loss (2) of Ko et al. (ICML 2022), docs/methods/contrastive.md: minus the probability
    that a stochastic 1-NN classifier over instance identities classifies the anchor correctly
    (Goldberger et al.'s original NCA objective). Bounded, so hard or noisy positives weigh less
    than in the log loss.

    Args: as :func:`nca_log_loss`.

    Returns:
        Scalar (or (A,)) loss in [-1, 0].
    """
    logits = _masked_logits(anchors, bank, positives, exclude, temperature, similarity)
    p = torch.softmax(logits, dim=1)
    v = -(p * positives).sum(1)
    return _reduce(v, reduction)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.5, reduction: str = "mean") -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al., ICML 2020) on two views of a batch.

    Each of the 2B views is an anchor; its positive is the other view of the same image; the
    other 2B - 2 views are negatives; similarity is cosine over temperature ``tau``.

    Args:
        z1, z2: (B, D) embeddings of the first and second view (row i = image i).
        temperature: tau > 0.
        reduction: ``mean`` (SimCLR's ``1/2B sum``), ``sum`` or ``none`` ((2B,) per anchor,
            first-view anchors first).

    Returns:
        Scalar (or (2B,)) loss >= 0.
    """
    if z1.shape != z2.shape or z1.ndim != 2 or z1.shape[0] < 2:
        raise InputError(f"nt_xent needs two (B, D) batches of the same shape with B >= 2, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return _reduce(F.cross_entropy(sim, target, reduction="none"), reduction)


def multiview_masks(n: int, views: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and self masks for ``views`` views of ``n`` images stacked view-major
    (row ``v * n + i`` is view ``v`` of image ``i``).

    Returns:
        ``(positives, exclude)``, both (views*n, views*n) bool: positives = same image, other
        view (``views - 1`` per row); exclude = the diagonal.
    """
    if n < 1 or views < 2:
        raise InputError(f"need n >= 1 images and views >= 2, got n={n}, views={views}")
    ids = torch.arange(n, device=device).repeat(views)
    eye = torch.eye(views * n, dtype=torch.bool, device=device)
    return (ids[:, None] == ids[None, :]) & ~eye, eye


# ---------------------------------------------------------------------------------------------
# objectives


class _Embedder(nn.Module):
    """``x in [0,1] -> g(R(x))`` (or the model output when there is no head)."""

    def __init__(self, model: RobrepModel, head: nn.Module | None, layer: str) -> None:
        super().__init__()
        self.model, self.head = model, head
        self.rep = representation(model, layer) if head is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None or self.rep is None:
            return self.model(x)
        return self.head(self.rep(x))


class _Eval:
    """Put modules in eval mode during the attack, then restore their modes."""

    def __init__(self, mods: list[nn.Module], enable: bool) -> None:
        self.mods, self.enable, self.was = mods, enable, [m.training for m in mods]

    def __enter__(self) -> None:
        if self.enable:
            for m in self.mods:
                m.eval()

    def __exit__(self, *a: object) -> None:
        for m, w in zip(self.mods, self.was):
            m.train(w)


class _Contrastive(Objective):
    """Shared machinery: augmentations, projection head, embedding, PGD settings.

    Args:
        temperature: softmax temperature tau.
        similarity: ``cosine`` | ``sqeuclidean`` | ``dot``.
        augment: preset name (``digits`` (default; no flip), ``clothes``, ``natural``, ``none``)
            or a dict of :class:`~robrep.data.Augment` fields.
        head: ``mlp`` (projection head owned by the objective) or ``logits`` (use the model's
            output as the embedding).
        proj_dim, hidden: sizes of the MLP head (hidden defaults to the representation size).
        layer: model layer fed to the head (default ``penultimate``).
    """

    supervised = False

    def __init__(self, temperature: float = 0.5, similarity: str = "cosine", augment: str | dict[str, Any] = "digits",
                 head: str = "mlp", proj_dim: int = 64, hidden: int | None = None, layer: str = "penultimate", **kw: Any) -> None:
        super().__init__(**kw)
        if not temperature > 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        if similarity not in SIMILARITIES:
            raise InputError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if head not in ("mlp", "logits"):
            raise InputError(f"head must be 'mlp' or 'logits', got {head!r}")
        if proj_dim < 1 or (hidden is not None and hidden < 1):
            raise InputError(f"proj_dim and hidden must be >= 1, got {proj_dim}, {hidden}")
        self.temperature, self.similarity = float(temperature), similarity
        self.augment_spec = augment
        self.augment: Augment = augment_preset(augment) if isinstance(augment, str) else Augment.from_dict(augment)
        self.head_kind, self.proj_dim, self.hidden, self.layer = head, int(proj_dim), hidden, layer
        self.head: nn.Module | None = None

    # -- setup / modules ----------------------------------------------------------------------
    def setup(self, model: nn.Module, example: torch.Tensor) -> None:
        if not isinstance(model, RobrepModel):
            raise InputError("contrastive objectives need a RobrepModel encoder (robrep.models.create_model or wrap)")
        if self.head_kind == "logits" or self.head is not None:
            return
        with torch.no_grad():
            d = representation(model, self.layer)(example[:2]).shape[1]
        h = self.hidden or d
        self.head = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, self.proj_dim)).to(example.device)

    def extra_modules(self) -> nn.Module | None:
        return self.head

    def embedder(self, model: nn.Module) -> _Embedder:
        """The map ``x -> embedding`` on which the contrastive loss is computed."""
        if not isinstance(model, RobrepModel):
            raise InputError("contrastive objectives need a RobrepModel encoder (robrep.models.create_model or wrap)")
        if self.head_kind == "mlp" and self.head is None:
            raise InputError("call objective.setup(model, example_batch) before loss() (robrep.train does it) to build the projection head")
        return _Embedder(model, self.head, self.layer)

    def views(self, x: torch.Tensor, ctx: StepContext, k: int = 2) -> list[torch.Tensor]:
        """``k`` independent augmentations of ``x``, seeded by ``ctx.generator``."""
        return [self.augment(x, ctx.generator) for _ in range(k)]

    def _nca(self, log: bool):  # type: ignore[no-untyped-def]
        return nca_log_loss if log else nca_accuracy_loss

    def config(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "similarity": self.similarity, "augment": self.augment.to_dict(),
                "head": self.head_kind, "proj_dim": self.proj_dim, "hidden": self.hidden, "layer": self.layer}


def _pos_prob(anchors: torch.Tensor, bank: torch.Tensor, positives: torch.Tensor, exclude: torch.Tensor | None,
              temperature: float, similarity: str) -> torch.Tensor:
    with torch.no_grad():
        return (neighbour_probabilities(anchors, bank, exclude, temperature=temperature, similarity=similarity) * positives).sum(1).mean()


@register_objective("simclr", help="SimCLR NT-Xent on two augmented views (Chen et al. 2020); unsupervised encoder")
class SimCLR(_Contrastive):
    """SimCLR (Chen et al., ICML 2020): ``NT-Xent(g(R(t(x))), g(R(t'(x))))``.

    Metrics: ``loss``; ``pos_prob``: mean probability that an anchor's stochastic nearest
    neighbour is its other view (NCA's expected instance accuracy).
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        if self.similarity != "cosine":
            raise InputError("simclr's NT-Xent uses cosine similarity; use --objective nacl for another similarity")

    def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
        emb = self.embedder(model)
        x1, x2 = self.views(x, ctx)
        z = emb(torch.cat([x1, x2]))
        z1, z2 = z.chunk(2)
        loss = nt_xent(z1, z2, temperature=self.temperature)
        pos, exc = multiview_masks(x.shape[0], 2, z.device)
        return loss, {"loss": loss.detach(), "pos_prob": _pos_prob(z, z, pos, exc, self.temperature, "cosine")}

    def config(self) -> dict[str, Any]:
        c = super().config()
        c.pop("similarity")  # NT-Xent is cosine by definition
        return c


@register_objective("nacl", help="[reconstructed] NCA contrastive loss (Ko et al. 2022): multi-positive NCA-log or expected-accuracy")
class NaCl(_Contrastive):
    """NCA view of contrastive learning (Ko et al., ICML 2022) [RECONSTRUCTED].

    ``views`` augmentations per image; each view is an anchor whose ``views - 1`` other views
    are positives among all other views of the batch. ``log=True``: ``-log sum p``
    (``views=2`` = SimCLR); ``log=False``: ``-sum p`` (expected stochastic-1-NN accuracy).

    Args:
        views: augmented views per image (>= 2).
        log: NCA-log (True) or expected-accuracy (False) loss.
        (others: see the shared options of the contrastive objectives.)
    """

    def __init__(self, views: int = 2, log: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        if views < 2:
            raise InputError(f"nacl needs views >= 2, got {views}")
        self.n_views, self.log = int(views), bool(log)

    def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
        emb = self.embedder(model)
        z = emb(torch.cat(self.views(x, ctx, self.n_views)))
        pos, exc = multiview_masks(x.shape[0], self.n_views, z.device)
        loss = self._nca(self.log)(z, z, pos, exc, temperature=self.temperature, similarity=self.similarity)
        return loss, {"loss": loss.detach(), "pos_prob": _pos_prob(z, z, pos, exc, self.temperature, self.similarity)}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "views": self.n_views, "log": self.log}


class _Adversarial(_Contrastive):
    """PGD settings shared by the adversarial contrastive objectives (eps from ``--eps``).

    Args:
        steps: PGD steps (default 5); step_size: default ``2.5 eps / steps``.
        random_start: start uniformly in the ball.
        attack_eval_mode: attack with BatchNorm/Dropout in eval mode.
    """

    needs_threat = True

    def __init__(self, steps: int = 5, step_size: float | None = None, random_start: bool = True,
                 attack_eval_mode: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        self.steps, self.step_size, self.random_start, self.attack_eval_mode = int(steps), step_size, bool(random_start), bool(attack_eval_mode)

    def _attack(self, model: nn.Module, emb: _Embedder, x: torch.Tensor, loss_fn: Any, ctx: StepContext) -> torch.Tensor:
        thr = ctx.threat
        if thr is None:
            raise InputError(f"objective {self.name!r} needs a threat model: give --eps")
        if thr.eps == 0:
            return x
        mods = [model] + ([self.head] if self.head is not None else [])
        with _Eval(mods, self.attack_eval_mode):
            r = pgd(emb, x, torch.arange(x.shape[0], device=x.device), thr, steps=self.steps, step_size=self.step_size,
                    loss=loss_fn, random_start=self.random_start, keep_best=False, generator=ctx.generator, check=False)
        return r.x_adv.detach()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "steps": self.steps, "step_size": self.step_size, "random_start": self.random_start,
                "attack_eval_mode": self.attack_eval_mode}


@register_objective("intnacl", help="[reconstructed] integrated NCA loss (Ko et al. 2022): clean + alpha * adversarial-view NCA terms")
class IntNaCl(_Adversarial):
    """Integrated robust NCA contrastive loss (Ko et al., ICML 2022) [RECONSTRUCTED].

    Views: ``x1 = t(x)``, ``x2 = t'(x)`` and an adversarial view ``x_a`` found by PGD from
    ``x1`` maximising the NCA loss of the anchor ``x_a`` against the detached clean bank
    ``{z1_j, z2_j}`` with positives ``{z1_i, z2_i}`` ("positives incl. x"; instance-wise,
    so each image's attack is independent of the others).

    * ``mode="weighted"``: ``L = L_nca(clean views) + alpha * L_nca(anchor z_a; bank
      {z1, z2}; positives {z1_i, z2_i})`` -- exactly the attacked term.
    * ``mode="positive"``: ``x_a`` is a third view; every view's positives are the other two
      views of its image; ``L = mean over clean anchors + alpha * mean over adversarial
      anchors``.

    Args:
        alpha: weight of the adversarial term (>= 0).
        mode: ``weighted`` | ``positive``.
        log: NCA-log (True) or expected-accuracy (False) loss, for both the attack and training.
        (others: PGD options of the adversarial objectives and the shared contrastive options.)
    """

    def __init__(self, alpha: float = 1.0, mode: str = "weighted", log: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        if not alpha >= 0:
            raise InputError(f"alpha must be >= 0, got {alpha}")
        if mode not in ("weighted", "positive"):
            raise InputError(f"mode must be 'weighted' or 'positive', got {mode!r}")
        self.alpha, self.mode, self.log = float(alpha), mode, bool(log)

    def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
        emb = self.embedder(model)
        b = x.shape[0]
        nca = self._nca(self.log)
        kw = {"temperature": self.temperature, "similarity": self.similarity}
        x1, x2 = self.views(x, ctx)
        ids = torch.arange(b, device=x.device)
        adv_pos = torch.cat([ids, ids])[None, :] == ids[:, None]  # (B, 2B): z1_i and z2_i

        with torch.no_grad():
            bank = emb(torch.cat([x1, x2]))

        def attack_loss(za: torch.Tensor, _t: torch.Tensor) -> torch.Tensor:
            return nca(za, bank, adv_pos, None, reduction="none", **kw)

        xa = self._attack(model, emb, x1, attack_loss, ctx)
        z = emb(torch.cat([x1, x2, xa]))
        zc, za = z[: 2 * b], z[2 * b :]
        if self.mode == "weighted":
            pos, exc = multiview_masks(b, 2, z.device)
            clean = nca(zc, zc, pos, exc, **kw)
            adv = nca(za, zc, adv_pos, None, **kw)
        else:
            pos, exc = multiview_masks(b, 3, z.device)
            per = nca(z, z, pos, exc, reduction="none", **kw)
            clean, adv = per[: 2 * b].mean(), per[2 * b :].mean()
        loss = clean + self.alpha * adv
        with torch.no_grad():
            pos2, exc2 = multiview_masks(b, 2, z.device)
            m = {"loss": loss.detach(), "clean_loss": clean.detach(), "adv_loss": adv.detach(),
                 "pos_prob": _pos_prob(zc, zc, pos2, exc2, self.temperature, self.similarity),
                 "adv_pos_prob": _pos_prob(za, zc, adv_pos, None, self.temperature, self.similarity)}
        return loss, m

    def config(self) -> dict[str, Any]:
        return {**super().config(), "alpha": self.alpha, "mode": self.mode, "log": self.log}


@register_objective("acl", help="ACL-style adversarial contrastive learning (Jiang et al. 2020): NT-Xent on jointly attacked view pairs")
class AdversarialContrastive(_Adversarial):
    """ACL-style baseline (Jiang et al., NeurIPS 2020; cf. RoCL, Kim et al., NeurIPS 2020).

    Both augmented views are perturbed jointly by PGD to maximise their NT-Xent (ACL's A2A);
    the loss is ``NT-Xent(z1_adv, z2_adv) + clean_weight * NT-Xent(z1, z2)`` (``clean_weight
    = 1``: ACL's dual stream, but with shared BatchNorm; 0: pure A2A).

    Args:
        clean_weight: weight of the clean NT-Xent term (>= 0).
    """

    def __init__(self, clean_weight: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        if self.similarity != "cosine":
            raise InputError("acl's NT-Xent uses cosine similarity; use --objective intnacl for another similarity")
        if not clean_weight >= 0:
            raise InputError(f"clean_weight must be >= 0, got {clean_weight}")
        self.clean_weight = float(clean_weight)

    def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
        emb = self.embedder(model)
        b = x.shape[0]
        tau = self.temperature
        x1, x2 = self.views(x, ctx)
        xc = torch.cat([x1, x2])

        def attack_loss(z: torch.Tensor, _t: torch.Tensor) -> torch.Tensor:
            z1, z2 = z.chunk(2)
            return nt_xent(z1, z2, temperature=tau, reduction="none")

        xa = self._attack(model, emb, xc, attack_loss, ctx)
        if self.clean_weight > 0:
            z = emb(torch.cat([xa, xc]))
            za, zc = z[: 2 * b], z[2 * b :]
            clean = nt_xent(*zc.chunk(2), temperature=tau)
        else:
            za = emb(xa)
            clean = torch.zeros((), device=x.device)
        adv = nt_xent(*za.chunk(2), temperature=tau)
        loss = adv + self.clean_weight * clean
        pos, exc = multiview_masks(b, 2, za.device)
        return loss, {"loss": loss.detach(), "clean_loss": clean.detach(), "adv_loss": adv.detach(),
                      "adv_pos_prob": _pos_prob(za, za, pos, exc, tau, "cosine")}

    def config(self) -> dict[str, Any]:
        c = {**super().config(), "clean_weight": self.clean_weight}
        c.pop("similarity")
        return c
