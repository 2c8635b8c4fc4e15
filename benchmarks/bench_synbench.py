"""Runtime of SynBench with the paper's defaults (49 scales x 2048 train + 2048 test
realizations, 6 eps) for one 28x28 encoder on one CPU thread.

    nice -n 10 python benchmarks/bench_synbench.py [--checkpoint PATH | --arch small-cnn] [--n 2048]
    python benchmarks/bench_synbench.py --quick        # smoke test (128 realizations per scale and split)

Prints wall seconds, CPU seconds of this process (= the unloaded single-thread time on a shared
machine) and the 1-minute load average, the ratio to its floor (the encoder's forward passes over
the same number of synthetic images, timed in the same run), and one JSON line.
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

from robrep.evaluate.synbench import SCALES, synbench  # noqa: E402
from robrep.models import create_model, load, representation  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", default=None, help="a robrep checkpoint (default: a random --arch)")
    p.add_argument("--arch", default="small-cnn", help="architecture of the random encoder (small-cnn, mnist-cnn, mlp ...)")
    p.add_argument("--n", type=int, default=2048, help="realizations per scale and split")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke test: n=128")
    a = p.parse_args()
    if a.quick:
        a.n = 128
    torch.set_num_threads(a.threads)
    info = C.machine_info("cpu")
    C.print_machine(info)
    torch.manual_seed(0)
    model = load(a.checkpoint) if a.checkpoint else create_model(a.arch, num_classes=10, input_shape=(1, 28, 28))
    model.eval()
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    res = synbench(model, n_train=a.n, n_test=a.n)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # floor: the encoder alone on as many images (all scales, both splits), batch 256 as synbench
    rep = representation(model)
    n_img = len(SCALES) * 2 * a.n
    xb = torch.randn(256, *model.spec.input_shape, generator=torch.Generator().manual_seed(0))
    t1 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n_img, 256):
            rep(xb[: min(256, n_img - i)])
    floor = time.perf_counter() - t1
    out = {"encoder": a.checkpoint or a.arch, "feature_dim": res.feature_dim, "n": a.n, "scales": len(res.scales),
           "eps": list(res.eps), "threads": a.threads, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
           "encoder_forward_floor_s": round(floor, 2), "ratio_to_floor": round(wall / max(floor, 1e-9), 2),
           "load_avg_1min": [round(load0, 1), round(os.getloadavg()[0], 1)], "score@0.7": res.scores()["0.7"], "machine": info}
    print(f"synbench {out['encoder']} ({res.feature_dim}-d, 28x28, n={a.n}): wall {wall:.1f} s, cpu {cpu:.1f} s "
          f"(load {load0:.1f} -> {os.getloadavg()[0]:.1f}); encoder forward floor on {n_img} images {floor:.1f} s, "
          f"ratio {wall / max(floor, 1e-9):.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
