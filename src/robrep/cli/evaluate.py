"""``robrep eval``: clean and robust accuracy of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_checkpoint,
    add_common,
    add_threat,
    dataset_arg,
    emit,
    load_checkpoint_arg,
    log,
    setup_shard,
)

_EPILOG = """examples:
  robrep eval --checkpoint runs/mnist/model.safetensors --eps 0.3 --attack autoattack-standard --n 1000 --out runs/aa
  robrep eval --checkpoint model.safetensors --norm l2 --eps 1.5 --attack fast --json
  robrep eval --checkpoint model.safetensors --eps 0.3 --attack autoattack-standard --steps 20 --queries 500 (quick look)

protocols (robust accuracy after every stage, and flags): autoattack-standard, autoattack-plus,
autoattack-rand (randomized models), fast; single attacks: pgd, apgd-ce, apgd-dlr, apgd, apgd-t, fab-t,
fab, square, fgsm (robrep list attacks)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("eval", help="clean and robust accuracy of a checkpoint (PGD, APGD or an AutoAttack protocol)",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint(p)
    p.add_argument("--dataset", default=None, help="default: the checkpoint's training dataset")
    p.add_argument("--split", default="test", choices=["train", "test"], help="(default: %(default)s)")
    p.add_argument("--num-images", "--n", dest="n", type=int, default=None,
                   help="evaluate n examples only: the first n, or a class-stratified subset drawn with --seed when the "
                        "data come sorted by class, e.g. a folder per class (default: all)")
    add_threat(p)
    p.add_argument("--attack", default="pgd",
                   help="attack or protocol: pgd, apgd-ce, apgd-dlr, apgd, apgd-t, fab-t, square, autoattack-standard, "
                        "autoattack-plus, autoattack-rand, fast (robrep list attacks) (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="attack steps (default: 20 for pgd, 100 for apgd and the protocols' gradient stages)")
    p.add_argument("--step-size", type=float, default=None, help="pgd step size (default: 2.5 eps / steps)")
    p.add_argument("--restarts", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--targets", type=int, default=None,
                   help="target classes of apgd-t / fab-t, clipped to classes - 1 (default: 9; fast: 3)")
    p.add_argument("--queries", type=int, default=None, help="Square's query budget (default: 5000)")
    p.add_argument("--batch-size", type=int, default=500, help="(default: %(default)s)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="examples per chunk; with --out each finished chunk is saved in OUT/chunks (default 500 with "
                        "--out, else one chunk: the whole set)")
    p.add_argument("--resume", action="store_true", help="skip the chunks already finished in --out and merge them")
    p.add_argument("--overwrite", action="store_true", help="discard finished chunks in --out and start again")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..attacks import is_protocol
    from ..data import load_dataset, take
    from ..errors import InputError
    from ..evaluate import evaluate
    from ..io.atomic import atomic_write_json
    from ..runs import write_record
    from ..threats import threat

    if (args.resume or args.overwrite) and not args.out:
        raise InputError("--resume and --overwrite need --out, the run folder that holds the chunks")
    kw = _attack_kwargs(args)  # bad options fail before anything is loaded
    shard = setup_shard(args)
    model, meta = load_checkpoint_arg(args)
    dataset = dataset_arg(args, meta)
    data = load_dataset(dataset, args.split, root=args.data_root, download=args.download)
    data = take(data, args.n, args.seed)  # recorded as "subset": how the n examples were chosen
    eps, norm = args.eps, args.norm
    if eps is None and meta.get("threat"):
        eps, norm = float(meta["threat"]["eps"]), meta["threat"]["norm"]
    thr = threat(norm, eps) if eps is not None and eps != 0 else None  # threat() rejects eps < 0 and NaN
    nc = getattr(model, "num_classes", None)
    if args.targets is not None and isinstance(nc, int) and not is_protocol(args.attack):  # protocols add their own note
        from ..attacks.protocols import clip_targets

        kw["targets"], note = clip_targets(args.targets, nc, args.attack)
        if note:
            log(f"note: {note}")
    if args.precision != "fp32" and thr is not None:  # fp32: the attack itself; protocols: bf16 stages, float32 verdicts
        kw["precision"] = args.precision
    chunk = args.chunk_size if args.chunk_size is not None else (500 if args.out else None)
    res = evaluate(model, data, threat=thr, attack=args.attack, attack_kwargs=kw, batch_size=args.batch_size, n=None,
                   seed=args.seed, show_progress=not args.quiet and shard.is_main, chunk_size=chunk, out=args.out, resume=args.resume,
                   overwrite=args.overwrite, fingerprint_extra={"dataset": dataset, "split": args.split},
                   shard=shard)
    if not shard.is_main:  # every rank holds the merged result; rank 0 alone writes and prints it
        return 0
    out = {"clean_accuracy": res.clean_accuracy, "robust_accuracy": res.robust_accuracy, "n": res.n,
           "threat": res.threat, "attack": res.attack, "dataset": dataset, "checkpoint": str(args.checkpoint),
           "per_class_clean": res.per_class_clean, "per_class_robust": res.per_class_robust,
           "chunks_done": res.chunks_done, "chunks_resumed": res.chunks_resumed, "subset": data.selection}
    if res.stages is not None:
        out |= {"stages": res.stages, "flags": list(res.flags), "notes": list(res.notes)}
        # flat scalars: the HTML report shows each as a row
        out |= {f"robust_accuracy_after_{k}": v for k, v in res.stages.items() if k != "clean"}
        out |= {f"flag_{f['code']}": f["value"] for f in res.flags}
    if args.out:
        atomic_write_json(Path(args.out) / "result.json", out)
        write_record(Path(args.out), "eval", vars(args) | {"func": None}, out)
    s = f"{dataset} ({res.n} images): clean accuracy {res.clean_accuracy:.4f}"
    if res.robust_accuracy is not None:
        s += f", robust accuracy {res.robust_accuracy:.4f} ({args.attack}, {thr.describe() if thr else ''})"
    if res.stages is not None:
        s += "\n  after each stage: " + ", ".join(f"{k} {v:.4f}" for k, v in res.stages.items())
    for note in res.notes:
        log(f"note: {note}")
    for f in res.flags:
        log(f"flag {f['code']}: {f['message']}; {f['meaning']}; try: {f['action']}")
    emit(out, args.json, s)
    return 0


def _attack_kwargs(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    """The attack settings the options ask for (only those given, plus pgd's 20 steps)."""
    from ..attacks import is_protocol
    from ..errors import InputError

    kw: dict = {"restarts": args.restarts} if args.restarts != 1 else {}
    if args.steps is not None:
        kw["steps"] = args.steps
    elif args.attack == "pgd":
        kw["steps"] = 20
    if args.step_size is not None:
        if args.attack not in ("pgd", "fgsm"):
            raise InputError(f"--step-size applies to pgd and fgsm; {args.attack} sets its step size itself")
        kw["step_size"] = args.step_size
    if args.targets is not None:
        if args.attack not in ("apgd-t", "fab-t") and not is_protocol(args.attack):
            raise InputError(f"--targets applies to apgd-t, fab-t and the protocols, not {args.attack}")
        if args.targets < 1:
            raise InputError(f"--targets (target classes of apgd-t / fab-t) must be >= 1, got {args.targets}; the standard uses 9")
        kw["targets"] = args.targets
    if args.queries is not None:
        if args.queries <= 0:
            raise InputError(f"--queries (Square's query budget) must be > 0, got {args.queries}; the standard uses 5000")
        if args.attack != "square" and not is_protocol(args.attack):
            raise InputError(f"--queries applies to square and the protocols, not {args.attack}")
        kw["queries"] = args.queries
    return kw
