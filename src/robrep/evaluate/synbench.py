"""SynBench: a task-agnostic robustness-accuracy score of a pretrained encoder.

Ko, Chen, Mohapatra, Das, Daniel, *SynBench: Task-Agnostic Benchmarking of Pretrained
Representations using Synthetic Data* (arXiv 2210.02989); the arithmetic follows the official
code (IBM/synbench ``evaluate_synbench.py``), see ``docs/methods/synbench.md``.

Protocol, for each scale ``s`` in 0.1, 0.2, ..., 4.9:

1. Draw a binary class-conditional Gaussian mixture in pixel space,
   ``x | y ~ N(0.5 + (2y - 1) s u, I_d)`` with ``u = 1 / sqrt(d)`` (all-ones, unit norm),
   ``d = C * H * W`` and ``P(y = 1) = 0.5``; 2048 training and 2048 test realizations.
2. Encode both sets (the encoder normalizes inside, as robrep models do; the official code's
   ImageNet normalization is exactly what a torchvision/timm :class:`RobrepModel` applies).
3. Fit the eps-robust Bayes-optimal linear classifier of the *representations* (class means and
   pooled covariance of the training features) and record its test accuracy and the mean
   normalized margin ("bound") of the correctly classified test points.

The raw data have a closed form (accuracy ``Phi(s)``, expected bound ``f(Phi(s))``); the score is
the ratio of the areas under the expected-bound-vs-threshold-accuracy curves of representation
and raw data above a threshold accuracy ``a_t``. 1 means "as good as the raw-data optimum".

**Clipping.** The paper's inputs are *not* clipped to [0,1] (``clip=False``, the default here);
robrep only checks the [0,1] range at API entry points, so encoders run on them unchanged.
``clip=True`` clips to [0,1] first (a sensitivity check for encoders that never saw values
outside [0,1]); the raw reference is then no longer that data's optimum, so such scores are not
comparable with the paper's.

**The robust classifier in closed form** (docs/methods/synbench.md, derived): with the eigenbasis
``Sigma = F diag(d) F^T`` (eigenvalues below ``eig_tol`` dropped: a pseudo-inverse), the minimizer
of ``(mu - z)^T D^-1 (mu - z)`` over ``||z||_2 <= eps ||mu||_2`` is ``z* = gamma mu / (gamma + d)``,
so ``w = D^-1 (mu - z*)`` is proportional to ``(D + gamma I)^-1 mu``, with ``gamma >= 0`` the root
of ``||z*(gamma)|| = eps ||mu||`` found by bisection (no QCQP solver).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks.precision import Bf16Forward
from ..data.synthetic import gaussian_mixture
from ..errors import InputError
from ..io.chunks import run_chunks
from ..io.shard import Shard
from ..models.base import RobrepModel, representation
from .robust_bayes import (
    _DT,
    ClassStats,
    _as64,
    _check_eps,
    class_stats,
    robust_bayes_direction,
    robust_bayes_gamma,
    robust_bayes_metrics,
)
from .robust_probe import RobustProbeResult, half_class_mean_distance, robust_linear_probe

__all__ = [
    "SCALES",
    "DEFAULT_EPS",
    "DEFAULT_THRESHOLDS",
    "PAPER_THRESHOLDS",
    "ClassStats",
    "RobustProbeResult",
    "SynBenchResult",
    "bound_correct",
    "class_stats",
    "expected_bound_curve",
    "gaussian_robust_accuracy",
    "half_class_mean_distance",
    "plot_synbench",
    "raw_reference",
    "reference_denominator",
    "robust_bayes_direction",
    "robust_bayes_gamma",
    "robust_bayes_metrics",
    "robust_linear_probe",
    "synbench",
    "synbench_scores",
    "synbench_xgrid",
]

#: the paper's mean scales ``np.arange(0.1, 5.0, 0.1)`` (49 values; ||mu||_2 = s).
SCALES: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 50))
#: robustness levels (relative l2 radius eps * ||mu||, eps in [0, 1)) evaluated by default.
DEFAULT_EPS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
#: threshold accuracies reported by default.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9)
#: the thresholds the official script prints.
PAPER_THRESHOLDS: tuple[float, ...] = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)



def synbench_xgrid(points: int = 100) -> torch.Tensor:
    """The threshold-accuracy grid ``linspace(0.6, 1.0, points)`` (float64, (points,))."""
    return torch.linspace(0.6, 1.0, points, dtype=_DT)


def bound_correct(a: torch.Tensor | float) -> torch.Tensor:
    """Expected normalized margin of correctly classified points of the raw mixture (Ko et al.).

    ``f(a) = 1 + phi(Phi^-1(a)) / (a Phi^-1(a))`` for Bayes accuracy ``a`` (the official code's
    ``func_bound_correct``; the mean of a normal truncated to the correct side, in units of
    ``||mu||``). E.g. ``f(0.7) = 1.94718``.

    Args:
        a: accuracies in (0.5, 1) (any shape).

    Returns:
        f(a), float64, same shape.
    """
    a = _as64(a)
    q = torch.special.ndtri(a)
    return 1.0 + torch.exp(-0.5 * q * q) / math.sqrt(2 * math.pi) / (a * q)


def gaussian_robust_accuracy(s: torch.Tensor | float, eps: torch.Tensor | float) -> torch.Tensor:
    """Robust accuracy ``Phi(s - eps)`` of the Bayes classifier of ``N(+-mu, I)``, ``||mu|| = s``,
    under an l2 attack of absolute radius ``eps`` (docs/methods/synbench.md; SynBench's relative radius
    ``eps ||mu||`` gives ``Phi(s (1 - eps))``)."""
    return torch.special.ndtr(_as64(s) - _as64(eps))


def raw_reference(scales: Sequence[float] = SCALES) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form accuracy ``Phi(s)`` and expected bound ``f(Phi(s))`` of the raw data per scale
    (both (S,), float64). The standard and every eps-robust Bayes classifier coincide here."""
    acc = torch.special.ndtr(_as64(list(scales)))
    return acc, bound_correct(acc)


