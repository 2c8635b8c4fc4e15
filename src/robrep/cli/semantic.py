"""``robrep semantic``: verified and attacked semantic-perturbation ranges (Semantify-NN)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_checkpoint, add_common, dataset_arg, emit, load_checkpoint_arg, log

_DEFAULTS = {  # (eps, delta, subdiv): reference README examples where they exist
    "hue": (3.0, 0.2, 1), "saturation": (1.0, 0.05, 1), "lightness": (1.0, 0.05, 1),
    "brightness": (1.0, 0.02, 1), "contrast": (1.0, 0.05, 1), "rotation": (30.0, 1.0, 20),
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("semantic", help="semantic perturbation ranges: attack and verify (Semantify-NN)")
    add_checkpoint(p)
    p.add_argument("--transform", required=True, choices=sorted(_DEFAULTS), help="semantic perturbation")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's training dataset")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--n", type=int, default=100, help="number of images: the first n, or a class-stratified subset (--seed) when the data come sorted by class (default: %(default)s)")
    p.add_argument("--eps", type=float, default=None, help="largest |theta| searched (default per transform)")
    p.add_argument("--delta", type=float, default=None, help="explicit-splitting interval width")
    p.add_argument("--subdiv", type=int, default=None, help="implicit sub-intervals per interval (rotation)")
    p.add_argument("--attack-delta", type=float, default=None, help="attack grid step (default delta/4)")
    p.add_argument("--method", default="crown", choices=["crown", "ibp"])
    p.add_argument("--verify", action="store_true", help="also verify (otherwise attack only)")
    p.add_argument("--no-gradient", action="store_true", help="grid attack only")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..certify.semantic_verify import semantic_certify, summarize_semantic
    from ..data import load_dataset, take
    from ..io.atomic import atomic_write_json
    from ..runs import write_record

    model, meta = load_checkpoint_arg(args)
    model.eval()
    dataset = dataset_arg(args, meta)
    eps0, delta0, sub0 = _DEFAULTS[args.transform]
    eps = args.eps if args.eps is not None else eps0
    delta = args.delta if args.delta is not None else delta0
    subdiv = args.subdiv if args.subdiv is not None else sub0
    data = take(load_dataset(dataset, args.split, root=args.data_root, download=args.download), args.n, args.seed)
    x, y = data.tensors()
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)

    def progress(i: int, r) -> None:  # type: ignore[no-untyped-def]
        if not args.quiet:
            log(f"[{i + 1}/{len(y)}] verified [{r.verified.lo:g}, {r.verified.hi:g}] attacked [{r.attacked.lo:g}, {r.attacked.hi:g}]")

    res = semantic_certify(model, x, y, args.transform, eps, delta, method=args.method, subdiv=subdiv,
                           attack_delta=args.attack_delta, gradient=not args.no_gradient, seed=args.seed,
                           verify=args.verify, progress=progress)
    s = summarize_semantic(res, args.transform, args.method if args.verify else "attack-only")
    out = {"transform": args.transform, "dataset": dataset, "checkpoint": str(args.checkpoint), "eps": eps, "delta": delta,
           "subdiv": subdiv, "verified": args.verify, **{k: v for k, v in s.__dict__.items() if k not in ("transform",)}}
    if args.out:
        write_record(Path(args.out), "semantic", vars(args) | {"func": None}, out)
        atomic_write_json(Path(args.out) / "per_image.json", [r.to_dict() for r in res])
    summary = (f"{dataset} {args.transform} ({s.n_correct}/{s.n} correct): attacked radius {s.attacked_radius:.4g}"
               + (f", verified radius {s.verified_radius:.4g} ({args.method}, {s.verify_seconds:.2f} s/image)" if args.verify else ""))
    emit(out, args.json, summary)
    return 0
