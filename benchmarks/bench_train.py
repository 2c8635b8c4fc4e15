"""Adversarial training cost vs its floor: one PGD-K training step costs K input-gradient passes
plus one training pass, so an adversarial epoch should take about (K+1) standard epochs.

    python benchmarks/bench_train.py --model small-cnn --steps 10 --batches 30

Prints seconds per batch for standard and PGD-K training (same model, data, batch, device,
interleaved repeats) and the ratio pgd / ((K+1) x standard); target <= 1.1. (An input-gradient
pass skips the weight gradients, so ratios below 1 are possible.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import robrep
from robrep.objectives import StepContext, create_objective


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--shape", type=int, nargs=3, default=[1, 28, 28])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = robrep.create_model(a.model, num_classes=10, input_shape=tuple(a.shape)).to(dev)
    xs = torch.rand(a.batches, a.batch, *a.shape, device=dev)
    ys = torch.randint(0, 10, (a.batches, a.batch), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    thr = robrep.threat("linf", 0.1)
    objs = {"standard": create_objective("standard"), f"pgd-{a.steps}": create_objective("pgd", steps=a.steps)}

    def run(obj) -> float:
        g = torch.Generator(device=dev).manual_seed(0)
        model.train()
        t = time.perf_counter()
        for i in range(a.batches):
            loss, _ = obj.loss(model, xs[i], ys[i], StepContext(thr, g))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / a.batches

    times: dict[str, list[float]] = {k: [] for k in objs}
    for k, o in objs.items():
        run(o)  # warm-up
    for _ in range(a.repeats):
        for k, o in objs.items():
            times[k].append(run(o))
    std = statistics.median(times["standard"])
    adv = statistics.median(times[f"pgd-{a.steps}"])
    print(f"model={a.model} batch={a.batch} device={dev} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"  standard step   {std * 1000:8.1f} ms")
    print(f"  pgd-{a.steps} step   {adv * 1000:8.1f} ms   ratio to ({a.steps}+1) x standard: {adv / ((a.steps + 1) * std):.3f}")


if __name__ == "__main__":
    main()
