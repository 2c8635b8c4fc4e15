"""Scaling of split jobs: 1 vs K torchrun ranks on the same work, one thread per rank.

Measures, side by side in one run, the wall time of ``robrep certify`` (randomized-smoothing
samples per second) and ``robrep eval`` (PGD robust-accuracy images per second) with one
process and with ``K`` processes launched by ``torchrun`` (gloo on CPU, NCCL with one GPU per
rank on a GPU machine), checks that the merged results are identical, and prints the speedups.
Process start-up (Python + torch import, process group) is part of the wall time, as a user
sees it; the work is sized so that it dominates.

    python benchmarks/bench_scale.py                 # CPU: 1 vs 2 ranks, 1 thread each
    python benchmarks/bench_scale.py --ranks 4 --device cuda   # GPU machine: 1 vs 4 GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, print_machine  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], ranks: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ROBREP_PROGRESS": "0"}
    pre = [sys.executable, "-m", "robrep"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
        "--master_port", str(_port()), "-m", "robrep"]
    t0 = time.perf_counter()
    p = subprocess.run(pre + args, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"failed: {' '.join(pre + args)}\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if "second" not in k and k not in ("chunks_resumed",)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per rank")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=512, help="images certified (default: %(default)s)")
    ap.add_argument("--samples", type=int, default=2000, help="smoothing samples per image (default: %(default)s)")
    ap.add_argument("--eval-images", type=int, default=1000, help="images evaluated (the demo test set has 1000; "
                    "default: %(default)s)")
    ap.add_argument("--eval-steps", type=int, default=400, help="PGD steps of the evaluation, sized so that the attack, "
                    "not process start-up, dominates the time (default: %(default)s)")
    ap.add_argument("--skip-eval", action="store_true", help="certification only")
    ap.add_argument("--skip-certify", action="store_true", help="evaluation only")
    ap.add_argument("--eval-eps", type=float, default=0.01, help="linf radius of the evaluation, small enough that the "
                    "trained model's correct predictions survive, so that nearly every image runs every step "
                    "(default: %(default)s)")
    ap.add_argument("--train-epochs", type=int, default=2, help="standard training of the evaluated small CNN on the "
                    "demo data, so that nearly every image is classified correctly and attacked (default: %(default)s)")
    a = ap.parse_args()

    import robrep

    print_machine(machine_info(a.device))
    tmp = Path(tempfile.mkdtemp(prefix="robrep-bench-scale-"))
    # a briefly trained model: a fresh one classifies ~10 % of the images correctly, and only those
    # are attacked, which would leave the evaluation ~100 tiny batches of work to split
    from robrep.train import TrainConfig

    trained = robrep.train(TrainConfig(model="small-cnn", dataset="demo", epochs=a.train_epochs, eval_n=0),
                           tmp / "train", show_progress=False)
    ckpt = trained.checkpoint
    chunk = max(1, a.images // (4 * a.ranks))
    rows = []
    cert = ["certify", "--checkpoint", str(ckpt), "--dataset", "demo", "--sigma", "0.25", "--num-images", str(a.images),
            "--samples", str(a.samples), "--batch-size", "500", "--chunk-size", str(chunk), "--quiet", "--device", a.device]
    if not a.skip_certify:
        t1 = _run([*cert, "--out", str(tmp / "c1")], 1, a.threads)
        tk = _run([*cert, "--out", str(tmp / f"c{a.ranks}")], a.ranks, a.threads)
        same = _strip(json.loads((tmp / "c1" / "result.json").read_text())) == _strip(
            json.loads((tmp / f"c{a.ranks}" / "result.json").read_text()))
        per = a.images * (a.samples + 100)
        rows.append(("certify (samples/s)", per / t1, per / tk, same))
    if not a.skip_eval:
        ev = ["eval", "--checkpoint", str(ckpt), "--dataset", "demo", "--attack", "pgd", "--norm", "linf", "--eps", str(a.eval_eps),
              "--steps", str(a.eval_steps), "--num-images", str(a.eval_images),
              # float32 PGD runs every step on every image: the fresh model breaks at once, and the bf16
              # path's early exit would leave almost no work to split
              "--precision", "fp32",
              "--chunk-size", str(max(1, a.eval_images // (4 * a.ranks))), "--quiet", "--device", a.device]
        try:
            t1 = _run([*ev, "--out", str(tmp / "e1")], 1, a.threads)
            tk = _run([*ev, "--out", str(tmp / f"e{a.ranks}")], a.ranks, a.threads)
            same = _strip(json.loads((tmp / "e1" / "result.json").read_text())) == _strip(
                json.loads((tmp / f"e{a.ranks}" / "result.json").read_text()))
            rows.append((f"eval PGD-{a.eval_steps} (images/s)", a.eval_images / t1, a.eval_images / tk, same))
        except SystemExit as e:
            print(f"eval not measured: {str(e).splitlines()[0]}")
    print(f"\n| job | 1 rank | {a.ranks} ranks | speedup | same result |\n|---|---|---|---|---|")
    for name, r1, rk, ok in rows:
        print(f"| {name} | {r1:.1f} | {rk:.1f} | {rk / r1:.2f}x | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
