"""Adversarial training cost vs its floor: a PGD-K training step costs K input-gradient passes
plus one training pass, so a PGD-K epoch should take about (K+1) standard epochs (an
input-gradient pass skips the weight gradients, so ratios below 1 are possible).

    python benchmarks/bench_train.py                               # small-cnn 28x28, PGD-10, robrep.train epochs
    python benchmarks/bench_train.py --model resnet18 --batch 64 --batches 10
    python benchmarks/bench_train.py --mode step                   # objective steps only, no training loop
    python benchmarks/bench_train.py --quick                       # smoke test
    python benchmarks/bench_train.py --device cuda --model resnet18 --batch 512 --amp   # GPU

``--mode epoch`` (default) times whole ``robrep.train`` epochs (eval_n=0: no per-epoch
evaluation) on the same synthetic in-memory data set: standard vs PGD-K, interleaved repeats,
medians of the epoch times the loop records (checkpoint writing excluded), and of the whole call.
``--mode step`` times the objective's loss + backward + optimizer step alone (what the loop adds
is the difference). Prints the ratio  pgd / ((K+1) x standard);  target <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import robrep  # noqa: E402
from robrep.data import DatasetInfo, TensorImageData  # noqa: E402
from robrep.objectives import StepContext, create_objective  # noqa: E402

SHAPES = {"small-cnn": (1, 28, 28), "mnist-cnn": (1, 28, 28), "resnet18": (3, 32, 32), "preact-resnet18": (3, 32, 32)}


def synthetic(n: int, shape: tuple[int, int, int], seed: int = 0) -> TensorImageData:
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, *shape, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    c = shape[0]
    info = DatasetInfo(name="synthetic", num_classes=10, input_shape=shape, mean=(0.5,) * c, std=(0.25,) * c,
                       classes=tuple(str(i) for i in range(10)))
    return TensorImageData(images, labels, info, "train")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--shape", type=int, nargs=3, default=None)
    p.add_argument("--width", type=int, default=32, help="small-cnn width")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="PGD steps K")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--batches", type=int, default=20, help="batches per epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mode", choices=["epoch", "step"], default="epoch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (as robrep train --amp: CUDA, and CPU where bf16 is native)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="TrainConfig(compile=True) for both objectives")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 16, 2 batches, K=2, 1 repeat")
    p.add_argument("--json", default=None, metavar="PATH")
    a = p.parse_args()
    if a.quick:
        a.batch, a.batches, a.steps, a.repeats = 16, 2, 2, 1
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    info = C.machine_info(dev)
    C.print_machine(info)
    shape = tuple(a.shape) if a.shape else SHAPES.get(a.model, (3, 32, 32))
    data = synthetic(a.batch * a.batches, shape)
    model_kwargs = {"width": a.width} if a.model == "small-cnn" else {}
    objs = {"standard": ("standard", 0.0, {}), f"pgd-{a.steps}": ("pgd", a.eps, {"steps": a.steps})}
    times: dict[str, list[float]] = {k: [] for k in objs}
    walls: dict[str, list[float]] = {k: [] for k in objs}
    tmp = tempfile.mkdtemp(prefix="robrep-bench-train-")
    try:
        if a.mode == "epoch":
            def run(name: str) -> None:
                obj, eps, kw = objs[name]
                cfg = robrep.TrainConfig(model=a.model, dataset="demo", objective=obj, eps=eps, epochs=1, batch_size=a.batch,
                                         eval_n=0, objective_kwargs=kw, model_kwargs=model_kwargs, device=a.device, amp=a.amp,
                                         channels_last=a.channels_last, compile=a.compile, keep_checkpoints=1)
                out = os.path.join(tmp, name)
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                res = robrep.train(cfg, out, train_data=data, show_progress=False)
                walls[name].append(time.perf_counter() - t)
                times[name].append(res.history[0]["epoch_seconds"])
        else:
            torch.manual_seed(0)
            model = robrep.create_model(a.model, num_classes=10, input_shape=shape, **model_kwargs).to(dev)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            xs = torch.stack([b[0] for b in data.batches(a.batch)]).to(dev)
            ys = torch.stack([b[1] for b in data.batches(a.batch)]).to(dev)

            def run(name: str) -> None:
                obj_name, eps, kw = objs[name]
                obj = create_objective(obj_name, **kw)
                thr = robrep.threat("linf", eps if eps > 0 else a.eps)
                g = torch.Generator(device=dev).manual_seed(0)
                model.train()
                C.sync(dev)
                t = time.perf_counter()
                for i in range(a.batches):
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.amp and dev.type == "cuda"):
                        loss, _ = obj.loss(model, xs[i], ys[i], StepContext(thr, g))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                C.sync(dev)
                times[name].append(time.perf_counter() - t)
                walls[name].append(times[name][-1])

        for k in objs:  # warm-up (not recorded)
            run(k)
            times[k].clear()
            walls[k].clear()
        for r in range(a.repeats):
            order = list(objs) if r % 2 == 0 else list(objs)[::-1]
            for k in order:
                run(k)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    std, adv = C.median(times["standard"]), C.median(times[f"pgd-{a.steps}"])
    wstd, wadv = C.median(walls["standard"]), C.median(walls[f"pgd-{a.steps}"])
    ratio = adv / ((a.steps + 1) * std)
    print()
    print(f"### training: {a.model} {shape}, batch {a.batch}, {a.batches} batches/epoch (synthetic data), PGD-{a.steps} linf "
          f"eps {a.eps}, mode {a.mode}, {a.repeats} interleaved repeats, medians, freshly initialised model"
          + (", bf16 autocast" if a.amp else "") + (", channels_last" if a.channels_last else "") + (", compiled" if a.compile else ""))
    print()
    rows = [["standard", 1000 * std / a.batches, 1.0, wstd],
            [f"pgd-{a.steps}", 1000 * adv / a.batches, adv / std, wadv]]
    print(C.markdown_table(["objective", "ms / batch", "x standard", "s / run (epoch mode: whole train() call)"], rows))
    print()
    print(f"ratio pgd-{a.steps} / (({a.steps}+1) x standard) = {ratio:.3f}  (target <= 1.1)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": info, "mode": a.mode, "model": a.model, "batch": a.batch, "batches": a.batches, "steps": a.steps,
                       "times_s": times, "wall_s": walls, "ratio": ratio}, f, indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
