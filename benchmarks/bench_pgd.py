"""PGD-K time per batch: robrep vs a plain hand-written loop (the physical limit: K forward +
backward passes w.r.t. the input) vs peers (torchattacks, ART, foolbox, MadryLab robustness --
each skipped with a printed reason when it is not importable or its API does not fit), on the
same model, batch and device, with interleaved repeats and median times.

    python benchmarks/bench_pgd.py                       # small-cnn 28x28 and ResNet-18 32x32, linf and l2
    python benchmarks/bench_pgd.py --models small-cnn --norms linf --checkpoint artifacts/madry2018/mnist-linf03/llr1-10ep/model.safetensors --dataset mnist
    python benchmarks/bench_pgd.py --quick               # smoke test: tiny batches, one repeat
    python benchmarks/bench_pgd.py --device cuda --models resnet18 --batch 512 --amp bf16 --channels-last   # GPU

Two times per implementation: the attack alone, and the attack plus what robust accuracy needs
(robrep's ``pgd`` returns per-example success flags; every other implementation needs one more
forward pass on its output). Ratios are to the plain loop. The robust accuracy each reached on the
same examples is printed, with the check that robrep's is no higher than any peer's + 0.5 points.
Without ``--checkpoint`` the model is freshly initialised (said in the output): timings depend
only on the architecture, but robust accuracies of random nets on random images are near 0 and
do not discriminate; give a trained checkpoint and ``--dataset`` for a meaningful accuracy column.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import robrep  # noqa: E402
from robrep.attacks import pgd, pgd_perturb  # noqa: E402

Impl = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]
SHAPES = {"small-cnn": (1, 28, 28), "mnist-cnn": (1, 28, 28), "resnet18": (3, 32, 32), "preact-resnet18": (3, 32, 32)}


def plain_loop(model, x, y, eps: float, alpha: float, steps: int, norm: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The limit: K forward/backward passes w.r.t. the input, uniform random start, no bookkeeping."""
    if norm == "linf":
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    else:
        d = torch.randn_like(x)
        n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clamp_min(1e-12)
        r = torch.rand(len(x), 1, 1, 1, device=x.device).pow(1.0 / x[0].numel())
        x_adv = (x + d / n * r * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            if norm == "linf":
                x_adv = torch.min(torch.max(x_adv + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
            else:
                g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                d = x_adv + alpha * g - x
                n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                x_adv = (x + d * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)).clamp(0, 1)
    return x_adv.detach()


def peers(model, shape, num_classes: int, eps: float, alpha: float, steps: int, norm: str, dev: torch.device) -> tuple[dict[str, Impl], dict[str, str]]:  # type: ignore[no-untyped-def]
    """Peer implementations that load and accept this setting, and the reasons for the others."""
    out: dict[str, Impl] = {}
    skipped: dict[str, str] = {}
    try:
        import torchattacks

        cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
        atk = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        out[f"torchattacks {torchattacks.__version__}"] = lambda x, y: (atk(x, y), None)
    except Exception as e:  # ImportError or an API change
        skipped["torchattacks"] = f"{type(e).__name__}: {e}"
    try:
        import art
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(shape), nb_classes=num_classes,
                                clip_values=(0.0, 1.0), device_type="gpu" if dev.type == "cuda" else "cpu")
        art_atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=alpha, max_iter=steps,
                                                  num_random_init=1, batch_size=10**6, verbose=False)
        out[f"ART {art.__version__}"] = lambda x, y: (torch.from_numpy(art_atk.generate(x.cpu().numpy(), y.cpu().numpy())).to(x.device), None)
    except Exception as e:
        skipped["ART"] = f"{type(e).__name__}: {e}"
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=dev)
        fatk = fb.attacks.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=True) if norm == "linf" else \
            fb.attacks.L2PGD(abs_stepsize=alpha, steps=steps, random_start=True)
        out[f"foolbox {fb.__version__}"] = lambda x, y: (fatk(fmodel, x, y, epsilons=eps)[1], None)
    except Exception as e:
        skipped["foolbox"] = f"{type(e).__name__}: {e}"
    try:
        import types

        import robustness
        from robustness.attacker import Attacker

        c = shape[0]
        # the robrep model normalises inside: robustness's own normalisation is the identity
        attacker = Attacker(model, types.SimpleNamespace(mean=torch.zeros(c), std=torch.ones(c))).to(dev)
        kw = dict(constraint="inf" if norm == "linf" else "2", eps=eps, step_size=alpha, iterations=steps, random_start=True, use_best=True)
        name = f"MadryLab robustness {getattr(robustness, '__version__', '')}".strip()
        if dev.type == "cuda":
            out[name] = lambda x, y: (attacker(x, y, **kw).detach(), None)
        else:
            # robustness 1.2.x calls orig_input.cuda() unconditionally (attacker.py); on CPU that
            # one call is made a no-op, the attack loop itself runs unmodified
            def run_cpu(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, None]:
                orig = torch.Tensor.cuda
                torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
                try:
                    return attacker(x, y, **kw).detach(), None
                finally:
                    torch.Tensor.cuda = orig  # type: ignore[method-assign]

            out[name + " (.cuda() shimmed on CPU)"] = run_cpu
    except Exception as e:
        skipped["MadryLab robustness"] = f"{type(e).__name__}: {e}"
    return out, skipped


