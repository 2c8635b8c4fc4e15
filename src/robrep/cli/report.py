"""``robrep report RUN_DIR [RUN_DIR ...]``: one self-contained report.html comparing runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import emit


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="write one self-contained report.html for one or more run folders")
    p.add_argument("runs", nargs="+", help="run folders (each with record.json / metrics.json / *.png)")
    p.add_argument("--out", default="report.html", help="HTML file to write")
    p.add_argument("--title", default="robrep report")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..report.html import write_report

    for r in args.runs:
        if not Path(r).is_dir():
            raise InputError(f"run folder {r} does not exist; give folders written by robrep commands")
    path = write_report(args.runs, args.out, title=args.title)
    emit({"report": str(path), "runs": args.runs}, args.json, f"report: {path}")
    return 0
