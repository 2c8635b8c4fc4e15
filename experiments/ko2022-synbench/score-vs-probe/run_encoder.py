"""SynBench score of one encoder beside its measured linear-probe accuracy on real data.

Writes artifacts/synbench/results/<name>.json (+ <name>.png). One encoder per process, so that
several can run side by side; see run.sh for the exact commands used in
docs/reproductions/ko2022-synbench-score-vs-probe.md.

    python experiments/ko2022-synbench/score-vs-probe/run_encoder.py --name fmnist-std \
        --checkpoint artifacts/zoo/fmnist-std/model.safetensors --robust-probe
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from robrep.data import load_dataset
from robrep.evaluate import linear_probe
from robrep.evaluate.synbench import plot_synbench, robust_linear_probe, synbench
from robrep.io.atomic import atomic_write_json
from robrep.models import create_model, load_with_meta
from robrep.threats import threat


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--checkpoint", default=None, help="robrep checkpoint; 'random:<dataset>' for an untrained small-cnn")
    p.add_argument("--layer", default="penultimate")
    p.add_argument("--n", type=int, default=2048, help="SynBench realizations per scale and split (paper 2048)")
    p.add_argument("--probe-train-n", type=int, default=10000, help="training images of the standard probe")
    p.add_argument("--probe-epochs", type=int, default=10)
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--eval-eps", type=float, default=0.1, help="linf radius of the probe's adversarial accuracy")
    p.add_argument("--robust-probe", action="store_true", help="also the SynBench-informed eps-robust probe (l2)")
    p.add_argument("--robust-train-n", type=int, default=2000)
    p.add_argument("--robust-epochs", type=int, default=3)
    p.add_argument("--out", default="artifacts/synbench/results")
    a = p.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    if a.checkpoint.startswith("random:"):
        dataset = a.checkpoint.split(":", 1)[1]
        torch.manual_seed(0)
        model, meta = create_model("small-cnn", dataset=dataset), {"dataset": dataset}
    else:
        model, meta = load_with_meta(a.checkpoint)
        dataset = meta["dataset"]
    model.eval()
    rec: dict = {"name": a.name, "checkpoint": a.checkpoint, "dataset": dataset, "arch": model.spec.arch,
                 "objective": meta.get("objective") or (meta.get("config") or {}).get("objective"),
                 "train_threat": meta.get("threat"), "layer": a.layer, "settings": vars(a)}

    t0, c0 = time.perf_counter(), time.process_time()
    res = synbench(model, layer=a.layer, n_train=a.n, n_test=a.n)
    rec["synbench_wall_s"], rec["synbench_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    rec["synbench"] = res.to_dict()
    plot_synbench(res, out / f"{a.name}.png", title=a.name)
    print(a.name, "synbench", json.dumps(res.scores()), f"{rec['synbench_cpu_s']:.0f} cpu-s", flush=True)
    atomic_write_json(out / f"{a.name}.json", rec)  # partial results survive an interrupted run

    tr = load_dataset(dataset, "train")
    te = load_dataset(dataset, "test")
    thr = threat("linf", a.eval_eps)
    t0 = time.perf_counter()
    pr = linear_probe(model, tr.head(a.probe_train_n), te, layer=a.layer, eval_threat=thr, epochs=a.probe_epochs,
                      eval_n=a.eval_n, eval_steps=10, seed=0)
    rec["probe"] = {"natural_accuracy": pr.natural_accuracy, "adversarial_accuracy": pr.adversarial_accuracy,
                    "eval": pr.eval, "train_n": a.probe_train_n, "epochs": a.probe_epochs, "seconds": time.perf_counter() - t0}
    print(a.name, "probe", rec["probe"]["natural_accuracy"], rec["probe"]["adversarial_accuracy"], flush=True)
    atomic_write_json(out / f"{a.name}.json", rec)

    if a.robust_probe:
        t0 = time.perf_counter()
        rp = robust_linear_probe(model, tr.head(a.robust_train_n), te, res, threshold=0.7, norm="l2", layer=a.layer,
                                 epochs=a.robust_epochs, attack_steps=5, eval_n=a.eval_n, eval_steps=10, seed=0)
        rec["robust_probe"] = rp.to_dict() | {"train_n": a.robust_train_n, "epochs": a.robust_epochs,
                                              "seconds": time.perf_counter() - t0}
        print(a.name, "robust probe", json.dumps(rec["robust_probe"]), flush=True)
    atomic_write_json(out / f"{a.name}.json", rec)


if __name__ == "__main__":
    main()
