"""``robrep demo``: the main job on the bundled data (offline, minutes on a laptop CPU)."""

from __future__ import annotations

import argparse

from .common import add_attack, add_runtime, check_attack, emit, log


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="train a standard and a robust encoder on bundled data, measure and show them, write report.html")
    p.add_argument("--out", default="robrep-demo", help="run folder (default ./robrep-demo)")
    p.add_argument("--fast", action="store_true", help="a much smaller run with tiny budgets (for tests and checks; under a minute)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_attack(p, "the robust-accuracy table (robust accuracy, its eps curve, the probe's adversarial accuracy; "
                  "pgd: PGD-20)")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes for the demo's tasks (training and each measurement of each model; default: "
                        "two one-thread processes per usable CPU where two or more CPUs are usable and --threads is not "
                        "given, else 1: one after the other in this process)")
    add_runtime(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    check_attack(args.attack)
    res = run_demo(args.out, fast=args.fast, device=args.device, seed=args.seed, show_progress=not args.quiet, log=log,
                   precision=args.precision, threads=args.threads, attack=args.attack, jobs=args.jobs)
    emit(res.summary, args.json, res.table + f"\n\nreport: {res.report}")
    return 0
