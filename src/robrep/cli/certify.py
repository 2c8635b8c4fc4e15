"""``robrep certify``: randomized-smoothing certificates (Cohen et al. 2019; first order: Mohapatra et al. 2020)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from .common import add_checkpoint, add_common, dataset_arg, emit, load_checkpoint_arg, log


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("certify", help="certified accuracy of a Gaussian-smoothed classifier (zeroth or first order)")
    add_checkpoint(p)
    p.add_argument("--sigma", type=float, required=True, help="noise level in [0,1] pixel units (e.g. 0.25)")
    p.add_argument("--order", type=int, default=0, choices=[0, 1],
                   help="0: Cohen et al. L2 radius; 1: also first-order L2/L1/Linf/colour-channel radii")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's training dataset")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--num", type=int, default=500, help="number of images certified")
    p.add_argument("--start", type=int, default=0, help="first data-set index")
    p.add_argument("--skip", type=int, default=1, help="certify every skip-th image (Cohen et al. used 20 on CIFAR-10)")
    p.add_argument("--n0", type=int, default=100, help="selection samples")
    p.add_argument("--n", type=int, default=100_000, help="estimation samples (the first-order paper used 200,000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    p.add_argument("--batch-size", type=int, default=1000, help="noisy images per forward pass")
    p.add_argument("--radii", type=float, nargs="*", default=None,
                   help="radii of the summary table (default: multiples of sigma/2 up to 4 sigma)")
    p.add_argument("--chunk-size", type=int, default=50,
                   help="images per chunk; with --out each finished chunk is saved in OUT/chunks")
    p.add_argument("--resume", action="store_true", help="skip the chunks already finished in --out and merge them")
    p.add_argument("--overwrite", action="store_true", help="discard finished chunks in --out and start again")
    add_common(p)
    p.set_defaults(func=run)


def summarize(rows: list[dict[str, Any]], sigma: float, order: int, d: int, radii: list[float] | None = None) -> dict[str, Any]:
    """Certified-accuracy curves and tables from per-image rows of :func:`robrep.certify.smoothing.certify_dataset`."""
    import numpy as np

    from ..certify.smoothing import certified_accuracy, certified_accuracy_curve

    radii = radii if radii else [round(k * sigma / 2, 6) for k in range(9)]
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


def _plot(metrics: dict[str, Any], path: Path, title: str) -> None:
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


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..certify.smoothing import (
        FIRST_ORDER_COLUMNS,
        TSV_COLUMNS,
        certify_dataset_resumable,
        write_tsv,
    )
    from ..data import load_dataset
    from ..errors import InputError
    from ..io.atomic import atomic_write_json
    from ..runs import write_record

    if args.sigma <= 0:
        raise InputError(f"--sigma must be > 0, got {args.sigma}")
    if args.n < 2 or args.n0 < 1 or args.num < 1 or args.skip < 1 or args.start < 0 or args.chunk_size < 1:
        raise InputError("need --n >= 2, --n0 >= 1, --num >= 1, --skip >= 1, --start >= 0 and --chunk-size >= 1")
    if (args.resume or args.overwrite) and not args.out:
        raise InputError("--resume and --overwrite need --out, the run folder that holds the chunks")
    model, meta = load_checkpoint_arg(args)
    dataset = dataset_arg(args, meta)
    data = load_dataset(dataset, args.split, root=args.data_root, download=args.download)
    idx = list(range(args.start, len(data), args.skip))[: args.num]
    if not idx:
        raise InputError(f"no images selected: the {args.split} split has {len(data)} images")
    sub = data.subset(torch.tensor(idx))
    x, y = sub.tensors()
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    if args.precision == "bf16":  # opt-in: certifies the bf16-computed classifier (auto keeps fp32 here)
        from ..attacks.precision import Bf16Model
        from ..runtime import resolve_precision

        resolve_precision("bf16", dev)  # clear error where the hardware lacks bf16
        model = Bf16Model(model).eval()
    t0 = time.perf_counter()

    def progress(j: int) -> None:
        if not args.quiet and ((j + 1) % 10 == 0 or j + 1 == len(idx)):
            log(f"certify: {j + 1}/{len(idx)} images, {time.perf_counter() - t0:.0f}s")

    run_ = certify_dataset_resumable(model, x, y, args.sigma, args.out, chunk_size=args.chunk_size, resume=args.resume,
                                     overwrite=args.overwrite, fingerprint_extra={"dataset": dataset, "split": args.split,
                                                                          **({"precision": "bf16"} if args.precision == "bf16" else {})},
                                     order=args.order, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                                     seed=args.seed, indices=idx, progress=progress)
    rows, seconds = run_.rows, run_.seconds  # seconds: certification time of all chunks, resumed ones included
    d = int(x[0].numel())
    metrics: dict[str, Any] = {"dataset": dataset, "split": args.split, "checkpoint": str(args.checkpoint),
                               "sigma": args.sigma, "order": args.order, "n0": args.n0, "n": args.n, "alpha": args.alpha,
                               "num_images": len(idx), "seconds": seconds,
                               "samples_per_second": len(idx) * (args.n + args.n0) / max(seconds, 1e-9),
                               "chunks_done": run_.chunks_done, "chunks_resumed": run_.chunks_resumed}
    metrics |= summarize(rows, args.sigma, args.order, d, args.radii)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        cols = TSV_COLUMNS if args.order == 0 else TSV_COLUMNS[:4] + FIRST_ORDER_COLUMNS + TSV_COLUMNS[4:]
        write_tsv(out / "certify.tsv", rows, cols)
        atomic_write_json(out / "per_image.json", {"rows": rows})
        atomic_write_json(out / "result.json", metrics)
        write_record(out, "certify", vars(args) | {"func": None}, metrics)
        _plot(metrics, out / "certified_accuracy.png", f"{dataset} sigma={args.sigma} order={args.order} n={args.n}")
    tab = metrics["certified_accuracy_table"]
    s = (f"{dataset} ({len(idx)} images, sigma={args.sigma}, n={args.n}, order {args.order}): smoothed accuracy "
         f"{metrics['smoothed_accuracy']:.4f}, abstain {metrics['abstain_rate']:.3f}; certified accuracy "
         + ", ".join(f"r={r}: {a:.3f}" for r, a in tab.items()))
    emit(metrics, args.json, s)
    return 0
