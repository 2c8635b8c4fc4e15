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

__all__ = ["main", "run_parsed", "build_parser", "COMMANDS"]

COMMANDS = ["list_cmd", "train", "evaluate", "attack", "report", "demo", "visualize_cmds", "certify", "transfer", "vulnerability", "synbench", "semantic", "profile", "compare", "layers"]


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__
    from .examples import epilog
    from .formatting import HelpFormatter

    p = argparse.ArgumentParser(prog="robrep", description="Adversarially robust representations: learn, measure, see.",
                                formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"robrep {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    for name, sp in sub.choices.items():  # one help style for every command: defaults shown, examples kept
        sp.formatter_class = HelpFormatter
        sp.epilog = sp.epilog or epilog(name)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_parsed(args)


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed command line as :func:`main` does (threads, precision, the eps-units check);
    a :class:`~robrep.errors.RobrepError` becomes one line on stderr and exit status 2."""
    finished = False
    try:
        from .. import runtime
        from ..threats import check_eps_units

        runtime.configure_threads(getattr(args, "threads", None))
        if getattr(args, "precision", None) is not None:
            runtime.set_precision(args.precision)
            if args.precision == "bf16":  # say so before any work when the hardware lacks bf16
                from .common import device_of

                runtime.resolve_precision("bf16", device_of(getattr(args, "device", "auto")))

        # only commands with a threat model (--norm) take eps in pixel units; `semantic --eps` is a
        # transform parameter (rotation: degrees) and `synbench --eps` has its own scale
        norm, eps = getattr(args, "norm", None), getattr(args, "eps", None)
        if norm is not None:
            for e in eps if isinstance(eps, (list, tuple)) else [eps]:
                check_eps_units(norm, e)
        status = int(args.func(args) or 0)
        finished = True
        return status
    except RobrepError as e:
        from ..io.shard import current_shard

        try:
            quiet = not current_shard().is_main  # every rank fails alike: rank 0 says why, once
        except RobrepError:
            quiet = False
        if not quiet:
            print(f"robrep: error: {e}", file=sys.stderr, flush=True)
        else:  # torchrun stops the other ranks when one exits: give rank 0 time to say why
            import time

            time.sleep(2.0)
        return 2
    except KeyboardInterrupt:
        print("robrep: interrupted", file=sys.stderr)
        return 130
    finally:
        _close_process_group(finished)


def _close_process_group(all_ranks_here: bool) -> None:
    """Tear down a torchrun job's process group, once every rank has finished.

    A rank that destroys its gloo group while a peer still works (rank 0 writing the report)
    can abort in gloo's C++ threads ("terminate called without an active exception"); a last
    barrier lets the ranks leave together. After an error the peers may be inside another
    collective or never reach that barrier, so the group is destroyed without it (torchrun
    stops the other ranks when one exits with an error).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if all_ranks_here:
        try:
            dist.barrier()
        except RuntimeError:  # a peer already left: nothing to wait for
            pass
    dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
