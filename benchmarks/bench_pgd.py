"""PGD-K time per batch: robrep vs a plain hand-written loop (the physical limit: K forward +
backward passes w.r.t. the input) vs peers (torchattacks, ART, foolbox, MadryLab robustness --
each only if importable), same model, batch and device, interleaved repeats, median times.

    python benchmarks/bench_pgd.py --model small-cnn --batch 256 --steps 10 --norm linf
    python benchmarks/bench_pgd.py --model resnet18 --shape 3 32 32 --batch 64

Prints one row per implementation with its median seconds per batch and its ratio to the plain
loop, plus the robust accuracy each reaches (no accuracy regressions for speed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

import robrep
from robrep.attacks import pgd


def plain_loop(model, x, y, eps: float, alpha: float, steps: int, norm: str) -> torch.Tensor:
    """The limit: K forward/backward passes w.r.t. the input, no bookkeeping."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1) if norm == "linf" else x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x_adv), y)
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


def peers(model, eps: float, alpha: float, steps: int, norm: str) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    out: dict[str, Callable] = {}
    try:
        import torchattacks

        atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True) if norm == "linf" else \
            torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        out["torchattacks"] = lambda x, y: atk(x, y)
    except ImportError:
        pass
    try:
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        c, h, w = model.input_shape
        clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(c, h, w), nb_classes=model.num_classes,
                                clip_values=(0.0, 1.0), device_type="gpu" if next(model.parameters()).is_cuda else "cpu")
        art_atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=alpha, max_iter=steps,
                                                  num_random_init=1, batch_size=10**6, verbose=False)
        out["ART"] = lambda x, y: torch.from_numpy(art_atk.generate(x.cpu().numpy(), y.cpu().numpy())).to(x.device)
    except ImportError:
        pass
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        fatk = fb.attacks.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=True) if norm == "linf" else \
            fb.attacks.L2PGD(abs_stepsize=alpha, steps=steps, random_start=True)
        out["foolbox"] = lambda x, y: fatk(fmodel, x, y, epsilons=eps)[1]
    except ImportError:
        pass
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--shape", type=int, nargs=3, default=[1, 28, 28])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--eps", type=float, default=None)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default=None, help="a trained model (else random weights)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    if a.checkpoint:
        model = robrep.load(a.checkpoint, device=dev)
        shape = model.input_shape
    else:
        shape = tuple(a.shape)
        model = robrep.create_model(a.model, num_classes=10, input_shape=shape).to(dev).eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    eps = a.eps if a.eps is not None else (8 / 255 if a.norm == "linf" else 0.5)
    alpha = 2.5 * eps / a.steps
    x = torch.rand(a.batch, *shape, device=dev)
    with torch.no_grad():
        y = model(x).argmax(1)
    thr = robrep.threat(a.norm, eps)
    impls: dict[str, Callable] = {
        "plain loop": lambda x, y: plain_loop(model, x, y, eps, alpha, a.steps, a.norm),
        "robrep pgd": lambda x, y: pgd(model, x, y, thr, steps=a.steps, step_size=alpha, check=False).x_adv,
        "robrep pgd (no keep_best)": lambda x, y: pgd(model, x, y, thr, steps=a.steps, step_size=alpha, keep_best=False, check=False).x_adv,
    }
    impls.update(peers(model, eps, alpha, a.steps, a.norm))
    times: dict[str, list[float]] = {k: [] for k in impls}
    acc: dict[str, float] = {}
    for k, f in impls.items():  # warm-up
        xa = f(x, y)
        with torch.no_grad():
            acc[k] = float((model(xa).argmax(1) == y).float().mean())
    for _ in range(a.repeats):  # interleaved
        for k, f in impls.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            f(x, y)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["plain loop"])
    rows = {k: {"median_s": statistics.median(v), "ratio_to_plain": statistics.median(v) / base, "robust_acc": acc[k]} for k, v in times.items()}
    print(f"PGD-{a.steps} {a.norm} eps={eps:.4g} model={a.model if not a.checkpoint else a.checkpoint} batch={a.batch} "
          f"device={dev} threads={torch.get_num_threads()} torch={torch.__version__}")
    for k, r in rows.items():
        print(f"  {k:<28} {r['median_s'] * 1000:9.1f} ms  x{r['ratio_to_plain']:.3f}  robust acc {r['robust_acc']:.3f}")
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
