"""Shared CLI options and output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..io.atomic import to_jsonable

__all__ = ["add_attack", "check_attack", "add_common", "add_runtime", "add_threat", "emit", "log", "load_checkpoint_arg", "load_model_arg", "add_checkpoint", "add_model_source"]

_DOWNLOAD_HELP = ("let torchvision download missing datasets, and tv:/timm:/hf:/open_clip: sources download weights "
                  "missing from the local caches (default: %(default)s)")
SOURCE_HELP = ("model source: a checkpoint file (robrep .safetensors or another tool's checkpoint), tv:NAME[@WEIGHTS|FILE], "
               "timm:NAME[@FILE|TAG], hf:DIR|HUB_ID or open_clip:ARCH@FILE|TAG (docs/guides/load-models.md)")


def add_common(p: argparse.ArgumentParser, *, out: bool = True, data: bool = True) -> None:
    if data:
        p.add_argument("--data-root", default=None, help="data folder (default: $ROBREP_DATA or ~/.cache/robrep/data)")
        if "--download" not in p._option_string_actions:
            p.add_argument("--download", action="store_true", help=_DOWNLOAD_HELP)
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
                        "other jobs, from affinity, cgroup quota and the CPUs busy now)")


def setup_shard(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """This process's :class:`~robrep.io.shard.Shard` under ``torchrun`` (a single process otherwise).

    Joins the process group (gloo on CPU, NCCL with one GPU per rank) and points ``args.device``
    at this rank's device, so the model loads there. Split work needs ``--out`` on a shared
    file system.
    """
    from ..errors import InputError
    from ..io.shard import current_shard, init_distributed

    shard = current_shard()
    if shard.active:
        if not getattr(args, "out", None):
            raise InputError("a job split across torchrun ranks needs --out DIR on a file system every rank sees")
        args.device = str(init_distributed(shard, getattr(args, "device", "auto")))
    return shard


def add_threat(p: argparse.ArgumentParser, *, eps_default: float | None = None) -> None:
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"], help="threat model norm")
    p.add_argument("--eps", type=float, default=eps_default, help="radius in [0,1] pixel units (e.g. 0.3 or 0.0313)")


ATTACK_NAMES_HELP = ("pgd, apgd-ce, apgd-dlr, apgd, apgd-t, fab-t, fab, square, fgsm, or a protocol: autoattack-standard, "
                     "autoattack-plus, autoattack-rand, fast (robrep list attacks)")


def add_attack(p: argparse.ArgumentParser, what: str, *, default: str = "pgd", flag: str = "--attack") -> None:
    """The ``--attack NAME`` option of a command that reports robust accuracy (one attack registry
    for every command: ``robrep.attacks.create_attack``)."""
    p.add_argument(flag, default=default, metavar="NAME", help=f"attack or protocol of {what}: {ATTACK_NAMES_HELP}")


def check_attack(name: str) -> str:
    """``name`` if it is a registered attack or protocol, else :class:`~robrep.errors.UnknownNameError`
    listing them (the CLI prints it on one line and exits 2, before any work)."""
    from ..attacks import ATTACKS

    ATTACKS.get(name)
    return name


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
    """(model, meta) of ``--checkpoint`` (any model source; see :func:`load_model_arg`)."""
    return load_model_arg(args, "checkpoint")


def load_model_arg(args: argparse.Namespace, attr: str = "checkpoint"):  # type: ignore[no-untyped-def]
    """(model, meta) of the model source in ``args.<attr>``, with ``--arch``, ``--trust-checkpoint``,
    ``--download``, ``--gray-to-rgb`` and ``--no-resize`` applied where the parser has them.

    Also sets ``args.model_record``: the model's spec (size, mean/std, preprocessing), its source
    and weights, and the input adaptations made while the command runs (a live dict), so the
    ``record.json`` a command writes from ``vars(args)`` says which model and preprocessing it measured.
    """
    from ..models import load_with_meta

    model, meta = load_with_meta(getattr(args, attr), arch=getattr(args, "arch", None),
                                 trust=getattr(args, "trust_checkpoint", False), device=device_of(getattr(args, "device", "auto")),
                                 download=bool(getattr(args, "download", False)),
                                 adapt_channels=bool(getattr(args, "gray_to_rgb", False)), resize=not getattr(args, "no_resize", False))
    spec = model.spec.to_dict()
    spec["kwargs"] = {k: v for k, v in spec["kwargs"].items() if k not in ("config", "model_cfg")}  # bulky source configs
    args.model_record = {"source": str(getattr(args, attr)), "format": meta.get("format"), "pretrained": meta.get("pretrained"),
                         "weights": meta.get("weights"), "spec": spec, "adaptations": model.adaptations}
    return model, meta


def dataset_arg(args: argparse.Namespace, meta: dict[str, Any]) -> str:
    """The data set of a command: ``--dataset``, else the one the checkpoint records."""
    from ..errors import InputError

    dataset = getattr(args, "dataset", None) or meta.get("dataset")
    if not dataset:
        raise InputError("the checkpoint does not record its dataset: pass --dataset")
    return str(dataset)


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--arch", default=None, help="architecture, for checkpoints that do not record it")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a legacy checkpoint (runs code from the file: only for files you trust)")
    add_model_source(p)


def add_model_source(p: argparse.ArgumentParser) -> None:
    """The options of a model source besides the source itself: ``--download``,
    ``--gray-to-rgb``, ``--no-resize`` (for commands that name their source option otherwise)."""
    if "--download" not in p._option_string_actions:
        p.add_argument("--download", action="store_true", help=_DOWNLOAD_HELP)
    p.add_argument("--gray-to-rgb", action="store_true",
                   help="feed 1-channel data to a 3-channel model by repeating the channel (default: %(default)s)")
    p.add_argument("--no-resize", action="store_true",
                   help="refuse data whose size differs from the model's input size instead of resizing it inside the "
                        "model with the source's interpolation (default: %(default)s)")
