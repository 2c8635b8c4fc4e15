"""Certification runs over data sets: per-image rows, resumable chunks, TSV files, summaries.

The primitives live in :mod:`robrep.certify.smoothing` (CERTIFY/PREDICT for one image, Cohen et
al. 2019) and :mod:`robrep.certify.first_order` (first-order radii, Mohapatra et al. 2020); this
module loops them over images (:func:`certify_dataset`, :func:`certify_dataset_resumable`),
writes and reads Cohen et al.'s TSV format, and turns per-image rows into certified-accuracy
curves and tables (:func:`summarize_certification`, including the union bound of the zeroth- and
first-order certificates) and a figure (:func:`plot_certified_accuracy`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.atomic import atomic_write_text, to_jsonable
from ..io.chunks import module_digest, open_store, run_chunks, tensor_digest
from ..io.shard import Shard
from .first_order import certify_first_order
from .smoothing import (
    certified_accuracy,
    certified_accuracy_curve,
    certify,
    check_n_alpha,
    image_generator,
)

__all__ = [
    "TSV_COLUMNS",
    "FIRST_ORDER_COLUMNS",
    "CertifyRun",
    "certify_dataset",
    "certify_dataset_resumable",
    "default_radii",
    "plot_certified_accuracy",
    "read_tsv",
    "summarize_certification",
    "tsv_columns",
    "write_tsv",
]


# --------------------------------------------------------------------------- TSV files
TSV_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
FIRST_ORDER_COLUMNS = ("radiusR", "radiusG", "radiusB", "radius_L1", "radius_LInf", "radius_L2", "radius_cohen")


def write_tsv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = TSV_COLUMNS) -> Path:
    """Write per-image results as Cohen et al.'s tab-separated file (abstain = -1).

    ``rows`` are dicts with at least ``columns``; floats are written with 4 decimals (``nan`` for
    missing values) and ``time`` as seconds.
    """
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
    check_n_alpha(n, alpha)
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
                              indices: Sequence[int] | None = None, progress: Any = None,
                              shard: Shard | None = None) -> CertifyRun:
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
        shard: this process's place in a ``torchrun`` job: each rank certifies its share of the
            missing chunks into ``out`` and every rank returns all rows (:mod:`robrep.io.shard`).
    """
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
        fp = {"kind": "certify", "model": module_digest(model), "data": tensor_digest(x, y),
              "indices": tensor_digest(torch.tensor(idxs, dtype=torch.long)), "num_images": len(idxs),
              "sigma": float(sigma), "order": order, "n0": n0, "n": n, "alpha": alpha, "batch_size": batch_size,
              "seed": seed, "chunk_size": chunk_size, **(fingerprint_extra or {})}
        store = open_store(out, fp, len(bounds), resume=resume, overwrite=overwrite, shard=shard)

    def chunk(k: int) -> dict[str, Any]:
        s, e = bounds[k]
        t0 = time.perf_counter()
        step = None if progress is None else (lambda j: progress(s + j))
        new = certify_dataset(model, x[s:e], y[s:e], sigma, order=order, n0=n0, n=n, alpha=alpha,
                              batch_size=batch_size, seed=seed, indices=idxs[s:e], progress=step)
        return {"start": s, "stop": e, "seconds": time.perf_counter() - t0,
                "rows": json.loads(json.dumps(to_jsonable(new)))}  # as read back: nan -> None

    parts = run_chunks(store, len(bounds), chunk, shard=shard)
    rows = [r for part in parts for r in part["rows"]]
    seconds = sum(float(part["seconds"]) for part in parts)
    return CertifyRun(rows, len(bounds), len(store.done) if store is not None else 0, seconds)


# --------------------------------------------------------------------------- summaries
def default_radii(sigma: float) -> list[float]:
    """The radii of the summary tables: multiples of sigma/2 up to 4 sigma."""
    return [round(k * sigma / 2, 6) for k in range(9)]


def tsv_columns(order: int) -> tuple[str, ...]:
    """The TSV columns of an order-0 (Cohen et al.) or order-1 (first-order radii added) run."""
    return TSV_COLUMNS if order == 0 else TSV_COLUMNS[:4] + FIRST_ORDER_COLUMNS + TSV_COLUMNS[4:]