def build(arch: str, args: argparse.Namespace, dev: torch.device) -> tuple[torch.nn.Module, tuple[int, int, int], str]:
    if args.checkpoint:
        model = robrep.load(args.checkpoint)
        desc = f"trained checkpoint {args.checkpoint}"
    else:
        shape = SHAPES.get(arch, tuple(args.shape) if args.shape else (3, 32, 32))
        kw: dict[str, Any] = {"width": args.width} if (arch == "small-cnn" and args.width) else {}
        torch.manual_seed(0)
        model = robrep.create_model(arch, num_classes=10, input_shape=shape, **kw)
        desc = f"freshly initialised {arch}" + (f" (width {args.width})" if kw else "") + " -- no checkpoint given"
    model = model.to(dev).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model, tuple(model.spec.input_shape), desc


def batch_for(model, shape, args: argparse.Namespace, arch: str, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:  # type: ignore[no-untyped-def]
    if args.batch:
        b = args.batch
    elif args.quick:
        b = 8
    else:
        b = 256 if shape[1] <= 28 else (512 if dev.type == "cuda" else 32)
    if args.dataset:
        data = robrep.load_dataset(args.dataset, "test").head(b)
        x, y = data.tensors()
        x, y = x.to(dev), y.to(dev)
        src = f"first {b} {args.dataset} test images, true labels"
    else:
        x = torch.rand(b, *shape, generator=torch.Generator().manual_seed(1)).to(dev)
        with torch.no_grad():
            y = model(x).argmax(1)
        src = f"{b} uniform random images labelled by the model"
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y, src


def run_config(arch: str, norm: str, args: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    model, shape, model_desc = build(arch, args, dev)
    x, y, src = batch_for(model, shape, args, arch, dev)
    small = shape[1] <= 28
    eps = args.eps if args.eps is not None else (args.eps_linf if norm == "linf" else args.eps_l2)
    if eps is None:
        eps = (0.3 if small else 8 / 255) if norm == "linf" else (2.0 if small else 0.5)
    steps = args.steps if args.steps else (3 if args.quick else 10)
    alpha = 2.5 * eps / steps
    thr = robrep.threat(norm, eps)

    impls: dict[str, Impl] = {
        "plain loop": lambda a, b: (plain_loop(model, a, b, eps, alpha, steps, norm), None),
        "robrep pgd (best iterate, default)": lambda a, b: (lambda r: (r.x_adv, r.success))(
            pgd(model, a, b, thr, steps=steps, step_size=alpha, check=False)),
        "robrep pgd(keep_best=False)": lambda a, b: (lambda r: (r.x_adv, r.success))(
            pgd(model, a, b, thr, steps=steps, step_size=alpha, keep_best=False, check=False)),
        "robrep pgd_perturb (x_adv only, training)": lambda a, b: (
            pgd_perturb(model, a, b, thr, steps=steps, step_size=alpha, check=False), None),
    }
    if args.compile:
        impls["robrep pgd compile=True"] = lambda a, b: (lambda r: (r.x_adv, r.success))(
            pgd(model, a, b, thr, steps=steps, step_size=alpha, check=False, compile=True))
    peer_impls, skipped = peers(model, shape, model.spec.num_classes, eps, alpha, steps, norm, dev)
    impls.update(peer_impls)
    if args.only:
        keep = [s.lower() for s in args.only]
        impls = {k: v for k, v in impls.items() if k == "plain loop" or any(s in k.lower() for s in keep)}

    amp = torch.autocast(dev.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]) if args.amp else contextlib.nullcontext()
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y

    def eval_fwd(xa: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(xa).argmax(1) != y

    acc: dict[str, float] = {}
    feasible: dict[str, bool] = {}
    last: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    with amp:
        for k in list(impls):  # warm-up; drop implementations that fail on this setting
            try:
                xa, succ = impls[k](x, y)
            except Exception as e:
                skipped[k] = f"failed at warm-up: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
                del impls[k]
                continue
            broken = eval_fwd(xa)
            if succ is not None and not torch.equal(succ, broken):
                print(f"WARNING: {k}: returned success flags differ from a fresh forward on x_adv "
                      f"({int((succ != broken).sum())} of {len(y)})")
            acc[k] = float((clean_ok & ~broken).float().mean())
            feasible[k] = bool(thr.contains(xa.float(), x.float(), tol=1e-5).all())
            last[k] = (xa, succ)
        attack_fns = {k: (lambda f=f: f(x, y)) for k, f in impls.items()}
        repeats = args.repeats if args.repeats else (1 if args.quick else 7)
        times = C.interleaved(attack_fns, repeats, dev)
        eval_times = C.interleaved({"eval forward": lambda: eval_fwd(x)}, repeats, dev)["eval forward"]
    t_eval = C.median(eval_times)
    t_plain = C.median(times["plain loop"])
    rows = []
    for k in impls:
        t = C.median(times[k])
        needs_eval = last[k][1] is None
        t_e2e = t + (t_eval if needs_eval else 0.0)
        rows.append({"implementation": k, "attack_ms": 1000 * t, "ratio": t / t_plain, "attack_plus_success_ms": 1000 * t_e2e,
                     "ratio_end_to_end": t_e2e / (t_plain + t_eval), "robust_acc": acc[k], "feasible": feasible[k],
                     "success_flags_returned": not needs_eval, "times_s": times[k]})
    # no accuracy regressions: robrep's robust accuracy <= every peer's + 0.5 points
    ours = {k: a for k, a in acc.items() if k.startswith("robrep pgd (") or k.startswith("robrep pgd(")}
    theirs = {k: a for k, a in acc.items() if not k.startswith("robrep") and k != "plain loop"}
    violations = [f"{o} {ao:.4f} > {p} {ap:.4f} + 0.005" for o, ao in ours.items() for p, ap in theirs.items() if ao > ap + 0.005]
    return {"model": arch, "model_desc": model_desc, "data": src, "norm": norm, "eps": eps, "steps": steps, "step_size": alpha,
            "batch": len(x), "repeats": repeats, "amp": args.amp, "channels_last": args.channels_last, "eval_forward_ms": 1000 * t_eval,
            "clean_acc": float(clean_ok.float().mean()), "rows": rows, "skipped": skipped, "accuracy_violations": violations}


def print_config(res: dict[str, Any]) -> None:
    print()
    print(f"### PGD-{res['steps']} {res['norm']} eps={res['eps']:.4g} step={res['step_size']:.4g}, {res['model_desc']}, "
          f"batch {res['batch']} ({res['data']}), {res['repeats']} interleaved repeats, medians"
          + (f", autocast {res['amp']}" if res["amp"] else "") + (", channels_last" if res["channels_last"] else ""))
    print()
    rows = [[r["implementation"], r["attack_ms"], r["ratio"], r["attack_plus_success_ms"], r["ratio_end_to_end"], r["robust_acc"],
             "yes" if r["feasible"] else "NO"] for r in res["rows"]]
    print(C.markdown_table(["implementation", "attack ms/batch", "x plain", "attack + success ms", "x plain (+1 fwd)",
                            "robust acc.", "in ball"], rows))
    print()
    print(f"clean accuracy {res['clean_acc']:.4f}; one evaluation forward pass {res['eval_forward_ms']:.1f} ms "
          "(added to implementations that return no success flags)")
    for k, why in res["skipped"].items():
        print(f"skipped {k}: {why}")
    if res["accuracy_violations"]:
        print("ACCURACY REGRESSION: " + "; ".join(res["accuracy_violations"]))
    else:
        print("accuracy check: robrep's robust accuracy <= every peer's + 0.5 points: OK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["small-cnn", "resnet18"], help="architectures (default: small-cnn resnet18)")
    p.add_argument("--norms", nargs="+", default=["linf", "l2"], choices=["linf", "l2"])
    p.add_argument("--shape", type=int, nargs=3, default=None, help="input shape of an architecture not in the defaults")
    p.add_argument("--width", type=int, default=32, help="small-cnn width (32: the MNIST linf-0.3 model of the reproductions)")
    p.add_argument("--batch", type=int, default=None, help="default: 256 at 28x28; 32 (CPU) or 512 (GPU) at 32x32")
    p.add_argument("--steps", type=int, default=None, help="PGD steps (default 10)")
    p.add_argument("--eps", type=float, default=None, help="one radius for every norm given (else --eps-linf / --eps-l2)")
    p.add_argument("--eps-linf", type=float, default=None, help="default 0.3 at 28x28, 8/255 at 32x32")
    p.add_argument("--eps-l2", type=float, default=None, help="default 2.0 at 28x28, 0.5 at 32x32")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 7)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast every implementation (GPU; bf16 also on CPUs with AVX512-BF16/AMX)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time robrep pgd(compile=True)")
    p.add_argument("--checkpoint", default=None, help="a trained robrep model (its architecture replaces --models)")
    p.add_argument("--dataset", default=None, help="attack real test images of this dataset (else random images)")
    p.add_argument("--only", nargs="+", default=None, help="substrings of implementation names to keep (the plain loop always runs)")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 8, 3 steps, 1 repeat")
    p.add_argument("--json", default=None, metavar="PATH", help="also write all results (with raw times) as JSON")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    info = C.machine_info(dev)
    C.print_machine(info)
    models = [robrep.load(a.checkpoint).spec.arch] if a.checkpoint else a.models
    results = []
    for arch in models:
        for norm in a.norms:
            res = run_config(arch, norm, a, dev)
            print_config(res)
            results.append(res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": info, "results": results}, f, indent=1, default=str)
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