def expected_bound_curve(accuracy: torch.Tensor, bound: torch.Tensor, xgrid: torch.Tensor | None = None) -> torch.Tensor:
    """``E(a) = (1/S) sum_s bound(s) 1[accuracy(s) > a]`` on the threshold grid.

    Args:
        accuracy, bound: (..., S) per-scale accuracy and mean bound.
        xgrid: (G,) thresholds (default :func:`synbench_xgrid`).

    Returns:
        (..., G) float64.
    """
    xg = synbench_xgrid() if xgrid is None else _as64(xgrid)
    acc, bnd = _as64(accuracy), _as64(bound)
    if acc.shape != bnd.shape:
        raise InputError(f"accuracy {tuple(acc.shape)} and bound {tuple(bnd.shape)} must have the same shape")
    above = (acc.unsqueeze(-2) > xg.unsqueeze(-1)).to(_DT)  # (..., G, S)
    return (above * bnd.unsqueeze(-2)).sum(-1) / acc.shape[-1]


def _area_above(curve: torch.Tensor, thresholds: Sequence[float], xgrid: torch.Tensor) -> torch.Tensor:
    mask = (xgrid.unsqueeze(0) >= _as64(list(thresholds)).unsqueeze(1)).to(_DT)  # (T, G)
    return curve @ mask.T  # (..., T)


def reference_denominator(thresholds: Sequence[float] = PAPER_THRESHOLDS, scales: Sequence[float] = SCALES) -> torch.Tensor:
    """``sum_{a in xgrid, a >= a_t} E_raw(a)`` per threshold (T,): 59.62106 at ``a_t = 0.7``."""
    xg = synbench_xgrid()
    return _area_above(expected_bound_curve(*raw_reference(scales), xg), thresholds, xg)


