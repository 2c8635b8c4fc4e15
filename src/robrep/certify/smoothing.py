"""Randomized smoothing: PREDICT and CERTIFY (Cohen, Rosenfeld & Kolter, ICML 2019).

The smoothed classifier of a base classifier ``f`` is
``g(x) = argmax_c P_{delta ~ N(0, sigma^2 I)}(f(x + delta) = c)``. If a lower confidence bound
``p_A`` of the top-class probability is >= 1/2, ``g`` is constant on the L2 ball of radius
``R = sigma * Phi^{-1}(p_A)`` around ``x`` (Cohen et al., Theorem 1 with ``p_B = 1 - p_A``).

Noise is added in [0,1] pixel space before the model's normalization and is *not* clipped
(as in Cohen et al.'s code). Sampling is batched and seeded: each image gets its own
``torch.Generator`` derived from ``(seed, index)``, so results do not depend on which other
images are certified, or in which order.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm
from torch import nn

from ..errors import InputError

__all__ = [
    "ABSTAIN",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "cohen_radius",
    "image_generator",
    "sample_counts",
    "predict",
    "predict_from_counts",
    "certify_from_counts",
    "TSV_COLUMNS",
    "FIRST_ORDER_COLUMNS",
    "certify",
    "SmoothPrediction",
    "Certificate",
    "certified_accuracy",
    "certify_dataset",
    "CertifyRun",
    "certify_dataset_resumable",
    "certified_accuracy_curve",
    "write_tsv",
    "read_tsv",
]

ABSTAIN = -1
"""Class index returned when the smoothed classifier abstains (Cohen et al.'s convention)."""


# --------------------------------------------------------------------------- statistics
def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha}; the usual value is 0.001")


def _check_n_alpha(n: int, alpha: float) -> None:
    """Refuse an ``n`` so small that even n_A = n gives p_lower = alpha**(1/n) < 1/2 (always abstains)."""
    _check_alpha(alpha)
    if n >= 1 and alpha ** (1.0 / n) < 0.5:
        need = math.ceil(math.log(alpha) / math.log(0.5) - 1e-9)
        raise InputError(f"n={n} is too small for alpha={alpha:g}: even if all n samples agreed the lower bound would be "
                         f"{alpha ** (1.0 / n):.3f} < 0.5, so every image abstains; use n >= {need} (typically 100000)")


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound of a binomial proportion.

    It is the alpha-quantile of ``Beta(k, n - k + 1)`` (0 when ``k = 0``), i.e.
    ``statsmodels.proportion_confint(k, n, alpha=2*alpha, method="beta")[0]`` as used by
    Cohen et al.'s CERTIFY. Example: ``k = n = 1e5, alpha = 1e-3 -> 0.99993092``.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials, ``n >= 1``.
        alpha: failure probability in (0, 1).

    Returns:
        The bound in [0, 1).
    """
    _check_alpha(alpha)
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise InputError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if k == 0:
        return 0.0
    return float(beta_dist.ppf(alpha, k, n - k + 1))


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound: the (1 - alpha)-quantile of
    ``Beta(k + 1, n - k)`` (1 when ``k = n``). Same arguments as :func:`clopper_pearson_lower`."""
    _check_alpha(alpha)
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise InputError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if k == n:
        return 1.0
    return float(beta_dist.ppf(1.0 - alpha, k + 1, n - k))


def cohen_radius(p_lower: float, sigma: float) -> float:
    """Cohen et al.'s certified L2 radius ``sigma * Phi^{-1}(p_lower)`` (0 if ``p_lower <= 1/2``).

    Args:
        p_lower: lower confidence bound of the top-class probability, in [0, 1].
        sigma: noise standard deviation in [0,1] pixel units (> 0).
    """
    if sigma <= 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    if p_lower <= 0.5:
        return 0.0
    return float(sigma * norm.ppf(p_lower))


# --------------------------------------------------------------------------- sampling
def image_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, index)`` (independent streams per image)."""
    state = int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)
    g = torch.Generator(device=device)
    g.manual_seed(state)
    return g


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _check_image(x: torch.Tensor, sigma: float, n: int, batch_size: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
        raise InputError(f"x must be one float image of shape (C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}; drop the batch dimension")
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or inf")
    if sigma <= 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    if n < 1 or batch_size < 1:
        raise InputError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")


def _noise_batches(x: torch.Tensor, sigma: float, n: int, batch_size: int,
                   generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x + noise, noise)`` batches, ``noise = sigma * z`` with ``z ~ N(0, I)``, ``n`` in all."""
    left = n
    gdev = generator.device if generator is not None else x.device
    while left > 0:
        b = min(batch_size, left)
        left -= b
        noise = torch.randn((b, *x.shape), generator=generator, device=gdev, dtype=x.dtype).to(x.device) * sigma
        yield x.unsqueeze(0) + noise, noise


