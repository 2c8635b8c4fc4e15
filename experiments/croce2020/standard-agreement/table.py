"""robrep ``autoattack-standard`` beside the reference standard (pyautoattack), per stage and per
image, on a trained checkpoint: chunked and resumable, one JSON file per chunk.

Each chunk of ``--chunk`` test images is attacked by both implementations, one after the other:

- the reference: ``AutoAttack(model, norm, eps, version="standard", seed=0)
  .run_standard_evaluation(x, y, batch_size=len(x))``, unchanged; the robust flags after each of
  its stages are read from its own evaluation state as it records them;
- robrep: ``run_protocol("autoattack-standard", ..., seed=0)`` on the correctly classified images.

A chunk is written atomically when both are done, so an interrupted run loses at most the chunk
in progress and a rerun skips the chunks already written.

    python experiments/croce2020/standard-agreement/table.py run --name mnist-core --dataset mnist \\
        --checkpoint /work/models/aa/mnist-core/model.safetensors --norm linf --eps 0.3 --n 1000 --chunk 50
    python experiments/croce2020/standard-agreement/table.py summary   # the table, from every chunk written
    python experiments/croce2020/standard-agreement/table.py protocol --name mnist-core-10ep --protocol fast
        # another protocol on the same chunks (same images, seed 0): its gap to the standard, image by
        # image (written to table-<protocol>-v<version>/<name>/)

``--checkpoint`` takes any model robrep loads, or ``tiny-cnn:PATH`` for the safetensors state dict
of ``benchmarks/bench_autoattack.py``'s tiny CNN.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")


def load_model(spec: str) -> torch.nn.Module:
    if spec.startswith("tiny-cnn:"):
        from safetensors.torch import load_file

        sys.path.insert(0, str(HERE.parents[2] / "benchmarks"))
        from bench_autoattack import tiny_cnn

        model = tiny_cnn()
        model.load_state_dict(load_file(spec.split(":", 1)[1]))
    else:
        from robrep.models import load_with_meta

        model, _ = load_with_meta(spec, device="cpu")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def reference_stages(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> tuple[dict[str, list[bool]], float]:
    """The reference standard's robust flags after clean and after each stage, and its wall time."""
    from pyautoattack import AutoAttack
    from pyautoattack.state import EvaluationState

    flags: dict[str, list[bool]] = {}
    orig = EvaluationState.add_run_attack

    def record(self, attack: str) -> None:  # type: ignore[no-untyped-def]
        flags[attack] = self.robust_flags.tolist()
        orig(self, attack)

    EvaluationState.add_run_attack = record  # type: ignore[method-assign]
    try:
        aa = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", seed=0, device="cpu")
        t = time.process_time()
        aa.run_standard_evaluation(x, y, batch_size=len(x))
        sec = time.process_time() - t
    finally:
        EvaluationState.add_run_attack = orig  # type: ignore[method-assign]
    with torch.no_grad():
        flags["clean"] = (model(x).argmax(1) == y).tolist()
    last = flags["clean"]
    for s in STAGES:  # the reference stops when no robust point is left: later stages keep the flags
        last = flags.setdefault(s, last)
    return flags, sec


def robrep_stages(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                  protocol: str = "autoattack-standard") -> tuple[dict[str, list[bool]], float, dict[str, int]]:
    """robrep's ``protocol`` (seed 0) on the correctly classified points: robust flags after clean
    and after each stage, process CPU seconds, passes."""
    import robrep
    from robrep.attacks import PassCounter, run_protocol

    counter = PassCounter()
    t = time.process_time()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = torch.nonzero(ok).flatten()
    r = run_protocol(protocol, model, x[idx], y[idx], robrep.threat(norm, eps), seed=0, counter=counter)
    sec = time.process_time() - t
    flags = {"clean": ok.tolist()}
    for name, broke in r.stages:
        rob = ok.clone()
        rob[idx] = ~broke
        flags[name] = rob.tolist()
    return flags, sec, vars(counter)


def weights_sha256(spec: str) -> str:
    """SHA-256 of the checkpoint file's bytes: every chunk of a table must come from one model."""
    import hashlib

    path = Path(spec.split(":", 1)[1] if spec.startswith("tiny-cnn:") else spec)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "unknown"


def write_atomic(path: Path, row: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, path)


