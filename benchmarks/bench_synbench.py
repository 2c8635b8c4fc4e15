"""Runtime of SynBench with the paper's defaults (49 scales x 2048 train + 2048 test
realizations, 6 eps) for one 28x28 encoder on one CPU thread.

    nice -n 10 python benchmarks/bench_synbench.py [--checkpoint PATH | --arch small-cnn] [--n 2048]

Prints wall seconds, CPU seconds of this process (= the unloaded single-thread time on a shared
machine) and the 1-minute load average, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from robrep.evaluate.synbench import synbench
from robrep.models import create_model, load


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", default=None, help="a robrep checkpoint (default: a random --arch)")
    p.add_argument("--arch", default="small-cnn", help="architecture of the random encoder (small-cnn, mnist-cnn, mlp ...)")
    p.add_argument("--n", type=int, default=2048, help="realizations per scale and split")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = load(a.checkpoint) if a.checkpoint else create_model(a.arch, num_classes=10, input_shape=(1, 28, 28))
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    res = synbench(model, n_train=a.n, n_test=a.n)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"encoder": a.checkpoint or a.arch, "feature_dim": res.feature_dim, "n": a.n, "scales": len(res.scales),
           "eps": list(res.eps), "threads": a.threads, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
           "load_avg_1min": [round(load0, 1), round(os.getloadavg()[0], 1)], "score@0.7": res.scores()["0.7"]}
    print(f"synbench {out['encoder']} ({res.feature_dim}-d, 28x28, n={a.n}): wall {wall:.1f} s, cpu {cpu:.1f} s "
          f"(load {load0:.1f} -> {os.getloadavg()[0]:.1f})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