@torch.no_grad()
def sample_counts(model: nn.Module, x: torch.Tensor, sigma: float, n: int, *, num_classes: int | None = None,
                  batch_size: int = 1000, generator: torch.Generator | None = None) -> torch.Tensor:
    """Class counts of the base classifier under Gaussian noise, ``#{i : f(x + sigma z_i) = c}``.

    Args:
        model: base classifier mapping (B, C, H, W) [0,1]-images to (B, K) logits.
        x: one image, (C, H, W), pixels in [0,1].
        sigma: noise standard deviation (pixel units).
        n: number of noise samples.
        num_classes: K (default: inferred from the first batch of logits).
        batch_size: noisy images per forward pass.
        generator: source of the noise (its device is used for sampling).

    Returns:
        (K,) int64 counts summing to ``n``, on ``x.device``.
    """
    _check_image(x, sigma, n, batch_size)
    counts: torch.Tensor | None = None
    with _eval_mode(model):
        for xb, _ in _noise_batches(x, sigma, n, batch_size, generator):
            logits = model(xb)
            k = num_classes or logits.shape[1]
            c = torch.bincount(logits.argmax(1), minlength=k)
            counts = c if counts is None else counts + c
    assert counts is not None
    return counts


@dataclass(frozen=True)
class SmoothPrediction:
    """Result of PREDICT.

    Attributes:
        prediction: top class, or ``ABSTAIN`` (-1).
        counts: per-class counts of the ``n`` noise samples.
        pvalue: two-sided binomial test p-value of ``n_A`` out of ``n_A + n_B`` at 1/2.
    """

    prediction: int
    counts: tuple[int, ...]
    pvalue: float


def predict_from_counts(counts: Sequence[int] | torch.Tensor, alpha: float) -> SmoothPrediction:
    """PREDICT's decision from class counts (Cohen et al., Hung & Fithian's top-2 test).

    Abstains unless the two-sided binomial test of ``n_A`` successes in ``n_A + n_B`` trials at
    p = 1/2 has p-value <= alpha (e.g. 510 vs 490 -> p = 0.548, abstain).
    """
    _check_alpha(alpha)
    c = [int(v) for v in (counts.tolist() if isinstance(counts, torch.Tensor) else counts)]
    if len(c) < 2 or sum(c) < 1:
        raise InputError("counts must have >= 2 classes and at least one sample")
    order = sorted(range(len(c)), key=lambda i: (-c[i], i))
    na, nb = c[order[0]], c[order[1]]
    pval = float(binomtest(na, na + nb, 0.5).pvalue)
    return SmoothPrediction(order[0] if pval <= alpha else ABSTAIN, tuple(c), pval)


def predict(model: nn.Module, x: torch.Tensor, sigma: float, n: int, alpha: float = 1e-3, *,
            batch_size: int = 1000, generator: torch.Generator | None = None) -> SmoothPrediction:
    """PREDICT (Cohen et al. 2019): the smoothed class at ``x``, or ABSTAIN.

    With probability >= 1 - alpha the returned class (when not ABSTAIN) equals ``g(x)``.

    Args:
        model: base classifier on [0,1] images.
        x: (C, H, W) image in [0,1].
        sigma: noise level (pixel units).
        n: noise samples.
        alpha: failure probability.
        batch_size: noisy images per forward pass.
        generator: noise source.
    """
    counts = sample_counts(model, x, sigma, n, batch_size=batch_size, generator=generator)
    return predict_from_counts(counts, alpha)


@dataclass(frozen=True)
class Certificate:
    """Result of CERTIFY for one image.

    Attributes:
        prediction: certified class, or ``ABSTAIN`` (-1) when ``p_lower < 1/2``.
        radius: certified L2 radius in pixel units (0 when abstaining).
        p_lower: one-sided (1 - alpha) Clopper-Pearson lower bound of ``p_A``.
        count: ``n_A``, samples (of the ``n`` estimation samples) classified as the selected class.
        n: estimation samples; n0: selection samples.
        selected: the class chosen from the ``n0`` selection samples.
        sigma, alpha: settings.
    """

    prediction: int
    radius: float
    p_lower: float
    count: int
    n: int
    n0: int
    selected: int
    sigma: float
    alpha: float


