"""Wall time of the main job, ``robrep demo`` (target: <= 10 minutes on the project's 2-core CPU).

    python benchmarks/bench_demo.py                 # the full demo, in a fresh process
    python benchmarks/bench_demo.py --fast          # the --fast variant used by the tests
    python benchmarks/bench_demo.py --threads 1     # one thread: CPU seconds ~ idle time on a busy machine

Runs the command exactly as a user does (``robrep demo --out DIR --quiet``, imports included),
then prints the wall and CPU seconds of that process, the 1-minute load average before and after
(a loaded machine makes every number larger), the time of each stage per model (from the run's
``metrics.json``) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="time `robrep demo --fast`")
    p.add_argument("--out", default=None, help="demo folder (default: a temporary folder, removed afterwards)")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of the demo process (default: torch's choice). With 1 thread the CPU seconds "
                        "approximate the idle single-thread wall time even on a loaded machine")
    a = p.parse_args()
    tmp = None
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-demo-")) / "demo"
    if a.out is None:
        tmp = out.parent
    cmd = [sys.executable, "-m", "robrep", "demo", "--out", str(out), "--quiet"] + (["--fast"] if a.fast else [])
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    load1 = os.getloadavg()[0]
    if proc.returncode != 0:
        sys.exit(f"robrep demo failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    print(proc.stdout.strip())
    ms = {n: json.loads((out / n / "metrics.json").read_text()) for n in ("standard", "robust")}
    stages = {n: m["stage_seconds"] for n, m in ms.items()}
    cpu = {n: m.get("stage_cpu_seconds", {}) for n, m in ms.items()}
    print(f"\n{'stage (wall s / CPU s)':<30} {'standard':>15} {'robust':>15}")
    for k in stages["standard"]:
        name = k.split(" (")[0]
        rk = next((r for r in stages["robust"] if r.split(" (")[0] == name), k)
        cells = [f"{stages[n].get(kk, float('nan')):.1f} / {cpu[n].get(kk, float('nan')):.1f}" for n, kk in (("standard", k), ("robust", rk))]
        print(f"{name:<30} {cells[0]:>15} {cells[1]:>15}")
    print(f"\nwall {wall:.1f} s, CPU {ru.ru_utime + ru.ru_stime:.1f} s, load average {load0:.2f} -> {load1:.2f}, "
          f"{os.cpu_count()} CPUs")
    print(json.dumps({"fast": a.fast, "threads": a.threads, "wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
                      "load_before": load0, "load_after": load1, "stages": stages, "stage_cpu": cpu}))
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