def synbench_scores(accuracy: torch.Tensor, bound: torch.Tensor, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                    scales: Sequence[float] = SCALES) -> torch.Tensor:
    """SynBench scores ``sum_{a >= a_t} E_rep(a) / sum_{a >= a_t} E_raw(a)``.

    Args:
        accuracy, bound: (..., S) representation-side accuracy and mean bound per scale.
        thresholds: threshold accuracies ``a_t`` in [0.6, 1).
        scales: the S scales (for the raw reference).

    Returns:
        (..., T) float64 scores (1 = the raw-data optimum; larger is better).
    """
    _check_thresholds(thresholds)
    if _as64(accuracy).shape[-1] != len(scales):
        raise InputError(f"accuracy has {_as64(accuracy).shape[-1]} scales but {len(scales)} scales were given")
    xg = synbench_xgrid()
    num = _area_above(expected_bound_curve(accuracy, bound, xg), thresholds, xg)
    return num / reference_denominator(thresholds, scales)


def _check_thresholds(thresholds: Sequence[float]) -> None:
    if len(thresholds) == 0 or any(not (0.6 <= float(t) < 1.0) for t in thresholds):
        raise InputError(f"thresholds must be in [0.6, 1) (the score's accuracy grid), got {list(thresholds)}")


# ------------------------------------------------------------------------------------------------
# the benchmark


