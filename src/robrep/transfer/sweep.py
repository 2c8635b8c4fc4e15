"""Transfer sweeps: every source (an eps grid) x target x training fraction x mode x seed.

The accuracy-vs-eps experiment of Salman et al. (NeurIPS 2020, docs/methods/transfer.md): source models
adversarially trained at several eps (including eps = 0) are transferred to target tasks with
fixed-feature and full-network fine-tuning; the table reports, per cell, the mean and spread over
seeds, and whether some eps > 0 beats eps = 0.

Resumable: each cell writes one JSON file ``<out>/cells/<cell id>.json`` atomically
(:func:`robrep.io.atomic.atomic_write_json`); a rerun skips cells whose file exists (after
checking that it was made with the same settings), so an interrupted sweep loses at most the
cell in progress.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..data import ImageData, load_dataset
from ..errors import InputError, RobrepError
from ..evaluate import evaluate
from ..evaluate.probe import eval_attack_kwargs
from ..io.atomic import atomic_write_json, to_jsonable
from ..io.shard import Shard, agree
from ..models import RobrepModel, create_model, load_with_meta, split_source
from ..threats import threat
from .core import MODES, TransferConfig, transfer

__all__ = ["Cell", "SourceSpec", "best_vs_standard", "cell_id", "load_records", "load_source", "plot_sweep", "run_sweep", "source_threat", "summarize_sweep",
           "table_markdown"]


@dataclass(frozen=True)
class SourceSpec:
    """A source model of the sweep.

    Attributes:
        name: label in tables and file names (letters, digits, ``.-_``).
        path: a robrep (or other registered format) checkpoint, or a model name such as
            ``tv:resnet18`` (see :func:`load_source`).
        norm: the norm it was adversarially trained with (None for eps = 0).
        eps: its training radius (0 = standard training).
    """

    name: str
    path: str
    norm: str | None
    eps: float


@dataclass(frozen=True)
class Cell:
    """One transfer run of the sweep."""

    source: str
    target: str
    fraction: float
    resolution: int | None
    mode: str
    seed: int


def cell_id(cell: Cell) -> str:
    """File-name-safe identifier of a cell, e.g. ``linf-0.1__mnist__f0.1__r-__fixed__s0``."""
    res = "-" if cell.resolution is None else str(cell.resolution)
    raw = f"{cell.source}__{cell.target}__f{cell.fraction:g}__r{res}__{cell.mode}__s{cell.seed}"
    return re.sub(r"[^A-Za-z0-9._=-]", "_", raw)


def load_source(spec: str, *, arch: str | None = None, trust: bool = False, weights: str | None = None,
                input_shape: Sequence[int] | None = None, num_classes: int = 1000,
                device: str | torch.device = "cpu") -> tuple[RobrepModel, dict[str, Any]]:
    """A source encoder from a checkpoint file or a model name.

    * An existing path: :func:`robrep.models.load_with_meta` (robrep safetensors, or any format a
      loader in ``robrep.models.LOADERS`` recognises; ``arch``/``trust`` are passed on).
    * ``tv:<name>`` / ``timm:<name>`` / a robrep architecture: :func:`robrep.models.create_model`
      with ``weights`` (torchvision weight name, e.g. ``IMAGENET1K_V1``; timm: any value means
      ``pretrained=True``); both download on first use, outside robrep. Without ``weights`` the
      model is randomly initialized (useful only for tests). Names carry eps = 0 unless the
      caller says otherwise.
    """
    p = Path(spec)
    if p.exists():
        return load_with_meta(p, arch=arch, trust=trust, device=device)
    if weights is None and split_source(spec)[0] in ("hf", "open_clip"):  # encoders with a source syntax of their own
        return load_with_meta(spec, device=device)
    if not (spec.startswith("tv:") or spec.startswith("timm:") or ":" not in spec):
        raise InputError(f"source {spec!r} is neither an existing checkpoint nor a model name (tv:..., timm:..., robrep list models)")
    if "/" in spec or spec.endswith(".safetensors") or spec.endswith(".pt"):
        raise InputError(f"checkpoint {spec} does not exist; check the path")
    shape = tuple(int(v) for v in (input_shape or ((3, 224, 224) if ":" in spec else (1, 28, 28))))
    kw: dict[str, Any] = {}
    if weights is not None:
        kw = {"weights": weights} if spec.startswith("tv:") else {"pretrained": True}
    model = create_model(spec, num_classes=num_classes, input_shape=shape, **kw).to(device).eval()
    return model, {"format": "name", "arch": spec, "weights": weights, "threat": None}


def source_threat(meta: dict[str, Any]) -> tuple[str | None, float]:
    """(norm, eps) a source was trained with, from its checkpoint metadata ((None, 0.0) if none)."""
    t = meta.get("threat") or None
    if not t or float(t.get("eps", 0.0)) == 0.0:
        return None, 0.0
    return str(t["norm"]), float(t["eps"])


def _load_split(name: str, split: str, root: str | None, cache: dict[tuple[str, str], ImageData]) -> ImageData:
    if (name, split) not in cache:
        cache[(name, split)] = load_dataset(name, split, root=root)
    return cache[(name, split)]


def _same_settings(done: dict[str, Any], src: SourceSpec, cfg: TransferConfig) -> bool:
    # cells written before the evaluation attack was a setting were evaluated with PGD
    return {"eval_attack": "pgd"} | done.get("config", {}) == to_jsonable(cfg.to_dict()) and done.get("source", {}).get("path") == src.path


def _evaluate_source(src: SourceSpec, m: RobrepModel, mt: dict[str, Any], out: Path, base: TransferConfig,
                     data_root: str | None, data_cache: dict[tuple[str, str], ImageData]) -> None:
    """Record a source's clean and robust accuracy on its own test split in ``out/sources``."""
    ds = mt.get("dataset")
    rec: dict[str, Any] = {"source": to_jsonable(src), "dataset": ds}
    if ds:
        test = _load_split(ds, "test", data_root, data_cache)
        thr = threat(src.norm, src.eps) if (src.norm and src.eps > 0) else None
        ev = evaluate(m, test, threat=thr, attack=base.eval_attack, attack_kwargs=eval_attack_kwargs(base.eval_attack, base.eval_steps),
                      n=base.eval_n, seed=0)
        full = evaluate(m, test)
        rec.update({"clean_accuracy": full.clean_accuracy, "n_clean": full.n,
                    "robust_accuracy": ev.robust_accuracy, "n_robust": ev.n, "threat": ev.threat, "attack": ev.attack})
    atomic_write_json(out / "sources" / f"{src.name}.json", rec)