def summarize_certification(rows: Sequence[dict[str, Any]], sigma: float, order: int, d: int,
                            radii: Sequence[float] | None = None) -> dict[str, Any]:
    """Certified-accuracy curves, tables and mean radii from the per-image rows of :func:`certify_dataset`.

    Order 0: ``certified_accuracy_vs_radius`` (101 radii from 0 to 4 sigma), ``certified_accuracy_table``
    (at ``radii``), ``mean_radius`` (over correct images), ``smoothed_accuracy``, ``abstain_rate``.

    Order 1 adds, per certificate, ``certified_accuracy_vs_radius_<kind>`` / ``..._table_<kind>``
    for Cohen's radius, the first-order L2/L1/Linf radii and the colour channels (when all rows
    have them). The main L2 curve is the union bound ``max(first-order, zeroth-order)`` of the
    two certificates (level 1 - 1.5 alpha for L2, 1 - 2 alpha for L1 and Linf; Mohapatra et al.
    2020); Cohen's L2 radius certifies the Linf ball of radius ``r / sqrt(d)``.

    Args:
        rows: per-image rows (dicts, as written by :func:`certify_dataset` or read back from JSON).
        sigma: noise level (sets the curves' range and the default table radii).
        order: 0 or 1, as the rows were made.
        d: input dimension ``C * H * W`` (for the Linf conversion).
        radii: table radii (default :func:`default_radii`).
    """
    radii = list(radii) if radii else default_radii(sigma)
    label = np.array([r["label"] for r in rows])
    out: dict[str, Any] = {}

    def block(name: str, rad: np.ndarray, cor: np.ndarray, grid_max: float, table: list[float]) -> None:
        grid = np.linspace(0.0, max(grid_max, 1e-12), 101)
        out[name] = certified_accuracy_curve(rad, cor, grid)
        out[name.replace("vs_radius", "table")] = {f"{r:g}": certified_accuracy(rad, cor, r) for r in table}
        out[name.replace("certified_accuracy_vs_radius", "mean_radius")] = float(rad[cor].mean()) if cor.any() else 0.0

    rmax = 4.0 * sigma
    if order == 0:
        rad = np.array([r["radius"] for r in rows])
        cor = np.array([bool(r["correct"]) for r in rows])
        block("certified_accuracy_vs_radius", rad, cor, rmax, radii)
        out["smoothed_accuracy"] = float(cor.mean())
        out["abstain_rate"] = float(np.mean([r["predict"] == -1 for r in rows]))
        return out
    pred = np.array([r["predict"] for r in rows])
    cor_fo = pred == label
    cor_co = np.array([bool(r["correct_cohen"]) for r in rows])
    cohen = np.array([r["radius_cohen"] for r in rows])
    fo = {k: np.array([r[k] for r in rows]) for k in ("radius_L2", "radius_L1", "radius_LInf")}
    # max(first-order, zeroth-order): union bound, level 1 - 1.5 alpha (L2) or 1 - 2 alpha (L1, Linf)
    best_l2 = np.where(cor_fo, fo["radius_L2"], 0.0)
    best_l2 = np.maximum(best_l2, np.where(cor_co, cohen, 0.0))
    best_l1 = np.maximum(np.where(cor_fo, fo["radius_L1"], 0.0), np.where(cor_co, cohen, 0.0))
    best_linf = np.maximum(np.where(cor_fo, fo["radius_LInf"], 0.0), np.where(cor_co, cohen / math.sqrt(d), 0.0))
    any_cor = cor_fo | cor_co
    block("certified_accuracy_vs_radius", best_l2, any_cor & (best_l2 >= 0), rmax, radii)
    block("certified_accuracy_vs_radius_cohen", cohen, cor_co, rmax, radii)
    block("certified_accuracy_vs_radius_l2_first_order", fo["radius_L2"], cor_fo, rmax, radii)
    block("certified_accuracy_vs_radius_l1_first_order", fo["radius_L1"], cor_fo, rmax, radii)
    block("certified_accuracy_vs_radius_l1_best", best_l1, any_cor, rmax, radii)
    linf_table = [r / math.sqrt(d) for r in radii]
    block("certified_accuracy_vs_radius_linf_first_order", fo["radius_LInf"], cor_fo, rmax / math.sqrt(d), linf_table)
    block("certified_accuracy_vs_radius_linf_cohen", cohen / math.sqrt(d), cor_co, rmax / math.sqrt(d), linf_table)
    block("certified_accuracy_vs_radius_linf_best", best_linf, any_cor, rmax / math.sqrt(d), linf_table)
    # missing channel radii are nan (JSON null after a round trip)
    chans = [k for k in ("radiusR", "radiusG", "radiusB") if not any(r.get(k) is None or math.isnan(r[k]) for r in rows)]
    for k in chans:
        block(f"certified_accuracy_vs_radius_{k}", np.array([r[k] for r in rows]), cor_fo, rmax, radii)
    out["smoothed_accuracy"] = float(cor_fo.mean())
    out["smoothed_accuracy_cohen"] = float(cor_co.mean())
    out["abstain_rate"] = float(np.mean(pred == -1))
    return out


def plot_certified_accuracy(metrics: dict[str, Any], path: str | os.PathLike[str], title: str) -> Path:
    """Plot the L2 certified-accuracy curves of :func:`summarize_certification` to a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in metrics if k.startswith("certified_accuracy_vs_radius") and "linf" not in k]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    for k in keys:
        xy = metrics[k]
        lab = k.replace("certified_accuracy_vs_radius", "").strip("_") or "main (L2)"
        ax.plot([a for a, _ in xy], [b for _, b in xy], label=lab)
    ax.set_xlabel("radius (pixel units)")
    ax.set_ylabel("certified accuracy")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
