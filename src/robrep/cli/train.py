"""``robrep train``: train a model with any objective; checkpoints every epoch; --resume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import add_common, add_threat, emit, log


def parse_kv(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON literals (numbers, true/false, strings, lists)."""
    out: dict[str, Any] = {}
    for it in items or []:
        if "=" not in it:
            raise InputError(f"expected key=value, got {it!r} (e.g. --objective-arg beta=6)")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train a model (standard, pgd, trades, fast, noise, ...)")
    p.add_argument("--config", default=None, help="JSON file of TrainConfig fields (flags override it)")
    p.add_argument("--model", default=None, help="architecture (robrep list models); default small-cnn")
    p.add_argument("--dataset", default=None, help="dataset (robrep list datasets); default demo")
    p.add_argument("--objective", default=None, help="objective (robrep list objectives); default standard")
    add_threat(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=["constant", "step", "cosine", "cyclic"], default=None)
    p.add_argument("--eps-warmup", type=float, default=None, help="fraction of training to ramp eps from 0")
    p.add_argument("--train-fraction", type=float, default=None)
    p.add_argument("--eval-n", type=int, default=None, help="test images evaluated after each epoch")
    p.add_argument("--eval-steps", type=int, default=None, help="PGD steps of the per-epoch robust evaluation")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA; on CPU only faster with native bf16: AVX512-BF16/AMX)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training and its attacks (opt-in)")
    p.add_argument("--objective-arg", action="append", metavar="KEY=VALUE", help="objective option, e.g. beta=6 or steps=40")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="architecture option, e.g. width=32")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    add_common(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Any:
    from ..train import TrainConfig

    base: dict[str, Any] = {}
    if args.config:
        try:
            base = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read config {args.config}: {e}") from e
    flags = {
        "model": args.model, "dataset": args.dataset, "objective": args.objective, "norm": args.norm if args.eps is not None else None,
        "eps": args.eps, "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
        "weight_decay": args.weight_decay, "schedule": args.schedule, "eps_warmup": args.eps_warmup,
        "train_fraction": args.train_fraction, "eval_n": args.eval_n, "eval_steps": args.eval_steps,
        "data_root": args.data_root, "device": args.device if args.device != "auto" else None,
    }
    base.update({k: v for k, v in flags.items() if v is not None})
    if args.seed or "seed" not in base:
        base["seed"] = args.seed
    if args.amp or _bf16(args):
        base["amp"] = True
        if not args.amp and base.get("channels_last") is None:  # --precision: bf16 runs fastest in NHWC
            base["channels_last"] = True
    if args.channels_last:
        base["channels_last"] = True
    if args.compile:
        base["compile"] = True
    if args.objective_arg:
        base["objective_kwargs"] = {**base.get("objective_kwargs", {}), **parse_kv(args.objective_arg)}
    if args.model_arg:
        base["model_kwargs"] = {**base.get("model_kwargs", {}), **parse_kv(args.model_arg)}
    return TrainConfig.from_dict(base)


def _bf16(args: argparse.Namespace) -> bool:
    """``--precision`` resolved on the training device (auto: bf16 where native; fp32: off)."""
    from ..runtime import resolve_precision
    from .common import device_of

    prec = getattr(args, "precision", "fp32")
    return prec != "fp32" and resolve_precision(prec, device_of(args.device)) == "bf16"


def run(args: argparse.Namespace) -> int:
    from ..train import train

    cfg = config_from_args(args)
    out = Path(args.out or f"runs/{cfg.dataset.replace(':', '_').replace('/', '_')}-{cfg.model.replace(':', '_')}-{cfg.objective}-{cfg.norm}{cfg.eps:g}-s{cfg.seed}")
    if args.download:
        from ..data import load_dataset

        load_dataset(cfg.dataset, "train", root=cfg.data_root, download=True)
        load_dataset(cfg.dataset, "test", root=cfg.data_root, download=True)
    res = train(cfg, out, resume=args.resume, show_progress=not args.quiet, log=log)
    last = res.history[-1] if res.history else {}
    result = {"checkpoint": str(res.checkpoint), "out": str(out), **last, "seconds": round(res.seconds, 2)}
    summary = f"trained {cfg.model} on {cfg.dataset} ({cfg.objective}, {cfg.norm} eps={cfg.eps:g}) in {res.seconds:.0f}s -> {res.checkpoint}"
    if "test_clean_accuracy" in last:
        summary += f"\n  clean accuracy {last['test_clean_accuracy']:.4f}"
    if "test_robust_accuracy" in last:
        summary += f", robust accuracy (PGD-{cfg.eval_steps}) {last['test_robust_accuracy']:.4f}"
    emit(result, args.json, summary)
    return 0
