"""``robrep synbench``: the SynBench robustness-accuracy score of an encoder (Ko et al.), and
optionally the SynBench-informed eps-robust linear probe on real data."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_attack,
    add_checkpoint,
    add_common,
    check_attack,
    device_of,
    emit,
    load_checkpoint_arg,
    log,
    setup_shard,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("synbench", help="SynBench score of an encoder on synthetic Gaussian mixtures (Ko et al.)")
    add_checkpoint(p)
    p.add_argument("--layer", default="penultimate", help="representation layer (penultimate, logits or a module name)")
    p.add_argument("--eps", type=float, nargs="+", default=None,
                   help="relative l2 radii in [0,1) of the robust Bayes classifier (default 0 0.1 0.2 0.3 0.4 0.5)")
    p.add_argument("--thresholds", type=float, nargs="+", default=None, help="threshold accuracies (default 0.6 0.7 0.8 0.9)")
    p.add_argument("--n-train", type=int, default=2048, help="synthetic training realizations per scale (paper 2048)")
    p.add_argument("--n-test", type=int, default=2048, help="synthetic test realizations per scale (paper 2048)")
    p.add_argument("--scales", type=float, nargs="+", default=None,
                   help="mean scales ||mu|| of the synthetic mixtures (default: 0.1, 0.2, ..., 4.9 as in the paper)")
    p.add_argument("--input-shape", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="synthetic image shape (default: the model's)")
    p.add_argument("--clip", action="store_true", help="clip synthetic images to [0,1] (not the paper's protocol)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--synbench-seed", type=int, default=12, help="seed of the synthetic data (paper 12)")
    p.add_argument("--probe", action="store_true",
                   help="also train a standard and a SynBench-eps robust linear probe on --dataset and compare them")
    p.add_argument("--dataset", default=None, help="real data for --probe (default: the checkpoint's dataset)")
    p.add_argument("--probe-threshold", type=float, default=0.7, help="a_t whose best eps picks the probe radius")
    p.add_argument("--probe-norm", default="l2", choices=["linf", "l2", "l1"])
    p.add_argument("--probe-eps", type=float, default=None, help="override the chosen relative eps")
    p.add_argument("--probe-epochs", type=int, default=5)
    p.add_argument("--probe-n-train", type=int, default=None, help="first n training images for the probes")
    p.add_argument("--probe-eval-n", type=int, default=1000, help="test images for the probes' accuracies")
    p.add_argument("--resume", action="store_true",
                   help="skip the scales already finished in --out (OUT/chunks, one file per scale) and merge them")
    p.add_argument("--overwrite", action="store_true", help="discard finished scales in --out and start again")
    add_attack(p, "the probes' adversarial accuracy with --probe (pgd: PGD-20)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import InputError
    from ..evaluate.synbench import (
        DEFAULT_EPS,
        DEFAULT_THRESHOLDS,
        SCALES,
        plot_synbench,
        robust_linear_probe,
        synbench,
    )
    from ..runs import write_record

    if (args.resume or args.overwrite) and not args.out:
        raise InputError("--resume and --overwrite need --out, the run folder that holds the finished scales")
    shard = setup_shard(args)
    check_attack(args.attack)
    model, meta = load_checkpoint_arg(args)
    res = synbench(model, input_shape=args.input_shape, layer=args.layer, eps=args.eps or DEFAULT_EPS,
                   thresholds=args.thresholds or DEFAULT_THRESHOLDS, scales=args.scales or SCALES, n_train=args.n_train, n_test=args.n_test,
                   seed=args.synbench_seed, batch_size=args.batch_size, clip=args.clip, device=device_of(args.device),
                   out=args.out, resume=args.resume, overwrite=args.overwrite, shard=shard,
                   precision=args.precision)
    if not shard.is_main:  # every rank holds the merged result; rank 0 alone trains the probes, writes and prints
        return 0
    out = res.to_dict() | {"checkpoint": str(args.checkpoint)}
    j7 = 0.7 if 0.7 in res.thresholds else res.thresholds[0]
    for t in res.thresholds:  # flat scalars for the HTML report table
        out[f"synbench_score@{t:g}"] = max(res.scores()[f"{t:g}"].values())
    lines = [f"SynBench ({res.feature_dim}-d {args.layer}, {res.seconds:.1f} s); score per eps (rows) and a_t (columns)",
             "eps    " + " ".join(f"{t:>7g}" for t in res.thresholds)]
    for i, e in enumerate(res.eps):
        lines.append(f"{e:<6g} " + " ".join(f"{float(res.score[i, j]):7.4f}" for j in range(len(res.thresholds))))
    lines.append(f"best eps at a_t={j7:g}: {res.best_eps(j7):g}")
    if args.probe:
        from ..data import load_dataset

        dataset = args.dataset or meta.get("dataset")
        if not dataset:
            raise InputError("the checkpoint does not record its dataset: pass --dataset for --probe")
        torch.manual_seed(args.seed)
        tr = load_dataset(dataset, "train", root=args.data_root, download=args.download)
        te = load_dataset(dataset, "test", root=args.data_root, download=args.download)
        if args.probe_n_train:
            tr = tr.head(args.probe_n_train)
        if not args.quiet:
            log("training the standard and the eps-robust linear probes ...")
        pr = robust_linear_probe(model, tr, te, res, threshold=args.probe_threshold, norm=args.probe_norm,
                                 eps=args.probe_eps, layer=args.layer, epochs=args.probe_epochs,
                                 eval_n=args.probe_eval_n, seed=args.seed, attack=args.attack)
        out["probe"] = pr.to_dict() | {"dataset": dataset}
        d = pr.to_dict()
        lines.append(f"probes on {dataset} ({args.probe_norm}, radius {pr.radius:.3g} = {pr.synbench_eps:g} x {pr.reference_radius:.3g}): "
                     f"standard {d['standard_natural_accuracy']:.4f}/{d['standard_adversarial_accuracy']}, "
                     f"robust {d['robust_natural_accuracy']:.4f}/{d['robust_adversarial_accuracy']} (natural/adversarial, "
                     f"{args.attack})")
    if args.out:
        from ..io.atomic import atomic_write_json

        cfg = {k: v for k, v in vars(args).items() if k != "func"}
        atomic_write_json(Path(args.out) / "result.json", out)
        write_record(Path(args.out), "synbench", cfg, out)
        plot_synbench(res, Path(args.out) / "synbench.png", title=Path(str(args.checkpoint)).parent.name or None)
    emit(out, args.json, "\n".join(lines))
    return 0