def certify_from_counts(selected: int, count: int, n: int, n0: int, sigma: float, alpha: float) -> Certificate:
    """CERTIFY's decision from ``n_A`` of ``n`` (see :func:`certify`)."""
    p = clopper_pearson_lower(count, n, alpha)
    if p < 0.5:
        return Certificate(ABSTAIN, 0.0, p, int(count), n, n0, selected, sigma, alpha)
    return Certificate(selected, cohen_radius(p, sigma), p, int(count), n, n0, selected, sigma, alpha)


def certify(model: nn.Module, x: torch.Tensor, sigma: float, n0: int = 100, n: int = 100_000, alpha: float = 1e-3, *,
            batch_size: int = 1000, generator: torch.Generator | None = None) -> Certificate:
    """CERTIFY (Cohen et al. 2019, Algorithm "certify").

    1. ``n0`` noise samples select ``c_A`` (argmax count);
    2. ``n`` fresh samples count ``n_A = #{f(x + delta) = c_A}``;
    3. ``p_lower`` = one-sided (1 - alpha) Clopper-Pearson lower bound of ``n_A / n``;
    4. abstain if ``p_lower < 1/2``, else return ``(c_A, sigma * Phi^{-1}(p_lower))``.

    With probability >= 1 - alpha the class is ``g(x)`` and ``g`` is constant on the L2 ball of
    that radius. With ``n`` samples the radius can never exceed
    ``sigma * Phi^{-1}(alpha^(1/n))`` (3.8115 sigma for n = 1e5, alpha = 1e-3).

    Args:
        model: base classifier on [0,1] images, (B, C, H, W) -> (B, K).
        x: one image (C, H, W) in [0,1].
        sigma: noise level (pixel units).
        n0: selection samples; n: estimation samples.
        alpha: failure probability.
        batch_size: noisy images per forward pass.
        generator: noise source (seeded for reproducibility).
    """
    _check_n_alpha(n, alpha)
    sel = sample_counts(model, x, sigma, n0, batch_size=batch_size, generator=generator)
    c_a = int(sel.argmax())
    counts = sample_counts(model, x, sigma, n, num_classes=sel.numel(), batch_size=batch_size, generator=generator)
    return certify_from_counts(c_a, int(counts[c_a]), n, n0, sigma, alpha)


# --------------------------------------------------------------------------- aggregation
def certified_accuracy(radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, r: float) -> float:
    """Fraction of images certified correct with radius >= r.

    An image counts at radius r when it is correct (certified class == label) and its radius is
    >= r; at r = 0 this is the smoothed classifier's clean accuracy (abstentions count as wrong).
    """
    rad, cor = np.asarray(radii, dtype=float), np.asarray(correct, dtype=bool)
    if rad.shape != cor.shape or rad.size == 0:
        raise InputError(f"radii and correct must be non-empty and of equal length, got {rad.shape} and {cor.shape}")
    return float(np.mean(cor & (rad >= r)))


def certified_accuracy_curve(radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                             grid: Sequence[float] | np.ndarray) -> list[list[float]]:
    """``[[r, certified_accuracy(r)], ...]`` over ``grid`` (the format of the HTML report's curves)."""
    return [[float(r), certified_accuracy(radii, correct, float(r))] for r in grid]


TSV_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
FIRST_ORDER_COLUMNS = ("radiusR", "radiusG", "radiusB", "radius_L1", "radius_LInf", "radius_L2", "radius_cohen")


def write_tsv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = TSV_COLUMNS) -> Path:
    """Write per-image results as Cohen et al.'s tab-separated file (abstain = -1).

    ``rows`` are dicts with at least ``columns``; floats are written with 4 decimals (``nan`` for
    missing values) and ``time`` as seconds.
    """
    from ..io.atomic import atomic_write_text

    lines = ["\t".join(columns)]
    for r in rows:
        vals = []
        for c in columns:
            v = r.get(c)
            if v is None:  # missing, or nan after a JSON round trip
                v = float("nan")
            if isinstance(v, bool):
                v = int(v)
            vals.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        lines.append("\t".join(vals))
    p = Path(path)
    atomic_write_text(p, "\n".join(lines) + "\n")
    return p