def run(a: argparse.Namespace) -> None:
    import robrep

    torch.set_num_threads(a.threads)
    out = Path(a.results) / a.name
    out.mkdir(parents=True, exist_ok=True)
    sha = weights_sha256(a.checkpoint)
    for p in sorted(out.glob("*.json")):
        other = json.loads(p.read_text()).get("weights_sha256")
        if other is not None and other != sha:
            raise SystemExit(f"{p} was made with another checkpoint (sha256 {other[:12]}, this one {sha[:12]}); "
                             f"use another --name or --results")
    model = load_model(a.checkpoint)
    data = robrep.load_dataset(a.dataset, "test")
    n = min(a.n, len(data))
    for start in range(a.start, n, a.chunk):
        end = min(start + a.chunk, n)
        path = out / f"{start:05d}-{end:05d}.json"
        if path.exists():
            continue
        x, y = next(iter(data.subset(list(range(start, end))).batches(end - start)))
        ref, ref_s = reference_stages(model, x, y, a.norm, a.eps)
        ours, our_s, passes = robrep_stages(model, x, y, a.norm, a.eps)
        row = {"name": a.name, "checkpoint": a.checkpoint, "dataset": a.dataset, "norm": a.norm, "eps": a.eps,
               "weights_sha256": sha, "start": start, "end": end, "reference": ref, "robrep": ours, "reference_cpu_s": ref_s,
               "robrep_cpu_s": our_s, "robrep_passes": passes, "torch": torch.__version__, "threads": a.threads,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        write_atomic(path, row)
        agree = sum(r == o for r, o in zip(ref["square"], ours["square"]))
        print(f"{a.name} {start}-{end}: reference {sum(ref['square'])} robust, robrep {sum(ours['square'])}, "
              f"same verdict {agree}/{end - start}, cpu {ref_s:.0f} s / {our_s:.0f} s", flush=True)


def protocol(a: argparse.Namespace) -> None:
    """Run ``a.protocol`` on the images of every chunk of table ``a.name`` and compare its final
    verdicts with robrep's standard's on the same images."""
    import robrep
    from robrep.attacks import get_protocol

    torch.set_num_threads(a.threads)
    src = Path(a.results) / a.name
    chunks = [json.loads(p.read_text()) for p in sorted(src.glob("*.json"))]
    if not chunks:
        raise SystemExit(f"no chunks in {src}: run the table first")
    version = get_protocol(a.protocol).version
    out = Path(f"{a.results}-{a.protocol}-v{version}") / a.name
    out.mkdir(parents=True, exist_ok=True)
    model = data = None  # loaded on the first chunk not yet written
    tot = {"n": 0, "protocol": 0, "standard": 0, "missed": [], "extra": [], "cpu_s": 0.0, "reference_cpu_s": 0.0}
    for c in chunks:
        path = out / f"{c['start']:05d}-{c['end']:05d}.json"
        if not path.exists():
            if model is None:
                sha = weights_sha256(c["checkpoint"])
                model = load_model(c["checkpoint"])
                data = robrep.load_dataset(c["dataset"], "test")
            x, y = next(iter(data.subset(list(range(c["start"], c["end"]))).batches(c["end"] - c["start"])))
            flags, sec, passes = robrep_stages(model, x, y, c["norm"], c["eps"], protocol=a.protocol)
            # the model must be the table's: the file's hash also covers metadata (a retrain from the
            # same recipe and seed differs there), so compare what the model does on these images
            if flags["clean"] != [bool(v) for v in c["robrep"]["clean"]]:
                raise SystemExit(f"{c['checkpoint']} classifies images {c['start']}-{c['end']} otherwise than the "
                                 f"model table {a.name} was made with; retrain it from the table's recipe")
            final = [s_ for s_ in flags if s_ != "clean"][-1]
            write_atomic(path, {"name": a.name, "protocol": a.protocol, "version": version, "weights_sha256": sha,
                                "start": c["start"], "end": c["end"], "robust": flags[final], "stages": list(flags)[1:],
                                "cpu_s": sec, "passes": passes, "torch": torch.__version__, "threads": a.threads,
                                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
        row = json.loads(path.read_text())
        std = c["robrep"]["square"]
        tot["n"] += len(std)
        tot["protocol"] += sum(row["robust"])
        tot["standard"] += sum(std)
        tot["missed"] += [c["start"] + i for i, (p_, s_) in enumerate(zip(row["robust"], std)) if p_ and not s_]
        tot["extra"] += [c["start"] + i for i, (p_, s_) in enumerate(zip(row["robust"], std)) if s_ and not p_]
        tot["cpu_s"] += row["cpu_s"]
        tot["reference_cpu_s"] += c["reference_cpu_s"]
    n = tot["n"]
    print(f"{a.name}: {a.protocol} {100 * tot['protocol'] / n:.1f} % robust vs the standard's {100 * tot['standard'] / n:.1f} % "
          f"on {n} images; robust under {a.protocol} but broken by the standard: {tot['missed']}; the reverse: {tot['extra']}; "
          f"CPU-s {tot['cpu_s']:.0f} vs the reference standard's {tot['reference_cpu_s']:.0f} (as the chunks ran)")


def summary(a: argparse.Namespace) -> None:
    rows = []
    for d in sorted(Path(a.results).iterdir()):
        chunks = [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]
        if not chunks:
            continue
        c0 = chunks[0]
        n = sum(c["end"] - c["start"] for c in chunks)
        ref = {s: sum(sum(c["reference"][s]) for c in chunks) for s in ("clean", *STAGES)}
        ours = {s: sum(sum(c["robrep"][s]) for c in chunks) for s in ("clean", *STAGES)}
        same = {s: sum(sum(r == o for r, o in zip(c["reference"][s], c["robrep"][s])) for c in chunks) for s in STAGES}
        cpu = (sum(c["reference_cpu_s"] for c in chunks), sum(c["robrep_cpu_s"] for c in chunks))
        rows.append({"name": d.name, "dataset": c0["dataset"], "norm": c0["norm"], "eps": c0["eps"], "n": n,
                     "reference": ref, "robrep": ours, "same_verdict": same, "cpu_s": cpu})

    def pct(k: int, n: int) -> str:
        return f"{100 * k / n:.1f}"

    print("| model, eps | images | run | clean | APGD-CE | APGD-T | FAB-T | Square | same verdict per stage (%) |"
          " added beyond APGD-CE (points) | CPU-s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n = r["n"]
        for who, cpu in (("reference", r["cpu_s"][0]), ("robrep", r["cpu_s"][1])):
            v = r[who]
            added = " / ".join(f"{100 * (v[STAGES[i - 1]] - v[STAGES[i]]) / n:.1f}" for i in range(1, 4))
            same = " / ".join(pct(r["same_verdict"][s], n) for s in STAGES) if who == "robrep" else ""
            head = f"{r['name']}, {r['norm']} {r['eps']:g}" if who == "reference" else ""
            print(f"| {head} | {n if who == 'reference' else ''} | {who} | {pct(v['clean'], n)} | "
                  + " | ".join(pct(v[s], n) for s in STAGES) + f" | {same} | {added} (T / FAB-T / Square) | {cpu:.0f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="attack chunks of test images with both implementations")
    r.add_argument("--name", required=True, help="results folder under table/")
    r.add_argument("--checkpoint", required=True, help="model (any robrep source, or tiny-cnn:PATH)")
    r.add_argument("--dataset", required=True, help="test set (mnist, fashion-mnist, demo)")
    r.add_argument("--norm", default="linf", choices=("linf", "l2"), help="(default: %(default)s)")
    r.add_argument("--eps", type=float, required=True)
    r.add_argument("--n", type=int, default=1000, help="first N test images (default: %(default)s)")
    r.add_argument("--start", type=int, default=0, help="first image (default: %(default)s)")
    r.add_argument("--chunk", type=int, default=100, help="images per chunk (default: %(default)s)")
    r.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    s = sub.add_parser("summary", help="print the table from every chunk written")
    q = sub.add_parser("protocol", help="another protocol (e.g. fast) on the images of a table's chunks, against the standard")
    q.add_argument("--name", required=True, help="the table (folder under --results) whose chunks to attack")
    q.add_argument("--protocol", required=True, help="e.g. fast")
    q.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    for p in (r, s, q):
        p.add_argument("--results", default=str(HERE / "table"), help="chunk folders (default: %(default)s)")
    s.add_argument("--json", default=None, help="also write the totals here")
    a = ap.parse_args()
    {"run": run, "summary": summary, "protocol": protocol}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
