"""Pure contrastive losses: NT-Xent (SimCLR) and the NCA losses of Ko et al. 2022 (reconstructed).

Every loss is a pure function of embeddings; the objectives that train with them are in
:mod:`robrep.objectives.contrastive` (which also re-exports these names).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = [
    "SIMILARITIES",
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
