"""Variational lower bounds on mutual information computed from a critic's score matrix.

Zhu, Zhang & Evans, *Learning Adversarially Robust Representations via Worst-Case Mutual
Information Maximization*, ICML 2020 (docs/methods/vulnerability.md), after Belghazi et al. 2018 (MINE / DV),
Hjelm et al. 2019 (Deep InfoMax, JSD) and van den Oord et al. 2018 (InfoNCE).

All functions are pure. ``scores`` has shape (L, N, N) or (N, N) (L = 1): ``scores[l, i, j]``
is the critic value T_l(x_i, z_j) at location ``l``; the diagonal holds the N positive pairs
(joint samples), the off-diagonal entries the N(N-1) negative pairs (product of marginals).
Values are in nats, averaged over locations.

**DV diagonal.** The authors' code masks the diagonal of the negative score matrix to 0 rather
than removing it, so N extra ``exp(0) = 1`` terms enter the log-mean-exp. robrep removes the
diagonal by default (``diag="exclude"``: the exact DV bound on N(N-1) negative pairs);
``diag="zero"`` reproduces the code's arithmetic for bit-level comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._registry import Registry
from ..errors import InputError

__all__ = ["BOUNDS", "Bound", "dv_bound", "get_bound", "infonce_bound", "infonce_terms", "jsd_bound", "list_bounds", "smile_bound"]


def _as3d(scores: torch.Tensor) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise InputError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.ndim == 2:
        scores = scores.unsqueeze(0)
    if scores.ndim != 3 or scores.shape[-1] != scores.shape[-2]:
        raise InputError(f"scores must have shape (N, N) or (L, N, N), got {tuple(scores.shape)}")
    if scores.shape[-1] < 2:
        raise InputError("an MI bound needs a batch of at least 2 pairs (negatives are other batch members)")
    return scores


def dv_bound(scores: torch.Tensor, diag: str = "exclude") -> torch.Tensor:
    """Donsker-Varadhan lower bound (MINE without the moving-average correction).

    ``I_DV = mean_l [ mean_i T_l(x_i, z_i) - log( 1/(N(N-1)) sum_{i != j} exp T_l(x_i, z_j) ) ]``.

    Args:
        scores: (L, N, N) or (N, N) critic values.
        diag: ``"exclude"`` (exact bound) or ``"zero"`` (authors' code: diagonal masked to 0 and
            kept in the log-sum-exp, normalised by N(N-1)).

    Returns:
        Scalar tensor (nats), differentiable in ``scores``.
    """
    s = _as3d(scores)
    n = s.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=s.device)
    pos = torch.diagonal(s, dim1=-2, dim2=-1).mean(-1)
    if diag == "exclude":
        neg = s.masked_fill(eye, float("-inf"))
    elif diag == "zero":
        neg = s.masked_fill(eye, 0.0)
    else:
        raise InputError(f"diag must be 'exclude' or 'zero', got {diag!r}")
    lme = torch.logsumexp(neg.flatten(-2), dim=-1) - math.log(n * (n - 1))
    return (pos - lme).mean()


def jsd_bound(scores: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon (Deep InfoMax "fd"/JSD) objective.

    ``mean_pos[-softplus(-T)] - mean_neg[softplus(T)]`` (the code's +-log 2 shifts cancel). This
    is a lower bound on 2 JSD(p_xz || p_x p_z) - 2 log 2, *not* on MI; its maximiser is the log
    density ratio ``T* = log p(x,z)/(p(x)p(z))``, so a JSD-trained critic is read as MI with
    :func:`dv_bound` (see :data:`BOUNDS`).

    Args:
        scores: (L, N, N) or (N, N).

    Returns:
        Scalar tensor in (-inf, 0].
    """
    s = _as3d(scores)
    n = s.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=s.device)
    pos = -F.softplus(-torch.diagonal(s, dim1=-2, dim2=-1)).mean()
    neg = F.softplus(s)[:, ~eye].mean()
    return pos - neg


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE lower bound, ``log N + mean_{l,i} log softmax_j T_l(x_i, z_j) |_{j=i}``.

    Each x_i picks its own z_i among the N representations of the batch (per location; the
    authors' code pools candidates over locations, robrep keeps them per location), so the
    value is capped by ``log N``.

    Args:
        scores: (L, N, N) or (N, N).

    Returns:
        Scalar tensor in (-inf, log N].
    """
    s = _as3d(scores)
    n = s.shape[-1]
    logp = torch.diagonal(F.log_softmax(s, dim=-1), dim1=-2, dim2=-1)
    return logp.mean() + math.log(n)


def infonce_terms(scores: torch.Tensor) -> torch.Tensor:
    """The per-anchor terms of :func:`infonce_bound`: ``log N + mean_l log softmax_j T_l(x_i, z_j)|_{j=i}``
    for each i, shape (N,); their mean is the bound. Used to resample anchors in intervals."""
    s = _as3d(scores)
    n = s.shape[-1]
    return torch.diagonal(F.log_softmax(s, dim=-1), dim1=-2, dim2=-1).mean(0) + math.log(n)


def smile_bound(scores: torch.Tensor, tau: float = 5.0) -> torch.Tensor:
    """SMILE (Song & Ermon 2020): the DV value with the negative-pair scores clipped to
    [-tau, tau] inside the log-mean-exp, which bounds the variance of the partition term.

    ``mean_l [ mean_i T_l(x_i, z_i) - log( 1/(N(N-1)) sum_{i != j} exp clip(T_l(x_i, z_j), -tau, tau) ) ]``.
    Not a lower bound for every critic (clipping lowers the partition term); the critic is
    trained with the JSD objective, as in the original.

    Args:
        scores: (L, N, N) or (N, N).
        tau: clipping level (default 5).
    """
    s = _as3d(scores)
    n = s.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=s.device)
    pos = torch.diagonal(s, dim1=-2, dim2=-1).mean(-1)
    neg = s.clamp(-tau, tau).masked_fill(eye, float("-inf"))
    lme = torch.logsumexp(neg.flatten(-2), dim=-1) - math.log(n * (n - 1))
    return (pos - lme).mean()


@dataclass(frozen=True)
class Bound:
    """A named MI estimator: the critic is trained by maximising ``train`` and the MI estimate
    is read with ``read`` (the same function, except for JSD whose critic is read as DV).

    Attributes:
        name: registry name.
        train: (scores) -> scalar training objective (maximised; minimised by the worst-case
            perturbation).
        read: (scores) -> scalar MI estimate in nats.
        cap_log_n: the estimate is capped by log N (InfoNCE).
        terms: (scores) -> (N,) per-anchor values whose mean is ``read`` (None: the estimate
            does not split over anchors; intervals then resample whole batches).
    """

    name: str
    train: Callable[[torch.Tensor], torch.Tensor]
    read: Callable[[torch.Tensor], torch.Tensor]
    cap_log_n: bool = False
    terms: Callable[[torch.Tensor], torch.Tensor] | None = None


BOUNDS: Registry[Bound] = Registry("mi-estimator")
BOUNDS.add("dv", Bound("dv", dv_bound, dv_bound), help="Donsker-Varadhan / MINE lower bound (authors' default)")
BOUNDS.add("jsd", Bound("jsd", jsd_bound, dv_bound), help="critic trained with the Deep InfoMax JSD objective, read as DV")
BOUNDS.add("infonce", Bound("infonce", infonce_bound, infonce_bound, cap_log_n=True, terms=infonce_terms),
           help="InfoNCE (capped by log N; lowest variance; the default)")
BOUNDS.add("smile", Bound("smile", jsd_bound, smile_bound), help="critic trained with JSD, read as DV clipped at +-5 (SMILE, Song & Ermon 2020)")
BOUNDS.add("dv-code", Bound("dv-code", lambda s: dv_bound(s, "zero"), lambda s: dv_bound(s, "zero")),
           help="DV with the authors' masked-diagonal quirk (for comparison only)")


def get_bound(name: str | Bound) -> Bound:
    """The :class:`Bound` called ``name`` (``infonce``, ``dv``, ``jsd``, ``smile``, ``dv-code``)."""
    return name if isinstance(name, Bound) else BOUNDS.get(name)


def list_bounds() -> list[str]:
    return BOUNDS.names()
