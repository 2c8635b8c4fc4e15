"""``robrep certify``: randomized-smoothing certificates (Cohen et al. 2019; first order: Mohapatra et al. 2020)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    add_checkpoint,
    add_common,
    dataset_arg,
    emit,
    load_checkpoint_arg,
    log,
    setup_shard,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("certify", help="certified accuracy of a Gaussian-smoothed classifier (zeroth or first order)")
    add_checkpoint(p)
    p.add_argument("--sigma", type=float, required=True, help="noise level in [0,1] pixel units (e.g. 0.25)")
    p.add_argument("--order", type=int, default=0, choices=[0, 1],
                   help="0: Cohen et al. L2 radius; 1: also first-order L2/L1/Linf/colour-channel radii")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's training dataset")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--num-images", "--num", dest="num", type=int, default=500, help="number of images certified")
    p.add_argument("--first-index", "--start", dest="start", type=int, default=0, help="first data-set index")
    p.add_argument("--skip", type=int, default=1, help="certify every skip-th image (Cohen et al. used 20 on CIFAR-10)")
    p.add_argument("--n0", type=int, default=100, help="selection samples")
    p.add_argument("--samples", "--n", dest="n", type=int, default=100_000,
                   help="estimation samples per image (the first-order paper used 200,000)")
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


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..certify.runner import (
        certify_dataset_resumable,
        plot_certified_accuracy,
        summarize_certification,
        tsv_columns,
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
    shard = setup_shard(args)
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
        if not args.quiet and shard.is_main and ((j + 1) % 10 == 0 or j + 1 == len(idx)):
            log(f"certify: {j + 1}/{len(idx)} images, {time.perf_counter() - t0:.0f}s")

    run_ = certify_dataset_resumable(model, x, y, args.sigma, args.out, chunk_size=args.chunk_size, resume=args.resume,
                                     overwrite=args.overwrite, fingerprint_extra={"dataset": dataset, "split": args.split,
                                                                          **({"precision": "bf16"} if args.precision == "bf16" else {})},
                                     order=args.order, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                                     seed=args.seed, indices=idx, progress=progress, shard=shard)
    rows, seconds = run_.rows, run_.seconds  # seconds: certification time of all chunks, resumed ones included
    d = int(x[0].numel())
    metrics: dict[str, Any] = {"dataset": dataset, "split": args.split, "checkpoint": str(args.checkpoint),
                               "sigma": args.sigma, "order": args.order, "n0": args.n0, "n": args.n, "alpha": args.alpha,
                               "num_images": len(idx), "seconds": seconds,
                               "samples_per_second": len(idx) * (args.n + args.n0) / max(seconds, 1e-9),
                               "chunks_done": run_.chunks_done, "chunks_resumed": run_.chunks_resumed}
    metrics |= summarize_certification(rows, args.sigma, args.order, d, args.radii)
    if not shard.is_main:  # every rank holds all rows; rank 0 alone writes and prints them
        return 0
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_tsv(out / "certify.tsv", rows, tsv_columns(args.order))
        atomic_write_json(out / "per_image.json", {"rows": rows})
        atomic_write_json(out / "result.json", metrics)
        write_record(out, "certify", vars(args) | {"func": None}, metrics)
        plot_certified_accuracy(metrics, out / "certified_accuracy.png", f"{dataset} sigma={args.sigma} order={args.order} n={args.n}")
    tab = metrics["certified_accuracy_table"]
    s = (f"{dataset} ({len(idx)} images, sigma={args.sigma}, n={args.n}, order {args.order}): smoothed accuracy "
         f"{metrics['smoothed_accuracy']:.4f}, abstain {metrics['abstain_rate']:.3f}; certified accuracy "
         + ", ".join(f"r={r}: {a:.3f}" for r, a in tab.items()))
    emit(metrics, args.json, s)
    return 0
