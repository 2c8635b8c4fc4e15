"""robrep's AutoAttack protocols vs the reference implementation (pyautoattack), side by side.

For each model (trained here, adversarially, cached in --cache): the same first --n test images,
the reference's ``AutoAttack(version="standard", seed=0).run_standard_evaluation`` and robrep's
``autoattack-standard`` and ``fast`` protocols, run one after the other in this process, each on
one batch of all images (so the reference and robrep draw the same random numbers). Prints the
robust accuracy after every stage, the wall times and their ratios, and robrep's wall time over
the floor of its own passes (example forward+backward passes x the measured time of one, plus
forward-only passes x the time of one).

    python benchmarks/bench_autoattack.py --n 200 --json docs/benchmarks/autoattack.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch
from torch import nn

import robrep
from robrep.attacks import PassCounter, run_protocol

CASES = {"mnist": ("mnist", "linf", 0.3), "fashion-mnist": ("fashion-mnist", "linf", 0.1)}


def tiny_cnn() -> nn.Module:
    """conv8 (stride 2) - conv16 (stride 2) - fc10 with ELU on 28x28 grey images (inputs in [0,1]); the
    ReLU version, adversarially trained this briefly at eps 0.3, has zero input gradients on its
    robust points (the zero-gradients flag)."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ELU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ELU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


def train(dataset: str, eps: float, steps: int, cache: Path) -> nn.Module:
    """PGD-2 adversarial training (linf ``eps``), Adam, batches of 64; cached as safetensors."""
    from safetensors.torch import load_file, save_file

    path = cache / f"{dataset}-elu-eps{eps:g}-steps{steps}.safetensors"
    model = tiny_cnn()
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    torch.manual_seed(0)
    x, y = robrep.load_dataset(dataset, "train").tensors()
    x = x.float() / 255 if not x.is_floating_point() else x
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    thr = robrep.threat("linf", eps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(0, len(x), (64,), generator=g)
        xa = robrep.attacks.pgd_perturb(model.eval(), x[i], y[i], thr, steps=2, step_size=1.25 * eps, generator=g)
        loss = nn.functional.cross_entropy(model.train()(xa), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    cache.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(path))
    return model.eval()


class _StageLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stages: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        m = re.match(r"robust accuracy after (\S+): ([\d.]+)%", msg)
        if m:
            self.stages[m.group(1).lower()] = float(m.group(2)) / 100
        m = re.match(r"initial accuracy: ([\d.]+)%", msg)
        if m:
            self.stages["clean"] = float(m.group(1)) / 100


def run_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> tuple[dict[str, float], float]:
    from pyautoattack import AutoAttack

    handler = _StageLog()
    log = logging.getLogger("auto-attack")
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        aa = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", seed=0, device="cpu")
        t = time.perf_counter()
        aa.run_standard_evaluation(x, y, batch_size=len(x))
        wall = time.perf_counter() - t
    finally:
        log.removeHandler(handler)
    return handler.stages, wall


def run_robrep(protocol: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
               eps: float) -> tuple[dict[str, float], float, PassCounter]:
    counter = PassCounter()
    t = time.perf_counter()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = torch.nonzero(ok).flatten()
    r = run_protocol(protocol, model, x[idx], y[idx], robrep.threat(norm, eps), seed=0, counter=counter)
    wall = time.perf_counter() - t
    counter.forward += len(x)
    n = len(x)
    stages = {"clean": float(ok.float().mean())}
    for name, broke in r.stages:
        stages[name] = float(ok.sum() - broke.sum()) / n
    return stages, wall, counter


def pass_times(model: nn.Module, x: torch.Tensor, reps: int = 100) -> tuple[float, float]:
    """Seconds per example of one forward+backward (input gradient) and of one forward pass at
    batch size len(x): the mean over ``reps`` back-to-back calls (a sustained rate; a few calls
    time bursts of a shared CPU, not the rate an attack sees)."""
    xr = x.clone().requires_grad_(True)
    t = time.perf_counter()
    for _ in range(reps):
        torch.autograd.grad(model(xr).sum(), xr)
    g = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(reps):
            model(x)
    f = (time.perf_counter() - t) / reps
    return g / len(x), f / len(x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="test images per model (default: %(default)s)")
    ap.add_argument("--models", default="mnist,fashion-mnist", help="(default: %(default)s)")
    ap.add_argument("--train-steps", type=int, default=300, help="(default: %(default)s)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/robrep/bench-autoattack"), help="(default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for key in args.models.split(","):
        dataset, norm, eps = CASES[key]
        model = train(dataset, eps, args.train_steps, Path(args.cache))
        for p in model.parameters():
            p.requires_grad_(False)
        x, y = next(iter(robrep.load_dataset(dataset, "test").head(args.n).batches(args.n)))
        ref_stages, ref_wall = run_reference(model, x, y, norm, eps)
        std_stages, std_wall, std_cnt = run_robrep("autoattack-standard", model, x, y, norm, eps)
        fast_stages, fast_wall, fast_cnt = run_robrep("fast", model, x, y, norm, eps)
        # one pass at the batch size most passes run at: the points left after APGD-CE
        t_grad, t_fwd = pass_times(model, x[: max(1, round(std_stages["apgd-ce"] * len(x)))])
        floor_std = std_cnt.grad * t_grad + std_cnt.forward * t_fwd
        floor_fast = fast_cnt.grad * t_grad + fast_cnt.forward * t_fwd
        row = {"model": f"{dataset} tiny CNN, PGD-2 trained {args.train_steps} steps", "norm": norm, "eps": eps, "n": args.n,
               "reference_stages": ref_stages, "robrep_standard_stages": std_stages, "robrep_fast_stages": fast_stages,
               "reference_s": ref_wall, "robrep_standard_s": std_wall, "robrep_fast_s": fast_wall,
               "speedup_standard": ref_wall / std_wall, "speedup_fast": ref_wall / fast_wall,
               "passes_standard": vars(std_cnt), "passes_fast": vars(fast_cnt),
               "s_per_example_grad_pass": t_grad, "s_per_example_forward": t_fwd,
               "standard_wall_over_floor": std_wall / floor_std, "fast_wall_over_floor": fast_wall / floor_fast}
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    meta = {"machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}, python {platform.python_version()}",
            "threads": args.threads, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
