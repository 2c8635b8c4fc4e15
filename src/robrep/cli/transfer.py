"""``robrep transfer`` and ``robrep transfer-sweep``: fixed-feature / full-network transfer of a
(robust) source model to a target dataset (Salman et al., NeurIPS 2020), and eps sweeps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import add_attack, add_common, device_of, emit, log, setup_shard


def _add_transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=15, help="target training epochs (paper: 150)")
    p.add_argument("--batch-size", type=int, default=64, help="paper: 64")
    p.add_argument("--lr", type=float, default=None, help="default 0.01 (fixed) / 0.001 (full), the paper's usual best")
    p.add_argument("--lr-step", type=int, default=None, help="lr x0.1 every this many epochs (default epochs // 3)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--additional-hidden", type=int, default=0, help="hidden [Linear+ReLU] layers in the new head (MLP head)")
    p.add_argument("--bn", choices=["frozen", "update"], default="frozen",
                   help="fixed mode: frozen = backbone in eval mode (BN statistics fixed, default); "
                        "update = backbone in train mode as in the paper's code (BN statistics adapt to the target)")
    p.add_argument("--train-norm", default="linf", choices=["linf", "l2", "l1"], help="adversarial training on the target: norm")
    p.add_argument("--train-eps", type=float, default=0.0, help="adversarial training on the target: eps (0 = natural, the paper's)")
    p.add_argument("--train-steps", type=int, default=7)
    p.add_argument("--eval-norm", default="linf", choices=["linf", "l2", "l1"], help="adversarial accuracy on the target: norm")
    p.add_argument("--eval-eps", type=float, default=0.0, help="adversarial accuracy on the target: eps (0 = natural only)")
    add_attack(p, "the adversarial accuracy on the target (and, in a sweep, of each source on its own data)")
    p.add_argument("--eval-steps", type=int, default=20, help="steps of a single attack (pgd, apgd...); a protocol uses its own")
    p.add_argument("--eval-restarts", type=int, default=1, help="restarts of a single attack; a protocol uses its own")
    p.add_argument("--eval-n", type=int, default=1000, help="test images attacked (natural accuracy uses all)")
    p.add_argument("--no-cache", action="store_true", help="fixed mode: do not cache frozen features (same result, slower)")
    p.add_argument("--arch", default=None, help="architecture, for checkpoints that do not record it")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a legacy checkpoint (runs code from the file: only for files you trust)")
    p.add_argument("--weights", default=None,
                   help="for a model name source: torchvision weights (e.g. IMAGENET1K_V1; timm: any value = pretrained); downloads")
    p.add_argument("--input-size", type=int, default=None, help="for a model name source: input H = W (default 224)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("transfer", help="transfer a source model to a target dataset (fixed-feature or full fine-tuning)")
    p.add_argument("--checkpoint", required=True,
                   help="source: a checkpoint file (robrep or a registered foreign format) or a model name (tv:resnet18, timm:...)")
    p.add_argument("--target", required=True, help="target dataset (robrep list datasets)")
    p.add_argument("--mode", choices=["fixed", "full"], default="fixed", help="fixed: train the new head only; full: fine-tune all")
    p.add_argument("--target-fraction", type=float, default=1.0, help="class-balanced fraction of the target training split")
    p.add_argument("--resolution", type=int, default=None, help="resample the target to r x r before resizing to the source's size")
    p.add_argument("--save-model", action="store_true", help="write the transferred model to --out/model.safetensors")
    _add_transfer_options(p)
    add_common(p)
    p.set_defaults(func=run)

    s = sub.add_parser("transfer-sweep", help="transfer every source (eps grid) to every target in both modes; resumable")
    s.add_argument("--sources", nargs="+", required=True,
                   help="checkpoint files or run folders (NAME=PATH to name them; eps/norm come from the checkpoint)")
    s.add_argument("--targets", nargs="+", required=True, help="target datasets")
    s.add_argument("--fractions", nargs="+", type=float, default=[1.0], help="training fractions of each target")
    s.add_argument("--resolutions", nargs="+", default=["native"], help="effective target resolutions (native or pixels)")
    s.add_argument("--modes", nargs="+", choices=["fixed", "full"], default=["fixed", "full"])
    s.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    _add_transfer_options(s)
    add_common(s)
    s.set_defaults(func=run_sweep_cmd)


def _config(args: argparse.Namespace, **over: Any) -> Any:
    from ..transfer import TransferConfig

    d = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_step=args.lr_step, momentum=args.momentum,
             weight_decay=args.weight_decay, additional_hidden=args.additional_hidden, bn=args.bn, train_norm=args.train_norm,
             train_eps=args.train_eps, train_steps=args.train_steps, eval_norm=args.eval_norm, eval_eps=args.eval_eps,
             eval_steps=args.eval_steps, eval_restarts=args.eval_restarts, eval_attack=args.attack, eval_n=args.eval_n, cache_features=not args.no_cache,
             seed=args.seed)
    d.update(over)
    return TransferConfig(**d)


def _input_shape(args: argparse.Namespace) -> tuple[int, int, int] | None:
    return (3, args.input_size, args.input_size) if args.input_size else None


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..models import save_model
    from ..runs import write_record
    from ..transfer import load_source, source_threat, transfer

    cfg = _config(args, mode=args.mode, target_fraction=args.target_fraction, resolution=args.resolution)
    model, meta = load_source(args.checkpoint, arch=args.arch, trust=args.trust_checkpoint, weights=args.weights,
                              input_shape=_input_shape(args), device=device_of(args.device))
    train = load_dataset(args.target, "train", root=args.data_root, download=args.download)
    test = load_dataset(args.target, "test", root=args.data_root, download=args.download)
    res = transfer(model, train, test, cfg, log=None if args.quiet else log)
    norm, eps = source_threat(meta)
    out = {"natural_accuracy": res.natural_accuracy, "adversarial_accuracy": res.adversarial_accuracy,
           "balanced_accuracy": res.balanced_accuracy, "n_natural": res.n_natural, "n_adversarial": res.n_adversarial,
           "n_train": res.n_train, "n_trainable": res.n_trainable, "feat_dim": res.feat_dim, "seconds": round(res.seconds, 2),
           "target": args.target, "mode": args.mode, "source": str(args.checkpoint), "source_norm": norm, "source_eps": eps,
           "source_dataset": meta.get("dataset"), "attack": res.attack}
    if res.stages is not None:
        out |= {"stages": res.stages, "flags": list(res.flags)}
        out |= {f"adversarial_accuracy_after_{k}": v for k, v in res.stages.items() if k != "clean"}
    if args.out:
        outdir = Path(args.out)
        write_record(outdir, "transfer", vars(args) | {"func": None, "transfer_config": cfg.to_dict()}, out, history=res.history)
        if args.save_model:
            if cfg.additional_hidden:
                log("not saving the model: a head with hidden layers is not rebuildable from the checkpoint spec")
            else:
                save_model(outdir / "model.safetensors", res.model,
                           {"dataset": args.target, "transfer": cfg.to_dict(), "source": str(args.checkpoint), "threat": None})
    s = (f"{args.mode} transfer to {args.target} ({res.n_train} training images, {res.n_trainable} trainable parameters): "
         f"natural accuracy {res.natural_accuracy:.4f}")
    if res.adversarial_accuracy is not None:
        s += (f", adversarial accuracy {res.adversarial_accuracy:.4f} ({args.attack}, {args.eval_norm} eps={args.eval_eps:g}, "
              f"{res.n_adversarial} images)")
        if res.stages is not None:
            s += "\n  after each stage: " + ", ".join(f"{k} {v:.4f}" for k, v in res.stages.items())
    for f in res.flags:
        log(f"flag {f['code']}: {f['message']}; {f['meaning']}; try: {f['action']}")
    emit(out, args.json, s)
    return 0


def _parse_sources(items: list[str]) -> list[Any]:
    from ..models import read_meta
    from ..transfer import SourceSpec, source_threat

    specs = []
    for it in items:
        name, path = it.split("=", 1) if "=" in it else (None, it)
        p = Path(path)
        if p.is_dir():
            p = p / "model.safetensors"
        if not p.is_file():
            raise InputError(f"source checkpoint {p} does not exist; train it first (robrep train ... --out DIR)")
        try:
            meta = read_meta(p).get("meta", {})
        except Exception:  # foreign formats: no robrep header, eps unknown
            meta = {}
        norm, eps = source_threat(meta)
        label = name or (p.parent.name if p.name == "model.safetensors" else p.stem)
        specs.append(SourceSpec(label, str(p), norm, eps))
    return specs


def run_sweep_cmd(args: argparse.Namespace) -> int:
    from ..io.atomic import atomic_write_json, atomic_write_text
    from ..runs import write_record
    from ..transfer import (
        best_vs_standard,
        load_records,
        plot_sweep,
        run_sweep,
        summarize_sweep,
        table_markdown,
    )

    if not args.out:
        raise InputError("transfer-sweep needs --out (the folder holding one JSON file per finished cell)")
    out = Path(args.out)
    shard = setup_shard(args)
    sources = _parse_sources(args.sources)
    res: list[int | None] = []
    for r in args.resolutions:
        if r == "native":
            res.append(None)
        elif r.isdigit():
            res.append(int(r))
        else:
            raise InputError(f"--resolutions takes 'native' or a number of pixels, got {r!r}")
    base = _config(args)
    records = run_sweep(sources, args.targets, out, fractions=args.fractions, modes=args.modes, seeds=args.seeds,
                        resolutions=res, base=base, data_root=args.data_root, device=device_of(args.device),
                        trust=args.trust_checkpoint, log=None if args.quiet else log, shard=shard)
    if not shard.is_main:  # rank 0 alone writes the tables and figures
        return 0
    rows = summarize_sweep(load_records(out))  # all cells in the folder, also those of earlier invocations
    comp = best_vs_standard(rows, "natural") + best_vs_standard(rows, "adversarial")
    atomic_write_text(out / "table.md", table_markdown(rows))
    atomic_write_json(out / "summary.json", {"rows": rows, "best_vs_eps0": comp})
    plot_sweep(rows, out / "accuracy_vs_eps.png", "natural")
    if any("adversarial" in r for r in rows):
        plot_sweep(rows, out / "adversarial_accuracy_vs_eps.png", "adversarial")
    metrics = {"cells": len(records), "cells_in_folder": sum(len(r["seeds"]) for r in rows), "best_vs_eps0": comp}
    write_record(out, "transfer-sweep", vars(args) | {"func": None, "transfer_config": base.to_dict()}, metrics)
    lines = [f"{len(records)} cells ({metrics['cells_in_folder']} in the folder) -> {out}/table.md"]
    for c in comp:
        sig = "" if c["significant"] is None else (" (beyond 95% CI)" if c["significant"] else " (within 95% CI)")
        lines.append(f"  {c['metric']:>11} {c['target']} f={c['fraction']:g} {c['mode']}: eps0 {100 * c['eps0']:.2f}% vs best "
                     f"{c['best_source']} {100 * c['best']:.2f}% (diff {100 * c['diff']:+.2f}){sig}")
    emit({"out": str(out), **metrics, "rows": rows}, args.json, "\n".join(lines))
    return 0


__all__ = ["register", "run", "run_sweep_cmd"]
