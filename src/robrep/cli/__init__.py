"""The ``robrep`` command line: thin wrappers that parse, call the library and print.

Each sub-command lives in its own module exposing ``register(subparsers)``; add a module name
to :data:`COMMANDS` to add a command. With ``--json`` the last line of stdout is one JSON object.
Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import RobrepError

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = ["list_cmd", "train", "evaluate", "attack", "report", "demo", "visualize_cmds", "certify", "transfer", "vulnerability", "synbench", "semantic", "profile", "compare"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="robrep", description="Adversarially robust representations: learn, measure, see.")
    p.add_argument("--version", action="version", version=f"robrep {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from ..threats import check_eps_units

        # only commands with a threat model (--norm) take eps in pixel units; `semantic --eps` is a
        # transform parameter (rotation: degrees) and `synbench --eps` has its own scale
        norm, eps = getattr(args, "norm", None), getattr(args, "eps", None)
        if norm is not None:
            for e in eps if isinstance(eps, (list, tuple)) else [eps]:
                check_eps_units(norm, e)
        return int(args.func(args) or 0)
    except RobrepError as e:
        print(f"robrep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robrep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
