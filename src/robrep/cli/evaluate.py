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
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (default: 500, or fewer when a batch's forward+backward pass would exceed "
                        "--memory-cap; the choice is printed)")
    p.add_argument("--memory-cap", type=float, default=1024.0,
                   help="MiB one batch's activations may use when the batch size is chosen (default: %(default)s)")
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
    batch_size = _batch_size(args, model, data, thr is not None)
    res = evaluate(model, data, threat=thr, attack=args.attack, attack_kwargs=kw, batch_size=batch_size, n=None,
                   seed=args.seed, show_progress=not args.quiet and shard.is_main, chunk_size=chunk, out=args.out, resume=args.resume,
                   overwrite=args.overwrite, fingerprint_extra={"dataset": dataset, "split": args.split},
                   shard=shard)
    if not shard.is_main:  # every rank holds the merged result; rank 0 alone writes and prints it
        return 0
    out = {"clean_accuracy": res.clean_accuracy, "robust_accuracy": res.robust_accuracy, "n": res.n,
           "threat": res.threat, "attack": res.attack, "dataset": dataset, "checkpoint": str(args.checkpoint),
           "per_class_clean": res.per_class_clean, "per_class_robust": res.per_class_robust,
           "chunks_done": res.chunks_done, "chunks_resumed": res.chunks_resumed, "subset": data.selection,
           "batch_size": batch_size}
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


def _batch_size(args: argparse.Namespace, model, data, attacked: bool) -> int:  # type: ignore[no-untyped-def]
    """``--batch-size``, or the largest batch (at most 500) whose pass fits ``--memory-cap``: an
    attack's forward+backward pass keeps about ``GRAD_FACTOR`` times the forward activations of
    its batch, a clean pass about one time. Says what it chose when that is not 500, and when
    the chosen ``--batch-size`` is expected to exceed the cap."""
    from ..errors import InputError
    from ..models.memory import GRAD_FACTOR, activation_bytes_per_image, grad_batch_size

    if args.batch_size is not None and args.batch_size <= 0:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    if args.memory_cap <= 0:
        raise InputError(f"--memory-cap (MiB) must be positive, got {args.memory_cap:g}")
    cap = int(args.memory_cap * 2**20)
    shape = tuple(getattr(model, "input_shape", None) or data.info.input_shape)
    dev = next(iter(model.parameters()), None)
    dev = dev.device if dev is not None else "cpu"
    factor = GRAD_FACTOR if attacked else 1
    per = factor * activation_bytes_per_image(model, shape, dev) / 2**20
    what = "forward+backward pass" if attacked else "forward pass"
    if args.batch_size is not None:
        if args.batch_size * per > args.memory_cap:
            log(f"note: --batch-size {args.batch_size}: a {what} of this model takes about {per:.0f} MiB per image, "
                f"{args.batch_size * per:.0f} MiB per batch, above --memory-cap {args.memory_cap:g} MiB; "
                f"omit --batch-size to have it chosen within the cap")
        return int(args.batch_size)
    b = grad_batch_size(model, shape, memory_cap=cap, max_batch=500, device=dev, factor=factor)
    if b < 500:
        log(f"batch size {b}: a {what} of this model at {'x'.join(map(str, shape))} takes about {per:.0f} MiB per "
            f"image, and {b} images fit --memory-cap {args.memory_cap:g} MiB (--batch-size sets it)")
    return b


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
