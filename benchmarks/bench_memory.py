"""Peak resident memory of ``robrep eval`` and ``robrep profile`` over a large ImageFolder:
streamed vs held in memory.

    python benchmarks/bench_memory.py                      # 5,000 JPEGs at 224 px, 10 classes
    python benchmarks/bench_memory.py --images 500         # a quick check
    python benchmarks/bench_memory.py --skip-in-memory     # only the streamed runs
    python benchmarks/bench_memory.py --arch tv:mobilenet_v3_small --profile   # + robrep profile --budget quick (steps shortened)
    python benchmarks/bench_memory.py --also "profile {checkpoint} --dataset {dataset} --out {out}"

Writes an ImageFolder of random 224 px JPEGs (smooth noise, 10 classes, one folder per class)
under a temporary folder and a random-init model for 3x224x224 inputs (``--arch``, default
``linear``: the cost is the data path; ``small-cnn`` adds activation memory that depends on the
batch size, not on the number of images), then runs, each
in a fresh process under ``/usr/bin/time -v`` (its "Maximum resident set size"):

1. ``robrep eval`` on ``imagefolder:<dir>@224``, clean accuracy + a 1-step PGD attack, with 0
   DataLoader workers (one process: the peak is all the memory used); the batch size is the one
   ``robrep eval`` chooses within its default ``--memory-cap`` unless ``--batch-size`` is given;
2. the same with 2 workers (``time -v`` reports the largest single process; the script also
   samples the whole process tree's summed RSS from /proc every 50 ms);
3. the in-memory path for comparison: the same images decoded into one float tensor
   (``data.tensors()``, what ``imagefolder:`` did before it streamed), then the same evaluation;
4. in this process: ``evaluate`` on a class-stratified subset (``--subset``), streamed and in
   memory (``to_memory()``), with the batch size ``robrep eval`` chose: the two results must be equal;
5. with ``--profile``: ``robrep profile --budget quick`` with its attacks' and optimizers' step
   counts shortened (:data:`PROFILE_STEPS`; every sample count and batch size is the quick
   budget's) on the same folder (its train and test splits are both the folder: the images sit
   in class folders directly under it) under ``/usr/bin/time -v``, and in this process the card
   of the same budget on a class-stratified subset (``--profile-subset`` images) streamed and in
   memory: the two cards must be equal.

Prints one table and a JSON line. The acceptance bound is a peak below 3 GB for the streamed runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import machine_info, markdown_table, print_machine  # noqa: E402

LIMIT_GB = 3.0  # decimal GB: 3.0e9 bytes
#: step counts of the profile runs (the quick budget's sample counts and batch sizes are kept)
PROFILE_STEPS = {"probe_eval_steps": 2, "mi_steps": 4, "mi_attack_steps": 1, "mi_eval_attack_steps": 1,
                 "sensitivity_steps": 2, "vis_steps": 2, "smoothgrad_samples": 2}


def make_folder(root: Path, n: int, classes: int, size: int, seed: int = 0) -> float:
    """n JPEGs (quality 90) of smooth random noise, n / classes per class folder (``root/<class>/``:
    the folder serves as either split); returns seconds."""
    from PIL import Image

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i * classes // n
        d = root / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        low = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.BILINEAR)
        img.save(d / f"img{i:05d}.jpg", quality=90)
    return time.perf_counter() - t0


def tree_pss_bytes(pid: int) -> int:
    """Summed proportional set size (PSS) of ``pid`` and all its descendants (Linux /proc):
    pages shared by forked DataLoader workers and their parent are counted once in total."""
    children: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(p))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        try:
            with open(f"/proc/{q}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
        todo.extend(children.get(q, []))
    return total


def run_timed(cmd: list[str], env: dict[str, str]) -> dict[str, float | str]:
    """Run under /usr/bin/time -v; returns max RSS (GB, largest process), peak summed PSS of the tree (GB), wall s, stdout."""
    full = ["/usr/bin/time", "-v", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_pss_bytes(proc.pid))
            time.sleep(0.1)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = proc.communicate()
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    if m is None:
        raise SystemExit(f"/usr/bin/time -v printed no maximum RSS:\n{err[-2000:]}")
    return {"max_rss_gb": int(m.group(1)) * 1024 / 2**30, "tree_peak_gb": peak[0] / 2**30, "wall_s": wall, "stdout": out}


IN_MEMORY = """
import json, sys, torch, robrep
from robrep.models import load
data = robrep.load_dataset(sys.argv[1], "test")
x, y = data.tensors()
mem = robrep.data.TensorImageData(x, y, data.info, "test")
r = robrep.evaluate(load(sys.argv[2]), mem, threat=robrep.threat("linf", 1 / 255), attack_kwargs={"steps": 1}, batch_size=int(sys.argv[3]))
print(json.dumps({"clean_accuracy": r.clean_accuracy, "robust_accuracy": r.robust_accuracy, "n": r.n}))
"""


def profile_subset_check(model: torch.nn.Module, ds: str, n: int, precision: str, tmp: Path) -> bool:
    """The quick card of a stratified subset of ``n`` images, streamed and held in memory: equal?"""
    import robrep
    from robrep.profile import profile

    data = robrep.data.take(robrep.load_dataset(ds, "test"), n, seed=0)
    from robrep.profile import QUICK

    kw = dict(budget=QUICK.with_(**PROFILE_STEPS), seed=0, weights="random init (benchmark)", random_init=True, precision=precision)
    t0 = time.perf_counter()
    cs = profile(model, ds, out=tmp / "card-stream", data=(data, data), **kw).card
    t1 = time.perf_counter()
    mem = data.to_memory()
    cm = profile(model, ds, out=tmp / "card-memory", data=(mem, mem), **kw).card
    same = cs.headline == cm.headline and cs.results == cm.results
    print(f"\nprofile --budget quick (steps shortened) on a stratified subset of {n} ({data.selection}): streamed ({t1 - t0:.0f} s) and in "
          f"memory give identical cards (headline and results): {same}")
    for k in ("probe_natural_accuracy", "probe_adversarial_accuracy", "sensitivity_median", "synbench_score", "certified_accuracy"):
        print(f"  {k:<28} streamed {cs.headline[k]['value']:.4f}  in memory {cm.headline[k]['value']:.4f}")
    return same


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=5000, help="(default: %(default)s)")
    p.add_argument("--classes", type=int, default=10, help="(default: %(default)s)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default: %(default)s)")
    p.add_argument("--arch", default="linear", help="random-init model (default: %(default)s: the data path dominates; "
                   "a conv net adds activation memory that grows with --batch-size, not with the number of images)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="--batch-size of robrep eval (default: none given: robrep eval chooses it within its memory cap)")
    p.add_argument("--subset", type=int, default=100, help="stratified subset for the stream == in-memory check (default: %(default)s)")
    p.add_argument("--skip-in-memory", action="store_true", help="skip the in-memory run (it peaks at ~6 GB with 5,000 images)")
    p.add_argument("--also", action="append", default=[], metavar="ARGS",
                   help="another robrep command measured the same way, e.g. \"profile {checkpoint} --dataset {dataset} "
                        "--budget quick --out {out}\" ({checkpoint}, {dataset}, {out} are filled in; repeatable)")
    p.add_argument("--profile", action="store_true", help="also measure robrep profile --budget quick and check its card "
                   "against the in-memory path on a subset (default: off)")
    p.add_argument("--profile-subset", type=int, default=200,
                   help="images of that check (the vulnerability of the quick budget needs 192); 0 skips it (default: %(default)s)")
    p.add_argument("--workers", default="0,2", help="DataLoader worker counts of the eval runs (default: %(default)s)")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"],
                   help="--precision of the profile runs (default: %(default)s)")
    p.add_argument("--keep", default=None, help="write the folder here and keep it (default: a temporary folder)")
    a = p.parse_args()

    info = machine_info("cpu")
    print_machine(info)
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        folder = tmp / "folder"
        gen_s = 0.0
        if not (folder / "class00").is_dir():
            gen_s = make_folder(folder, a.images, a.classes, a.size)
        disk_mb = sum(f.stat().st_size for f in folder.rglob("*.jpg")) / 2**20
        print(f"ImageFolder: {a.images} JPEGs of {a.size} px in {a.classes} classes, {disk_mb:.0f} MB on disk "
              f"(written in {gen_s:.0f} s); as float32 in memory: {a.images * 3 * a.size**2 * 4 / 2**30:.2f} GB")

        import robrep
        from robrep.models import save_model

        torch.manual_seed(0)
        model = robrep.create_model(a.arch, num_classes=a.classes, input_shape=(3, a.size, a.size))
        ds = f"imagefolder:{folder}@{a.size}"
        ck = save_model(tmp / "model.safetensors", model, {"dataset": ds})
        eval_cmd = [sys.executable, "-m", "robrep", "eval", "--checkpoint", str(ck), "--dataset", ds, "--split", "test",
                    "--eps", str(1 / 255), "--steps", "1", "--device", "cpu", "--quiet", "--json"]
        if a.batch_size is not None:
            eval_cmd += ["--batch-size", str(a.batch_size)]
        base_env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), ROBREP_PROGRESS="0")

        rows, res = [], {}
        for name, workers in ((f"stream, {w} workers", w) for w in a.workers.split(",")):
            r = run_timed(eval_cmd, base_env | {"ROBREP_DATA_WORKERS": workers})
            out = json.loads(str(r["stdout"]).strip().splitlines()[-1])
            res[name] = {k: v for k, v in r.items() if k != "stdout"} | {"clean_accuracy": out["clean_accuracy"],
                                                                         "robust_accuracy": out["robust_accuracy"], "n": out["n"],
                                                                         "batch_size": out["batch_size"]}
            bs = int(out["batch_size"])
            rows.append([f"`robrep eval`, {name}", out["n"], f"{r['max_rss_gb']:.2f}", f"{r['tree_peak_gb']:.2f}",
                         f"{r['wall_s']:.0f}", f"{out['n'] / float(r['wall_s']):.0f}", f"{out['clean_accuracy']:.4f}",
                         f"{out['robust_accuracy']:.4f}"])
        also = list(a.also)
        if a.profile:
            sets = " ".join(f"--set {k}={v}" for k, v in PROFILE_STEPS.items())
            also.append(f"profile {{checkpoint}} --dataset {{dataset}} --budget quick {sets} --out {{out}} --device cpu --quiet "
                        f"--json --precision {a.precision}")
        for k, extra in enumerate(also):
            args = [t.format(checkpoint=ck, dataset=ds, out=tmp / f"also-{k}") for t in extra.split()]
            r = run_timed([sys.executable, "-m", "robrep", *args], base_env)
            res[f"robrep {args[0]}"] = {kk: v for kk, v in r.items() if kk != "stdout"}
            rows.append([f"`robrep {args[0]}` ({extra})", a.images, f"{r['max_rss_gb']:.2f}", f"{r['tree_peak_gb']:.2f}",
                         f"{r['wall_s']:.0f}", "", "", ""])
        if not a.skip_in_memory:
            r = run_timed([sys.executable, "-c", IN_MEMORY, ds, str(ck), str(bs)], base_env | {"ROBREP_MAX_TENSORS_GB": "64",
                                                                                    "ROBREP_DATA_WORKERS": "0"})
            out = json.loads(str(r["stdout"]).strip().splitlines()[-1])
            res["in memory (former path)"] = {k: v for k, v in r.items() if k != "stdout"} | out
            rows.append(["in memory: one float tensor of all images, then `evaluate` (the former `imagefolder:`)", out["n"], f"{r['max_rss_gb']:.2f}",
                         f"{r['tree_peak_gb']:.2f}", f"{r['wall_s']:.0f}", f"{out['n'] / float(r['wall_s']):.0f}",
                         f"{out['clean_accuracy']:.4f}", f"{out['robust_accuracy']:.4f}"])
        print()
        print(markdown_table(["run", "images", "peak RSS, largest process (GiB, time -v)", "peak PSS, process tree (GiB)",
                              "wall (s)", "images/s", "clean acc.", "robust acc. (1-step PGD, 1/255)"], rows))

        # streamed == in memory on a stratified subset, in this process
        data = robrep.load_dataset(ds, "test")
        sub = robrep.data.take(data, a.subset, seed=0)
        thr = robrep.threat("linf", 1 / 255)
        m = model.eval()
        t0 = time.perf_counter()
        rs = robrep.evaluate(m, sub, threat=thr, attack_kwargs={"steps": 1}, batch_size=bs, seed=0)
        t1 = time.perf_counter()
        rm = robrep.evaluate(m, sub.to_memory(), threat=thr, attack_kwargs={"steps": 1}, batch_size=bs, seed=0)
        equal = rs == rm
        print(f"\nsubset {sub.selection}: class counts {torch.bincount(sub.labels).tolist()}")
        print(f"streamed: clean {rs.clean_accuracy:.4f}, robust {rs.robust_accuracy:.4f} ({t1 - t0:.1f} s); in memory: clean "
              f"{rm.clean_accuracy:.4f}, robust {rm.robust_accuracy:.4f}; identical EvalResult (per class too): {equal}")
        same_full = len({(v["clean_accuracy"], v["robust_accuracy"]) for v in res.values() if "clean_accuracy" in v}) == 1
        compared = ", ".join(k for k, v in res.items() if "clean_accuracy" in v)
        print(f"full set: identical accuracies across ({compared}): {same_full}")
        ok = all(v["max_rss_gb"] * 2**30 < LIMIT_GB * 1e9 and v["tree_peak_gb"] * 2**30 < LIMIT_GB * 1e9
                 for k, v in res.items() if not k.startswith("in memory"))
        print(f"streamed runs (and --also commands): peak < {LIMIT_GB} GB ({LIMIT_GB:g}e9 bytes): {ok}")
        print(json.dumps({"machine": info, "arch": a.arch, "batch_size": bs, "images": a.images, "size": a.size, "runs": res, "subset": sub.selection,
                          "subset_equal": equal, "full_equal": same_full, "stream_under_limit": ok}))
        prof_equal = True
        if a.profile and a.profile_subset > 0:
            prof_equal = profile_subset_check(model, ds, a.profile_subset, a.precision, tmp)
        if not (equal and ok and same_full and prof_equal):
            raise SystemExit(1)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
