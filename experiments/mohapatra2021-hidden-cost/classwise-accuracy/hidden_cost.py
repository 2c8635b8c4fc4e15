"""Hidden cost of randomized smoothing on MNIST (Mohapatra et al., AISTATS 2021): per-class clean,
noisy and smoothed accuracy vs sigma for models trained with and without Gaussian noise.

usage: nice -n 10 python experiments/mohapatra2021-hidden-cost/classwise-accuracy/hidden_cost.py [--num 500] [--n 100]
Writes artifacts/certification/hidden_cost/<model>.json (one HiddenCostResult per model).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=500, help="first test images")
    ap.add_argument("--n", type=int, default=100, help="noise samples per image and sigma")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--models", nargs="+", default=["zoo:mnist-std", "mnist-noise-0.25", "mnist-noise-0.5", "mnist-noise-1.0"])
    ap.add_argument("--root", default="artifacts/certification")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("ROBREP_DATA", "../shared/data")

    import robrep
    from robrep.certify.hidden_cost import hidden_cost

    x, y = robrep.load_dataset("mnist", "test").head(args.num).tensors()
    out = Path(args.root) / "hidden_cost"
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        path = out / f"{name.replace(':', '-')}.json"
        if path.exists():
            continue
        # "zoo:NAME" is a shared model of artifacts/zoo (e.g. zoo:mnist-std, trained without noise)
        ck = Path("artifacts/zoo") / name[4:] if name.startswith("zoo:") else Path(args.root) / "models" / name
        model = robrep.load(ck / "model.safetensors")
        t = time.perf_counter()
        res = hidden_cost(model, x, y, args.sigmas, n=args.n, alpha=1e-3, batch_size=1000, seed=0)
        d = res.to_dict() | {"model": name, "seconds": time.perf_counter() - t}
        path.write_text(json.dumps(d, indent=1))
        print(f"{name}: {d['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
