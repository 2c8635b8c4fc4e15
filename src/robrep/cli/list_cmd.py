"""``robrep list [datasets|models|attacks|objectives|threats|formats]``."""

from __future__ import annotations

import argparse

from .common import emit

KINDS = ("datasets", "models", "attacks", "objectives", "threats", "formats", "losses")


def _registries():  # type: ignore[no-untyped-def]
    from ..attacks import ATTACK_LOSSES, ATTACKS
    from ..data import DATASETS
    from ..models import LOADERS, MODELS
    from ..objectives import OBJECTIVES
    from ..threats import THREATS

    return {"datasets": DATASETS, "models": MODELS, "attacks": ATTACKS, "objectives": OBJECTIVES,
            "threats": THREATS, "formats": LOADERS, "losses": ATTACK_LOSSES}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("list", help="list registered datasets, models, attacks, objectives, threats, formats")
    p.add_argument("kind", nargs="?", choices=KINDS, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    regs = _registries()
    kinds = [args.kind] if args.kind else list(KINDS)
    result = {k: dict(regs[k].describe()) for k in kinds}
    lines = []
    for k in kinds:
        lines.append(f"{k}:")
        lines += [f"  {n:<22} {h}" for n, h in regs[k].describe()]
    emit(result, args.json, "\n".join(lines))
    return 0
