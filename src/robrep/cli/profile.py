"""``robrep profile SOURCE --dataset D``: one robustness card (card.json + card.html) of an encoder."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .common import add_common, emit, log, setup_shard


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("profile", help="robustness card of an encoder: SynBench, vulnerability, embedding sensitivity, "
                                       "probe accuracy, certified accuracy, pictures")
    p.add_argument("source", help="the encoder: a checkpoint file, a model source (robrep.load syntax), or init:<arch> "
                                  "for random weights (e.g. init:tv:resnet18)")
    p.add_argument("--dataset", required=True, help="data set of the probe and the measures (robrep list datasets)")
    p.add_argument("--budget", default="quick", choices=["quick", "standard", "paper"],
                   help="sample counts of every measure, written in the card (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one budget field, e.g. --set probe_eval_n=50 (repeatable; default: none)")
    p.add_argument("--layer", action="append", default=None,
                   help="representation layer(s), repeat or comma-separate; the first is the probe's and SynBench's "
                        "(default: penultimate)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"], help="threat model norm (default: %(default)s)")
    p.add_argument("--eps", type=float, default=8 / 255, help="radius in [0,1] pixel units (default: 8/255 = %(default).4f)")
    p.add_argument("--attack", default=None,
                   help="attack or protocol of the probe's adversarial accuracy, e.g. pgd, apgd, fast, autoattack-standard "
                        "(robrep list attacks; a protocol runs with its own steps; written in the card; default: the "
                        "budget's: pgd for quick/standard, apgd for paper)")
    p.add_argument("--name", default=None, help="display name on the card and the leaderboard (default: the source)")
    p.add_argument("--arch", default=None, help="architecture, for checkpoints that do not record it (default: %(default)s)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a legacy checkpoint (only for files you trust; default: off)")
    p.add_argument("--input-shape", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="input shape of an init: model (default: 3 224 224 for tv:/timm:, else the data's)")
    p.add_argument("--memory-cap", type=float, default=1024.0,
                   help="MiB one forward batch may use; the batch size is chosen within it (default: %(default)s)")
    p.add_argument("--no-pictures", action="store_true", help="skip the inversion and saliency pictures (default: off)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing card in --out (default: off)")
    p.add_argument("--resume", action="store_true",
                   help="keep the measures already finished in OUT/chunks by a run split across torchrun ranks (default: off)")
    add_common(p)
    p.set_defaults(func=run)


def _parse_set(items: list[str]) -> dict[str, Any]:
    from ..errors import InputError
    from ..profile.budgets import Budget

    fields = {f.name: f for f in dataclasses.fields(Budget) if f.name != "name"}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise InputError(f"--set {item!r}: give KEY=VALUE with KEY one of {', '.join(fields)}")
        typ = str(fields[key].type)
        try:
            if "tuple" in typ:
                out[key] = tuple(float(v) for v in val.split(",") if v.strip())
            elif "int" in typ:
                out[key] = int(val)
            elif "float" in typ:
                out[key] = float(val)
            else:
                out[key] = val
        except ValueError as e:
            raise InputError(f"--set {item!r}: {val!r} is not a valid {typ}") from e
        if isinstance(out[key], (int, float)) and not isinstance(out[key], bool) and out[key] <= 0:
            raise InputError(f"--set {item!r}: the value must be positive")
    return out


def run(args: argparse.Namespace) -> int:
    from ..profile import get_budget, profile
    from ..threats import threat

    b = get_budget(args.budget)
    changes = _parse_set(args.set)
    if args.attack:
        from ..attacks import ATTACKS

        ATTACKS.get(args.attack)  # an unknown name: one line listing the attacks and protocols
        changes["probe_attack"] = args.attack
    if changes:
        b = b.with_(**changes)
    layers: list[str] = []
    for item in args.layer or ["penultimate"]:
        layers += [s.strip() for s in item.split(",") if s.strip()]
    args.out = args.out or "profile"
    shard = setup_shard(args)
    quiet = args.quiet or not shard.is_main
    res = profile(args.source, args.dataset, out=args.out, budget=b, layers=layers, threat=threat(args.norm, args.eps), seed=args.seed,
                  device=args.device, name=args.name, arch=args.arch, trust=args.trust_checkpoint, input_shape=args.input_shape,
                  memory_cap=int(args.memory_cap * 2**20), data_root=args.data_root, download=args.download,
                  overwrite=args.overwrite, pictures=not args.no_pictures, precision=args.precision, log=(lambda s: None) if quiet else log,
                  resume=args.resume, shard=shard)
    if not shard.is_main:  # rank 0 alone writes and prints the card
        return 0
    c = res.card
    lines = [f"robustness card of {c.name} on {c.dataset['name']} ({c.threat['norm']} eps={c.threat['eps']:g}, budget {c.budget['name']})"]
    from ..profile.html import HEADLINE_ORDER, format_headline

    for k in HEADLINE_ORDER:
        if k in c.headline:
            v, extra = format_headline(c.headline[k])
            lines.append(f"  {k:<28} {v:>8}  {extra}")
    lines.append(f"card: {res.card_json}  page: {res.card_html}")
    emit({"card": str(res.card_json), "html": str(res.card_html), "headline": c.headline}, args.json, "\n".join(lines))
    return 0