@dataclass(frozen=True)
class SynBenchResult:
    """SynBench measurements of one encoder (all tensors float64 on CPU).

    Attributes:
        scales: (S,) mean scales ``||mu||``.
        eps: the E relative robustness radii.
        thresholds: the T threshold accuracies.
        accuracy, bound: (E, S) representation-side test accuracy and mean bound.
        raw_accuracy, raw_bound: (S,) closed-form raw-data reference.
        xgrid: (G,) threshold-accuracy grid; curve: (E, G) expected bound; raw_curve: (G,).
        score: (E, T) SynBench scores.
        feature_dim: representation size D.
        config: the protocol settings (JSON).
        seconds: wall time.
    """

    scales: tuple[float, ...]
    eps: tuple[float, ...]
    thresholds: tuple[float, ...]
    accuracy: torch.Tensor
    bound: torch.Tensor
    raw_accuracy: torch.Tensor
    raw_bound: torch.Tensor
    xgrid: torch.Tensor
    curve: torch.Tensor
    raw_curve: torch.Tensor
    score: torch.Tensor
    feature_dim: int
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def scores(self) -> dict[str, dict[str, float]]:
        """``{threshold: {eps: score}}`` with keys formatted as ``"0.7"`` / ``"0.2"``."""
        return {_key(t): {_key(e): float(self.score[i, j]) for i, e in enumerate(self.eps)} for j, t in enumerate(self.thresholds)}

    def best_eps(self, threshold: float = 0.7) -> float:
        """The eps with the largest score at ``threshold`` (the smallest such eps on ties)."""
        j = self._tindex(threshold)
        col = self.score[:, j]
        return self.eps[int(torch.nonzero(col == col.max())[0, 0])]

    def curve_points(self, eps: float | None = None) -> list[list[float]]:
        """``[[a, E(a)], ...]`` for ``eps`` (default: the first eps), for plots and reports."""
        i = 0 if eps is None else self._eindex(eps)
        return [[float(a), float(v)] for a, v in zip(self.xgrid, self.curve[i])]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (scores, per-scale curves, best eps, config)."""
        return {
            "scores": self.scores(),
            "best_eps": {_key(t): self.best_eps(t) for t in self.thresholds},
            "eps": list(self.eps),
            "thresholds": list(self.thresholds),
            "scales": list(self.scales),
            "accuracy": {_key(e): self.accuracy[i].tolist() for i, e in enumerate(self.eps)},
            "bound": {_key(e): self.bound[i].tolist() for i, e in enumerate(self.eps)},
            "raw_accuracy": self.raw_accuracy.tolist(),
            "raw_bound": self.raw_bound.tolist(),
            "synbench_curve": self.curve_points(),
            "synbench_curves": {_key(e): self.curve_points(e) for e in self.eps},
            "synbench_curve_raw": [[float(a), float(v)] for a, v in zip(self.xgrid, self.raw_curve)],
            "feature_dim": self.feature_dim,
            "config": self.config,
            "seconds": self.seconds,
        }

    def _tindex(self, t: float) -> int:
        for j, v in enumerate(self.thresholds):
            if abs(v - float(t)) < 1e-9:
                return j
        raise InputError(f"threshold {t} was not computed; choose one of {list(self.thresholds)}")

    def _eindex(self, e: float) -> int:
        for i, v in enumerate(self.eps):
            if abs(v - float(e)) < 1e-9:
                return i
        raise InputError(f"eps {e} was not computed; choose one of {list(self.eps)}")


def _key(v: float) -> str:
    return f"{float(v):g}"


Encoder = nn.Module | Callable[[torch.Tensor], torch.Tensor]


def synbench(
    encoder: Encoder,
    *,
    input_shape: Sequence[int] | None = None,
    layer: str = "penultimate",
    eps: Sequence[float] = DEFAULT_EPS,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    scales: Sequence[float] = SCALES,
    n_train: int = 2048,
    n_test: int = 2048,
    prior: float = 0.5,
    seed: int = 12,
    batch_size: int = 256,
    clip: bool = False,
    eig_tol: float = 1e-6,
    device: torch.device | str | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    shard: Shard | None = None,
    precision: str = "fp32",
) -> SynBenchResult:
    """SynBench score of an encoder (Ko et al., arXiv 2210.02989; official-code protocol).

    Args:
        encoder: a :class:`RobrepModel` (its ``layer`` representation is used; inputs are
            normalized inside the model), or any module/callable mapping (N, C, H, W) pixel
            batches to (N, ...) features (then ``input_shape`` is required; normalize yourself).
        input_shape: (C, H, W) of the synthetic images (default: the model's).
        layer: representation layer of a :class:`RobrepModel` (``penultimate``, ``logits`` or a
            module name).
        eps: relative l2 robustness radii in [0, 1) (eps * ||mu~|| in representation space).
        thresholds: threshold accuracies a_t in [0.6, 1).
        scales: mean scales ``||mu||`` (the paper: 0.1 ... 4.9).
        n_train, n_test: realizations per scale (paper 2048 each).
        prior: P(y = 1) (paper 0.5).
        seed: base seed; the data of scale index i and split are a fixed function of
            (seed, i, split), drawn in chunks of 256 whatever ``batch_size`` is.
        batch_size: encoder batch size (memory only; results do not depend on it).
        clip: clip the synthetic images to [0, 1] (not the paper's protocol; see module doc).
        eig_tol: covariance eigenvalues at or below it are dropped (official code: 1e-6).
        device: where to run the encoder (default: the encoder's parameters' device, else CPU).
        out: run folder: each finished scale (one chunk: its accuracy and bound for every eps)
            is written atomically to ``out/chunks/`` with a fingerprint of the run (encoder
            weights, layer, input shape, eps, scales, sizes, prior, seed, clip, eig_tol, batch
            size); ``None`` writes nothing. Needs an ``nn.Module`` encoder.
        resume, overwrite: skip the scales already finished in ``out`` (a chunk of another
            configuration is refused), or discard them; finished chunks without either raise.
        shard: this process's place in a ``torchrun`` job (needs ``out``): each rank computes
            its round-robin share of the unfinished scales and every rank returns the merged
            result, equal to a single-process run (the data of a scale depend on the seed and
            the scale's index only; :mod:`robrep.io.shard`).
        precision: the encoder's forward passes: ``fp32``, ``bf16`` (a bf16 copy of the encoder,
            float32 features; needs native bf16) or ``auto`` (bf16 where native, else fp32);
            the robust Bayes classifier and the score are always computed in float64 from the
            features. ``config`` records the setting and what ran (``precision``,
            ``precision_ran``).

    Returns:
        :class:`SynBenchResult` (scores ``(E, T)``, per-scale accuracy/bound, curves).
    """
    t0 = time.perf_counter()
    eps_t = _check_synbench_args(eps, thresholds, scales, n_train, n_test, prior, batch_size)
    fn, shape, dev = _feature_map(encoder, input_shape, layer, device)
    fwd = Bf16Forward(fn, precision, dev)
    u = torch.full(shape, 1.0 / math.sqrt(math.prod(shape)))

    def column(i: int) -> dict[str, Any]:  # one scale: its accuracy and bound for every eps
        s = float(scales[i])

        def draw(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + i * 2 + (split == "test"))
            return _mixture_features(fwd, s * u, n, g, prior=prior, clip=clip, batch_size=batch_size, dev=dev)

        htr, ytr = draw("train", n_train)
        hte, yte = draw("test", n_test)
        if not torch.isfinite(htr).all():
            raise InputError(f"the encoder returned NaN/inf features at scale {s}; check the encoder")
        a, b = robust_bayes_metrics(class_stats(htr, ytr), hte, yte, eps_t, eig_tol)
        return {"accuracy": a.tolist(), "bound": b.tolist(), "feature_dim": int(htr.shape[1])}

    store = None
    if out is not None:
        fp = {"kind": "synbench", "input_shape": list(shape), "layer": layer if isinstance(encoder, RobrepModel) else None,
              "eps": list(eps_t), "scales": [float(s) for s in scales], "n_train": n_train, "n_test": n_test, "prior": prior,
              "seed": seed, "clip": clip, "eig_tol": eig_tol, "batch_size": batch_size, "precision": precision}
        store = _open_store(out, encoder, fp, len(scales), resume, overwrite, shard)
    elif resume or overwrite:
        raise InputError("resume and overwrite need a run folder: pass --out (out=...)")
    cols = run_chunks(store, len(scales), column, shard=shard)
    acc = torch.tensor([[_num(v) for v in c["accuracy"]] for c in cols], dtype=_DT).T.contiguous()  # (E, S)
    bnd = torch.tensor([[_num(v) for v in c["bound"]] for c in cols], dtype=_DT).T.contiguous()
    dim = int(cols[-1]["feature_dim"]) if cols else 0

    raw_acc, raw_bnd = raw_reference(scales)
    xg = synbench_xgrid()
    cfg = {"input_shape": list(shape), "layer": layer if isinstance(encoder, RobrepModel) else None,
           "n_train": n_train, "n_test": n_test, "prior": prior, "seed": seed, "clip": clip,
           "eig_tol": eig_tol, "num_scales": len(scales), "scale_min": float(min(scales)), "scale_max": float(max(scales)),
           "precision": precision, "precision_ran": fwd.ran}
    return SynBenchResult(
        scales=tuple(float(s) for s in scales), eps=eps_t, thresholds=tuple(float(t) for t in thresholds),
        accuracy=acc, bound=bnd, raw_accuracy=raw_acc, raw_bound=raw_bnd, xgrid=xg,
        curve=expected_bound_curve(acc, bnd, xg), raw_curve=expected_bound_curve(raw_acc, raw_bnd, xg),
        score=synbench_scores(acc, bnd, thresholds, scales), feature_dim=int(dim), config=cfg,
        seconds=time.perf_counter() - t0,
    )


def _num(v: float | None) -> float:
    """A stored number (JSON keeps NaN as null)."""
    return float("nan") if v is None else float(v)


def _open_store(out: str | Path, encoder: Encoder, fingerprint: dict[str, Any], num_scales: int, resume: bool,
                overwrite: bool, shard: Shard | None) -> Any:
    """The chunk store of a SynBench run folder (one chunk per scale), fingerprinted by the encoder's weights."""
    from ..io.chunks import module_digest, open_store

    if not isinstance(encoder, nn.Module):
        raise InputError("a SynBench run folder (out=...) needs an nn.Module encoder: its weights go into the run's "
                         "fingerprint; wrap the function in a module or drop out=")
    fp = {**fingerprint, "model": module_digest(encoder)}
    return open_store(out, fp, num_scales, resume=resume, overwrite=overwrite, shard=shard, unit="scales",
                      fewer="more --scales")


def _check_synbench_args(eps: Sequence[float], thresholds: Sequence[float], scales: Sequence[float], n_train: int,
                         n_test: int, prior: float, batch_size: int) -> tuple[float, ...]:
    """Validate :func:`synbench`'s settings; returns the radii as floats."""
    eps_t = _check_eps(eps)
    _check_thresholds(thresholds)
    if n_train < 4 or n_test < 1:
        raise InputError(f"n_train must be >= 4 and n_test >= 1, got {n_train} and {n_test}")
    if not (0.0 < prior < 1.0):
        raise InputError(f"prior must be in (0, 1), got {prior}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if len(scales) == 0 or any(float(s) <= 0 for s in scales):
        raise InputError(f"scales must be positive, got {list(scales)}")
    return eps_t


def _feature_map(encoder: Encoder, input_shape: Sequence[int] | None, layer: str, device: torch.device | str | None
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], tuple[int, ...], torch.device]:
    """(pixels -> features map in eval mode, the synthetic images' (C, H, W), the device to run on)."""
    fn: Callable[[torch.Tensor], torch.Tensor]
    if isinstance(encoder, RobrepModel):
        encoder.eval()
        fn = representation(encoder, layer)
        shape = tuple(int(v) for v in (input_shape or encoder.input_shape))
    else:
        if input_shape is None:
            raise InputError("input_shape=(C, H, W) is required for an encoder that is not a RobrepModel")
        if isinstance(encoder, nn.Module):
            encoder.eval()
        fn = encoder
        shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"input_shape must be (C, H, W), got {shape}")
    if device is None:
        p = next(iter(encoder.parameters()), None) if isinstance(encoder, nn.Module) else None
        dev = p.device if p is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
    return fn, shape, dev


def _mixture_features(fn: Callable[[torch.Tensor], torch.Tensor], mu: torch.Tensor, n: int, g: torch.Generator, *,
                      prior: float, clip: bool, batch_size: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, D) float64 and labels of ``n`` draws of the Gaussian mixture ``0.5 +- mu``,
    drawn in chunks of 256 from ``g`` (so the data do not depend on ``batch_size``)."""
    hs, ys = [], []
    for start in range(0, n, 256):
        x, y = gaussian_mixture(min(256, n - start), mu, center=0.5, prior=prior, generator=g)
        if clip:
            x = x.clamp_(0.0, 1.0)
        for b in range(0, len(x), batch_size):
            with torch.inference_mode():
                h = fn(x[b : b + batch_size].to(dev))
            hs.append(h.reshape(h.shape[0], -1).to("cpu", _DT))
        ys.append(y)
    return torch.cat(hs), torch.cat(ys)


def plot_synbench(result: SynBenchResult, path: str | Path, title: str | None = None) -> Path:
    """Expected bound vs threshold accuracy for the raw data and each eps (a PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    ax.plot(result.xgrid, result.raw_curve, color="crimson", lw=2, label="raw data, Bayes (reference)")
    j7 = result.thresholds.index(0.7) if 0.7 in result.thresholds else 0
    for i, e in enumerate(result.eps):
        ax.plot(result.xgrid, result.curve[i], lw=1.3,
                label=f"representation, eps={e:g} (score@{result.thresholds[j7]:g} = {float(result.score[i, j7]):.3f})")
    ax.set_xlabel("threshold accuracy $a_t$")
    ax.set_ylabel("expected bound $E(a_t)$")
    ax.set_ylim(0, 1.2)
    ax.grid(True, linestyle="-.", alpha=0.6)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p