def run_sweep(
    sources: Sequence[SourceSpec],
    targets: Sequence[str],
    out: str | Path,
    *,
    fractions: Sequence[float] = (1.0,),
    modes: Sequence[str] = MODES,
    seeds: Sequence[int] = (0,),
    resolutions: Sequence[int | None] = (None,),
    base: TransferConfig | None = None,
    data_root: str | None = None,
    device: str | torch.device = "cpu",
    source_eval: bool = True,
    trust: bool = False,
    log: Callable[[str], None] | None = None,
    shard: Shard | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) a transfer sweep; return every cell's record.

    Args:
        sources: the source models (eps grid); eps = 0 must be among them for the paper's claim.
        targets: target dataset names (``robrep list datasets``).
        out: sweep folder: ``cells/*.json`` (one per cell), ``sources/*.json`` (source accuracy).
        fractions: training fractions of each target (class-balanced, seeded by the cell seed).
        modes: ``fixed`` and/or ``full``.
        seeds: transfer seeds (training subset, head init, data order, attacks).
        resolutions: effective target resolutions (None = native, resized to the source's size).
        base: all other transfer settings (mode, seed, fraction, resolution are set per cell).
        source_eval: also record each source's clean and robust accuracy on its own test split
            (first ``base.eval_n`` images, PGD at its training threat).
        shard: this process's place in a ``torchrun`` job: the unfinished cells are dealt
            round-robin to the ranks, each writes its cells into ``out``, and after a barrier every
            rank returns all records (:mod:`robrep.io.shard`). Each cell's randomness comes from
            its own seed, so the records do not depend on the number of ranks.

    Returns:
        records ``{"cell", "source", "config", "metrics"}`` in sweep order.
    """
    base = base if base is not None else TransferConfig()
    out = Path(out)
    for m in modes:
        if m not in MODES:
            raise InputError(f"mode must be 'fixed' or 'full', got {m!r}")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise InputError(f"source names must be unique, got {names}")
    data_cache: dict[tuple[str, str], ImageData] = {}
    records: list[dict[str, Any]] = []
    loaded: dict[str, tuple[RobrepModel, dict[str, Any]]] = {}

    def get_model(spec: SourceSpec) -> tuple[RobrepModel, dict[str, Any]]:
        """Load a source lazily (only when one of its cells is not finished), one at a time."""
        if spec.name not in loaded:
            loaded.clear()
            loaded[spec.name] = load_source(spec.path, trust=trust, device=device)
        return loaded[spec.name]

    shard = shard or Shard()
    if source_eval:
        todo = [src for src in sources if not (out / "sources" / f"{src.name}.json").is_file()]
        for src in shard.assign(todo):
            _evaluate_source(src, *get_model(src), out, base, data_root, data_cache)
    cells = []
    for src in sources:
        for target in targets:
            for frac in fractions:
                for res in resolutions:
                    for mode in modes:
                        for seed in seeds:
                            cell = Cell(src.name, target, float(frac), res, mode, int(seed))
                            cfg = replace(base, mode=mode, seed=int(seed), target_fraction=float(frac), resolution=res)
                            cells.append((src, cell, cfg, out / "cells" / f"{cell_id(cell)}.json"))
    pending = [c for c in cells if not c[3].is_file()]
    for src, cell, cfg, path in cells:  # finished cells of other settings: refuse before any work
        if path.is_file() and not _same_settings(json.loads(path.read_text()), src, cfg):
            raise InputError(f"{path} was made with other settings; use another --out or the same options")
        if log and path.is_file():
            log(f"skip {cell_id(cell)} (done)")
    error: str | None = None
    try:
        for src, cell, cfg, path in shard.assign(pending):
            m, _ = get_model(src)
            tr = _load_split(cell.target, "train", data_root, data_cache)
            te = _load_split(cell.target, "test", data_root, data_cache)
            res_ = transfer(m, tr, te, cfg)
            atomic_write_json(path, {"cell": to_jsonable(cell), "source": to_jsonable(src),
                                     "config": to_jsonable(cfg.to_dict()), "metrics": to_jsonable(res_.metrics())})
            if log:
                adv = res_.adversarial_accuracy
                log(f"{cell_id(cell)}: natural {res_.natural_accuracy:.4f}"
                    + (f", adversarial {adv:.4f}" if adv is not None else "") + f" ({res_.seconds:.0f}s)")
    except RobrepError as e:
        if not shard.active:
            raise
        error = str(e)
    agree(error)  # with several ranks, also the barrier: every rank has written its cells
    records = [json.loads(path.read_text()) for _, _, _, path in cells]
    return records


# ---------------------------------------------------------------------------------------------
# Aggregation, table and plot.


def load_records(out: str | Path) -> list[dict[str, Any]]:
    """Every finished cell under ``out/cells`` (several sweep invocations may share a folder)."""
    recs = []
    for p in sorted((Path(out) / "cells").glob("*.json")):
        try:
            recs.append(json.loads(p.read_text()))
        except json.JSONDecodeError as e:  # cannot happen with atomic writes; say what to do if it does
            raise InputError(f"{p} is not valid JSON ({e}); delete it to recompute that cell") from e
    return recs


def _t95(df: int) -> float:
    """Two-sided 95 % Student-t quantile (scipy when available)."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:  # pragma: no cover
        return 1.959963984540054


def _stats(vals: list[float]) -> dict[str, float]:
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    half = _t95(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "ci95": half, "n_seeds": n}


def summarize_sweep(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (target, fraction, resolution, mode, source): mean, sample std and 95 % t
    half-width over seeds of natural and adversarial accuracy, sorted by source norm and eps."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        c, s = r["cell"], r["source"]
        key = (c["target"], c["fraction"], c["resolution"], c["mode"], s["name"], s["norm"], s["eps"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (target, frac, res, mode, name, norm, eps), rs in groups.items():
        nat = [float(r["metrics"]["natural_accuracy"]) for r in rs]
        advs = [r["metrics"]["adversarial_accuracy"] for r in rs]
        row: dict[str, Any] = {"target": target, "fraction": frac, "resolution": res, "mode": mode, "source": name,
                               "norm": norm, "eps": eps, "n_train": rs[0]["metrics"]["n_train"],
                               "n_test": rs[0]["metrics"]["n_natural"], "natural": _stats(nat),
                               "seeds": sorted(int(r["cell"]["seed"]) for r in rs)}
        if all(a is not None for a in advs):
            row["adversarial"] = _stats([float(a) for a in advs])
            row["n_adversarial"] = rs[0]["metrics"]["n_adversarial"]
            row["eval_threat"] = {"norm": rs[0]["config"]["eval_norm"], "eps": rs[0]["config"]["eval_eps"]}
        rows.append(row)
    rows.sort(key=lambda r: (r["target"], r["fraction"], str(r["resolution"]), r["mode"], r["norm"] or "", r["eps"]))
    return rows


def best_vs_standard(rows: Sequence[dict[str, Any]], metric: str = "natural") -> list[dict[str, Any]]:
    """For each (target, fraction, resolution, mode): the eps = 0 accuracy, the best eps > 0 and
    its accuracy, the difference, and whether the difference exceeds the two 95 % half-widths
    combined in quadrature (a Welch-style check; None with one seed)."""
    out = []
    keys = sorted({(r["target"], r["fraction"], str(r["resolution"]), r["mode"]) for r in rows})
    for k in keys:
        grp = [r for r in rows if (r["target"], r["fraction"], str(r["resolution"]), r["mode"]) == k and metric in r]
        std = [r for r in grp if r["eps"] == 0]
        rob = [r for r in grp if r["eps"] > 0]
        if not std or not rob:
            continue
        s0 = std[0][metric]
        best = max(rob, key=lambda r: r[metric]["mean"])
        b = best[metric]
        diff = b["mean"] - s0["mean"]
        half = math.sqrt(s0["ci95"] ** 2 + b["ci95"] ** 2) if not (math.isnan(s0["ci95"]) or math.isnan(b["ci95"])) else float("nan")
        out.append({"target": k[0], "fraction": k[1], "resolution": k[2], "mode": k[3], "metric": metric,
                    "eps0": s0["mean"], "best_source": best["source"], "best_norm": best["norm"], "best_eps": best["eps"],
                    "best": b["mean"], "diff": diff, "half_width": half,
                    "significant": (abs(diff) > half) if not math.isnan(half) else None})
    return out


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table: natural (and adversarial) accuracy, mean +- std over seeds, in %."""

    def fmt(s: dict[str, float] | None) -> str:
        if s is None:
            return "-"
        return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"

    lines = ["| target | train frac (n) | res | mode | source | norm | eps | natural % | adversarial % | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['fraction']:g} ({r['n_train']}) | {r['resolution'] or 'native'} | {r['mode']} | "
                     f"{r['source']} | {r['norm'] or '-'} | {r['eps']:g} | {fmt(r['natural'])} | {fmt(r.get('adversarial'))} | "
                     f"{len(r['seeds'])} |")
    return "\n".join(lines) + "\n"


def plot_sweep(rows: Sequence[dict[str, Any]], path: str | Path, metric: str = "natural") -> Path:
    """Accuracy vs source eps: one panel per (norm, target, fraction, resolution), one line per
    mode (mean, error bars = std over seeds). The eps = 0 source appears in every norm's panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = sorted({r["norm"] for r in rows if r["norm"]}) or ["linf"]
    tasks = sorted({(r["target"], r["fraction"], str(r["resolution"])) for r in rows})
    fig, axes = plt.subplots(len(norms), len(tasks), figsize=(3.2 * len(tasks), 2.6 * len(norms)), dpi=90, squeeze=False)
    for i, norm in enumerate(norms):
        for j, (tgt, frac, res) in enumerate(tasks):
            ax = axes[i][j]
            for mode, style in (("fixed", "o-"), ("full", "s--")):
                pts = sorted((r["eps"], r[metric]["mean"], r[metric]["std"]) for r in rows
                             if (r["target"], r["fraction"], str(r["resolution"])) == (tgt, frac, res) and r["mode"] == mode
                             and (r["norm"] == norm or r["eps"] == 0) and metric in r)
                if pts:
                    ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts], fmt=style,
                                capsize=2, label=mode, markersize=4)
            ax.set_title(f"{tgt} f={frac:g}" + ("" if res == "None" else f" r={res}"), fontsize=9)
            ax.set_xlabel(f"source eps ({norm})", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{metric} acc. (%)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
