"""``robrep eval``: clean and robust accuracy of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_checkpoint, add_common, add_threat, dataset_arg, emit, load_checkpoint_arg


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("eval", help="clean and robust accuracy of a checkpoint (PGD or APGD)")
    add_checkpoint(p)
    p.add_argument("--dataset", default=None, help="default: the checkpoint's training dataset")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--n", type=int, default=None, help="first n examples only")
    add_threat(p)
    p.add_argument("--attack", default="pgd", help="pgd, apgd-ce, apgd-dlr, apgd (CE then DLR) ... (robrep list attacks)")
    p.add_argument("--steps", type=int, default=None, help="attack steps (default 20 for pgd, 100 for apgd)")
    p.add_argument("--step-size", type=float, default=None)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--chunk-size", type=int, default=None,
                   help="examples per chunk; with --out each finished chunk is saved in OUT/chunks (default 500 with "
                        "--out, else one chunk: the whole set)")
    p.add_argument("--resume", action="store_true", help="skip the chunks already finished in --out and merge them")
    p.add_argument("--overwrite", action="store_true", help="discard finished chunks in --out and start again")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..errors import InputError
    from ..evaluate import evaluate
    from ..io.atomic import atomic_write_json
    from ..runs import write_record
    from ..threats import threat

    if (args.resume or args.overwrite) and not args.out:
        raise InputError("--resume and --overwrite need --out, the run folder that holds the chunks")
    model, meta = load_checkpoint_arg(args)
    dataset = dataset_arg(args, meta)
    data = load_dataset(dataset, args.split, root=args.data_root, download=args.download)
    eps, norm = args.eps, args.norm
    if eps is None and meta.get("threat"):
        eps, norm = float(meta["threat"]["eps"]), meta["threat"]["norm"]
    thr = threat(norm, eps) if eps is not None and eps != 0 else None  # threat() rejects eps < 0 and NaN
    kw: dict = {"restarts": args.restarts} if args.restarts != 1 else {}
    if args.steps is not None:
        kw["steps"] = args.steps
    elif args.attack == "pgd":
        kw["steps"] = 20
    if args.step_size is not None:
        kw["step_size"] = args.step_size
    if args.precision != "fp32" and thr is not None:  # fp32: the attack itself, as before
        kw["precision"] = args.precision
    chunk = args.chunk_size if args.chunk_size is not None else (500 if args.out else None)
    res = evaluate(model, data, threat=thr, attack=args.attack, attack_kwargs=kw, batch_size=args.batch_size, n=args.n,
                   seed=args.seed, show_progress=not args.quiet, chunk_size=chunk, out=args.out, resume=args.resume,
                   overwrite=args.overwrite, fingerprint_extra={"dataset": dataset, "split": args.split})
    out = {"clean_accuracy": res.clean_accuracy, "robust_accuracy": res.robust_accuracy, "n": res.n,
           "threat": res.threat, "attack": res.attack, "dataset": dataset, "checkpoint": str(args.checkpoint),
           "per_class_clean": res.per_class_clean, "per_class_robust": res.per_class_robust,
           "chunks_done": res.chunks_done, "chunks_resumed": res.chunks_resumed}
    if args.out:
        atomic_write_json(Path(args.out) / "result.json", out)
        write_record(Path(args.out), "eval", vars(args) | {"func": None}, out)
    s = f"{dataset} ({res.n} images): clean accuracy {res.clean_accuracy:.4f}"
    if res.robust_accuracy is not None:
        s += f", robust accuracy {res.robust_accuracy:.4f} ({args.attack}, {thr.describe() if thr else ''})"
    emit(out, args.json, s)
    return 0