def read_tsv(path: str | Path) -> list[dict[str, float]]:
    """Read a file written by :func:`write_tsv` (or Cohen et al.'s ``certify.py``) into dicts of floats."""
    lines = Path(path).read_text().strip().splitlines()
    head = lines[0].split("\t")
    out = []
    for ln in lines[1:]:
        vals = ln.split("\t")
        row: dict[str, float] = {}
        for k, v in zip(head, vals):
            try:
                row[k] = float(v)
            except ValueError:  # Cohen's time column is h:mm:ss.ffffff
                parts = v.split(":")
                row[k] = sum(float(x) * 60 ** i for i, x in enumerate(reversed(parts))) if len(parts) > 1 else math.nan
        out.append(row)
    return out


# --------------------------------------------------------------------------- data sets
def _check_certify_inputs(x: torch.Tensor, y: torch.Tensor, order: int, n: int, alpha: float) -> None:
    if order not in (0, 1):
        raise InputError(f"order must be 0 or 1, got {order}")
    _check_n_alpha(n, alpha)
    if x.ndim != 4 or y.shape[:1] != x.shape[:1]:
        raise InputError(f"need x (N, C, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")


def certify_dataset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, *, order: int = 0, n0: int = 100,
                    n: int = 100_000, alpha: float = 1e-3, batch_size: int = 1000, seed: int = 0,
                    indices: Sequence[int] | None = None,
                    progress: Any = None) -> list[dict[str, Any]]:
    """Certify every image of a batch; one row per image in Cohen et al.'s TSV format.

    Order 0 rows: ``idx label predict radius correct time`` (abstain: predict = -1, radius 0).
    Order 1 rows (:func:`robrep.certify.first_order.certify_first_order`) add ``radiusR radiusG
    radiusB radius_L1 radius_LInf radius_L2 radius_cohen`` (pixel units; channels ``nan`` for
    grayscale), ``p_lower`` and the gradient bounds; ``radius`` is then the first-order L2 radius
    and ``correct`` refers to the first-order prediction (alpha split). ``correct_cohen`` says
    whether Cohen's certificate (full alpha, same samples) is correct.

    Args:
        model: base classifier on [0,1] images.
        x: (N, C, H, W) images in [0,1]; y: (N,) labels.
        sigma: noise level (pixel units).
        order: 0 (Cohen) or 1 (first order, Mohapatra et al. 2020).
        n0, n, alpha, batch_size: CERTIFY settings.
        seed: image i uses the generator ``image_generator(seed, idx_i)``.
        indices: data-set indices of the rows (default 0..N-1), used for ``idx`` and seeding.
        progress: optional callable ``progress(i)`` after each image.
    """
    _check_certify_inputs(x, y, order, n, alpha)
    idxs = list(range(x.shape[0])) if indices is None else [int(i) for i in indices]
    rows: list[dict[str, Any]] = []
    for j, (idx, xi, yi) in enumerate(zip(idxs, x, y.tolist())):
        gen = image_generator(seed, idx, xi.device)
        t0 = time.perf_counter()
        if order == 0:
            c = certify(model, xi, sigma, n0, n, alpha, batch_size=batch_size, generator=gen)
            rows.append({"idx": idx, "label": int(yi), "predict": c.prediction, "radius": c.radius,
                         "correct": int(c.prediction == yi), "time": time.perf_counter() - t0,
                         "count": c.count, "p_lower": c.p_lower})
        else:
            from .first_order import certify_first_order

            f = certify_first_order(model, xi, sigma, n0, n, alpha, batch_size=batch_size, generator=gen)
            ch = list(f.radius_channel) + [math.nan] * (3 - len(f.radius_channel))
            b = f.bounds
            row = {"idx": idx, "label": int(yi), "predict": f.prediction, "radius": f.radius_l2,
                   "correct": int(f.prediction == yi), "time": time.perf_counter() - t0,
                   "radiusR": ch[0], "radiusG": ch[1], "radiusB": ch[2], "radius_L1": f.radius_l1,
                   "radius_LInf": f.radius_linf, "radius_L2": f.radius_l2, "radius_cohen": f.radius_cohen,
                   "correct_cohen": int(f.selected == yi and f.radius_cohen > 0), "count": f.count,
                   "p_lower": f.p_lower}
            if b is not None:
                row |= {"grad_l2_upper": b.l2_upper, "grad_l2_lower": b.l2_lower, "grad_linf_upper": b.linf_upper,
                        "grad_l1_upper": b.l1_upper, "grad_l2_sq": b.l2_sq}
            rows.append(row)
        if progress is not None:
            progress(j)
    return rows


