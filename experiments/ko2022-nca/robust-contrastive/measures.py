"""Representation measures of the contrastive encoders, on the penultimate layer (the probed one):

* SynBench (Ko et al. 2022, ``robrep.evaluate.synbench``) -> ``<run>/synbench.json``. Scaled to
  CPU: ``n_train = n_test = 512`` synthetic images per scale (paper: 2048), all 49 scales, eps in
  {0, 0.1, 0.2, 0.3}.
* Representation vulnerability (Zhu et al. 2020, ``robrep.info.vulnerability``) at the
  pretraining eps (linf 0.1) -> ``<run>/vulnerability.json``: clean and worst-case MI (DV bound,
  separable MLP critics, the demo's full sizes but 4 critics: first 1000 test images, 4 critics x 120 steps,
  batch 96, 3 PGD steps per critic step, 10 on each of 4 held-out batches), vulnerability with its
  t-interval over the critic pairs, and Fano's bound on any downstream classifier's accuracy.

    python experiments/ko2022-nca/robust-contrastive/measures.py --root artifacts/contrastive/fashion-mnist [--only vulnerability]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import robrep
from robrep.data import load_dataset
from robrep.evaluate import synbench
from robrep.info import vulnerability
from robrep.io.atomic import atomic_write_json
from robrep.models import representation
from robrep.threats import threat

# the demo's full vulnerability sizes (robrep.demo.FULL), with 4 critics instead of 2 (t-interval with 3 d.o.f.)
MI_SETTINGS = dict(estimator="dv", critic="mlp", critic_kwargs={"hidden": 128, "embed": 32}, n_critics=4, steps=120,
                   batch_size=96, lr=1e-3, attack_steps=3, eval_attack_steps=10, n_eval_batches=4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--only", choices=("synbench", "vulnerability"), default=None)
    ap.add_argument("--mi-n", type=int, default=1000, help="test images for the vulnerability estimate")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for pj in sorted(Path(a.root).glob("*/probe.json")):
        run = pj.parent
        r = json.loads(pj.read_text())
        todo = [m for m in ("synbench", "vulnerability") if a.only in (None, m) and not (run / f"{m}.json").exists()]
        if not todo:
            continue
        if r["method"] == "random-init":  # the same initialisation as run.py
            torch.manual_seed(r["seed"])
            model = robrep.create_model("small-cnn", dataset=r["dataset"])
        else:
            model = robrep.load(run / "model.safetensors")
        model.eval()
        if "synbench" in todo:
            res = synbench(model, layer="penultimate", eps=(0.0, 0.1, 0.2, 0.3), n_train=a.n, n_test=a.n)
            d = res.to_dict()
            atomic_write_json(run / "synbench.json",
                              {"scores": d["scores"], "best_eps": d["best_eps"], "config": d["config"], "seconds": d["seconds"]})
            print(run.name, "synbench", {t: {e: round(v, 3) for e, v in row.items()} for t, row in d["scores"].items()}, flush=True)
        if "vulnerability" in todo:
            t0 = time.perf_counter()
            x = load_dataset(r["dataset"], "test").tensors()[0][: a.mi_n]
            torch.manual_seed(r["seed"])
            v = vulnerability(representation(model, "penultimate"), x, threat("linf", float(r["eps"])), num_classes=10,
                              layer="penultimate", seed=r["seed"], **MI_SETTINGS).to_dict()
            v["seconds"] = time.perf_counter() - t0
            v["settings"] = {**MI_SETTINGS, "mi_n": a.mi_n}
            atomic_write_json(run / "vulnerability.json", v)
            print(run.name, "vulnerability", {k: round(v[k]["estimate"], 3) for k in ("mi_clean", "mi_worst", "vulnerability")},
                  f"{v['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
