"""Randomized-smoothing throughput: noisy samples per second of CERTIFY (zeroth and first order).

Usage: python benchmarks/bench_certify.py [--checkpoint PATH] [--n 10000] [--batch-size 1000] [--threads 1]
       python benchmarks/bench_certify.py --quick      # smoke test
Without a checkpoint a freshly initialised small-cnn (MNIST shape) is used: the speed depends
only on the architecture. Prints one line per mode with its ratio to the floor (plain batched
forward passes of the model on noisy copies, timed in the same run) and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--quick", action="store_true", help="smoke test: n=200, n0=10, batch 100, one image")
    args = ap.parse_args()
    if args.quick:
        args.n, args.n0, args.batch_size, args.images = 200, 10, 100, 1
    torch.set_num_threads(args.threads)
    info = C.machine_info("cpu")
    C.print_machine(info)

    import robrep
    from robrep.certify import certify, certify_first_order
    from robrep.certify.smoothing import image_generator

    if args.checkpoint:
        model = robrep.load(args.checkpoint)
    else:
        model = robrep.create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,))
    model.eval()
    x = torch.rand(args.images, *model.spec.input_shape, generator=torch.Generator().manual_seed(0))
    out = {"threads": args.threads, "batch_size": args.batch_size, "n": args.n, "arch": model.spec.arch, "machine": info}
    # floor: the model alone on (n + n0) noisy copies per image, in batches of batch_size
    with torch.no_grad():
        xb = x[0].unsqueeze(0).expand(args.batch_size, *x.shape[1:]).contiguous()
        model(xb)
        t = time.perf_counter()
        total = args.images * (args.n + args.n0)
        for i in range(0, total, args.batch_size):
            b = min(args.batch_size, total - i)
            model(xb[:b] + args.sigma * torch.randn_like(xb[:b]))
        floor_sps = total / (time.perf_counter() - t)
    out["floor_samples_per_second"] = floor_sps
    print(f"floor (noise + forward only): {floor_sps:,.0f} samples/s")
    for name, fn in (("order0", certify), ("order1", certify_first_order)):
        fn(model, x[0], args.sigma, 10, 2 * args.batch_size, batch_size=args.batch_size, generator=image_generator(0, 0))  # warm-up
        t = time.perf_counter()
        for i in range(args.images):
            fn(model, x[i], args.sigma, args.n0, args.n, batch_size=args.batch_size, generator=image_generator(1, i))
        dt = time.perf_counter() - t
        sps = args.images * (args.n + args.n0) / dt
        out[f"{name}_samples_per_second"] = sps
        out[f"{name}_seconds_per_image"] = dt / args.images
        out[f"{name}_ratio_to_floor"] = floor_sps / sps
        print(f"{name}: {sps:,.0f} samples/s ({dt / args.images:.2f} s per image with n={args.n}), "
              f"time x{floor_sps / sps:.2f} the floor")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
