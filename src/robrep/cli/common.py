"""Shared CLI options and output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..io.atomic import to_jsonable

__all__ = ["add_common", "add_runtime", "add_threat", "emit", "log", "load_checkpoint_arg"]


def add_common(p: argparse.ArgumentParser, *, out: bool = True, data: bool = True) -> None:
    if data:
        p.add_argument("--data-root", default=None, help="data folder (default: $ROBREP_DATA or ~/.cache/robrep/data)")
        p.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    if out:
        p.add_argument("--out", default=None, help="run folder for results")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_runtime(p)


def add_runtime(p: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--threads`` (applied by :func:`robrep.cli.main`, recorded in run records)."""
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 autocast where the hardware has native bf16 (attack verdicts stay float32; "
                        "certification stays fp32), else fp32; fp32: exact float32 everywhere; bf16: require bf16 "
                        "(default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: $OMP_NUM_THREADS if set, else the CPUs left free by "
                        "other jobs, from affinity, cgroup quota and load average)")


def add_threat(p: argparse.ArgumentParser, *, eps_default: float | None = None) -> None:
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"], help="threat model norm")
    p.add_argument("--eps", type=float, default=eps_default, help="radius in [0,1] pixel units (e.g. 0.3 or 0.0313)")


def device_of(name: str):  # type: ignore[no-untyped-def]
    import torch

    return torch.device("cuda" if (name == "auto" and torch.cuda.is_available()) else ("cpu" if name == "auto" else name))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def emit(result: dict[str, Any], as_json: bool, summary: str | None = None) -> None:
    """Print a short human summary, or (``--json``) one JSON object on the last stdout line."""
    if as_json:
        print(json.dumps(to_jsonable(result), sort_keys=False))
    else:
        print(summary if summary is not None else json.dumps(to_jsonable(result), indent=2))


def load_checkpoint_arg(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ..models import load_with_meta

    return load_with_meta(args.checkpoint, arch=getattr(args, "arch", None), trust=getattr(args, "trust_checkpoint", False),
                          device=device_of(args.device))


def dataset_arg(args: argparse.Namespace, meta: dict[str, Any]) -> str:
    """The data set of a command: ``--dataset``, else the one the checkpoint records."""
    from ..errors import InputError

    dataset = getattr(args, "dataset", None) or meta.get("dataset")
    if not dataset:
        raise InputError("the checkpoint does not record its dataset: pass --dataset")
    return str(dataset)


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model file (robrep .safetensors, or another tool's checkpoint)")
    p.add_argument("--arch", default=None, help="architecture, for checkpoints that do not record it")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a legacy checkpoint (runs code from the file: only for files you trust)")
