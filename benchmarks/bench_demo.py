"""Wall time of the main job, ``robrep demo`` (target: <= 10 minutes on the project's 2-core CPU).

    python benchmarks/bench_demo.py                 # the full demo, in a fresh process
    python benchmarks/bench_demo.py --fast          # the --fast variant used by the tests
    python benchmarks/bench_demo.py --threads 1     # one thread: CPU seconds ~ idle time on a busy machine
    python benchmarks/bench_demo.py --beside        # with one CPU-bound job running beside the demo
    python benchmarks/bench_demo.py --compare       # alone, then beside a CPU-bound job: the ratio
    python benchmarks/bench_demo.py --precision fp32   # the demo's --precision (default: its own, auto)
    python benchmarks/bench_demo.py --compare --jobs 2 # the demo's --jobs (default: its own choice)

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


def busy_job() -> subprocess.Popen:
    """One CPU-bound process (a pure-Python loop: one core), the "other job" beside the demo."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_once(a: argparse.Namespace, beside: bool) -> dict:
    """Run ``robrep demo`` once (optionally beside a CPU-bound job); print and return its timing."""
    tmp = None
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-demo-")) / "demo"
    if a.out is None:
        tmp = out.parent
    cmd = [sys.executable, "-m", "robrep", "demo", "--out", str(out), "--quiet"] + (["--fast"] if a.fast else []) \
        + (["--precision", a.precision] if a.precision else []) + (["--jobs", str(a.jobs)] if a.jobs else [])
    job = busy_job() if beside else None
    if job is not None:
        time.sleep(2.0)  # let the job be running (and seen by the load average) first
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    finally:
        if job is not None:
            job.kill()
            job.wait()
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    load1 = os.getloadavg()[0]
    if proc.returncode != 0:
        sys.exit(f"robrep demo failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    threads_line = next((ln for ln in proc.stderr.splitlines() if "thread" in ln and ln.startswith("robrep:")), "")
    cpu = (ru.ru_utime + ru.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    if job is not None:
        cpu = float("nan")  # the killed job's CPU time is counted with the children's too
    print(f"{'beside a CPU-bound job' if beside else 'alone'}: wall {wall:.1f} s, CPU {cpu:.1f} s, "
          f"load average {load0:.2f} -> {load1:.2f}; {threads_line}")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"beside": beside, "wall_s": round(wall, 1), "load_before": load0, "load_after": load1, "threads": threads_line}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="time `robrep demo --fast`")
    p.add_argument("--out", default=None, help="demo folder (default: a temporary folder, removed afterwards)")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of the demo process (default: torch's choice). With 1 thread the CPU seconds "
                        "approximate the idle single-thread wall time even on a loaded machine")
    p.add_argument("--beside", action="store_true", help="run the demo beside one CPU-bound job")
    p.add_argument("--compare", action="store_true", help="run alone, then beside a CPU-bound job; print the ratio")
    p.add_argument("--precision", default=None, help="the demo's --precision (default: the demo's own default)")
    p.add_argument("--jobs", type=int, default=None, help="the demo's --jobs: worker processes (default: the demo's own choice)")
    a = p.parse_args()
    if a.compare or a.beside:
        runs = ([run_once(a, False)] if a.compare else []) + [run_once(a, True)]
        if a.compare:
            print(f"beside / alone: {runs[1]['wall_s'] / runs[0]['wall_s']:.2f} (target <= 1.3)")
        print(json.dumps({"fast": a.fast, "threads": a.threads, "precision": a.precision, "jobs": a.jobs, "runs": runs}))
        return
    tmp = None
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-demo-")) / "demo"
    if a.out is None:
        tmp = out.parent
    cmd = [sys.executable, "-m", "robrep", "demo", "--out", str(out), "--quiet"] + (["--fast"] if a.fast else []) \
        + (["--precision", a.precision] if a.precision else []) + (["--jobs", str(a.jobs)] if a.jobs else [])
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