@dataclass(frozen=True)
class CertifyRun:
    """Result of :func:`certify_dataset_resumable`.

    Attributes:
        rows: one row per image, as :func:`certify_dataset` gives them after a JSON round trip
            (missing values such as grayscale channel radii are None).
        chunks_done: chunks merged into ``rows``.
        chunks_resumed: of those, chunks read back from the run folder instead of computed.
        seconds: certification time summed over all chunks (including those of earlier runs).
    """

    rows: list[dict[str, Any]]
    chunks_done: int
    chunks_resumed: int
    seconds: float


def certify_dataset_resumable(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
                              out: str | os.PathLike[str] | None = None, *, chunk_size: int = 50, resume: bool = False,
                              overwrite: bool = False, fingerprint_extra: dict[str, Any] | None = None, order: int = 0,
                              n0: int = 100, n: int = 100_000, alpha: float = 1e-3, batch_size: int = 1000, seed: int = 0,
                              indices: Sequence[int] | None = None, progress: Any = None) -> CertifyRun:
    """:func:`certify_dataset` in chunks of ``chunk_size`` images that can be resumed.

    With ``out``, each finished chunk's rows are written atomically to
    ``out/chunks/chunk-NNNNN.json`` with a fingerprint of the run (model weights, images,
    labels, indices, sigma, order, n0, n, alpha, batch size, seed, chunk size, plus
    ``fingerprint_extra``). ``resume=True`` skips the chunks already there; a chunk of another
    configuration raises :class:`~robrep.errors.InputError`, and so do finished chunks without
    ``resume`` (unless ``overwrite=True`` discards them). Each image draws its noise from
    ``image_generator(seed, idx)``, so the rows do not depend on the chunking or on which run
    computed which chunk (the ``time`` column aside).

    Args:
        model, x, y, sigma, order, n0, n, alpha, batch_size, seed, indices: as :func:`certify_dataset`.
        out: run folder for the chunk files (None: nothing is written).
        chunk_size: images per chunk.
        resume, overwrite: what to do with finished chunks already in ``out``.
        fingerprint_extra: more JSON settings identifying the run (e.g. dataset name and split).
        progress: optional callable ``progress(j)`` after each newly certified image (j: position in x).
    """
    from ..io.atomic import to_jsonable

    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
    if (resume or overwrite) and out is None:
        raise InputError("resume and overwrite need a run folder: pass --out (out=...)")
    _check_certify_inputs(x, y, order, n, alpha)
    idxs = list(range(x.shape[0])) if indices is None else [int(i) for i in indices]
    if len(idxs) != x.shape[0]:
        raise InputError(f"{len(idxs)} indices for {x.shape[0]} images; give one index per image")
    bounds = [(s, min(s + chunk_size, len(idxs))) for s in range(0, len(idxs), chunk_size)]
    store = None
    if out is not None:
        from ..io.chunks import ChunkStore, module_digest, tensor_digest

        fp = {"kind": "certify", "model": module_digest(model), "data": tensor_digest(x, y),
              "indices": tensor_digest(torch.tensor(idxs, dtype=torch.long)), "num_images": len(idxs),
              "sigma": float(sigma), "order": order, "n0": n0, "n": n, "alpha": alpha, "batch_size": batch_size,
              "seed": seed, "chunk_size": chunk_size, **(fingerprint_extra or {})}
        store = ChunkStore.open(out, fp, len(bounds), resume=resume, overwrite=overwrite)
    rows: list[dict[str, Any]] = []
    seconds = 0.0
    for k, (s, e) in enumerate(bounds):
        if store is not None and k in store.done:
            part = store.done[k]
        else:
            t0 = time.perf_counter()
            step = None if progress is None else (lambda j, s=s: progress(s + j))
            new = certify_dataset(model, x[s:e], y[s:e], sigma, order=order, n0=n0, n=n, alpha=alpha,
                                  batch_size=batch_size, seed=seed, indices=idxs[s:e], progress=step)
            part = {"start": s, "stop": e, "seconds": time.perf_counter() - t0,
                    "rows": json.loads(json.dumps(to_jsonable(new)))}  # as read back: nan -> None
            if store is not None:
                store.write(k, part)
        rows += part["rows"]
        seconds += float(part["seconds"])
    return CertifyRun(rows, len(bounds), len(store.done) if store is not None else 0, seconds)
