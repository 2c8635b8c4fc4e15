"""Representation measures of the contrastive encoders: SynBench (Ko et al. 2022, robrep's
``robrep.evaluate.synbench``) on the penultimate layer, written to ``<run>/synbench.json``.

Scaled to CPU: ``n_train = n_test = 512`` synthetic images per scale (paper: 2048), all 49
scales, eps in {0, 0.1, 0.2, 0.3}. Representation vulnerability (``robrep.info.vulnerability``)
is not run here (its critic training with PGD costs more than our CPU budget; see the doc).

    nice -n 10 python experiments/contrastive/measures.py --root artifacts/contrastive/fashion-mnist
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import robrep
from robrep.evaluate import synbench
from robrep.io.atomic import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--n", type=int, default=512)
    a = ap.parse_args()
    torch.set_num_threads(1)
    for pj in sorted(Path(a.root).glob("*/probe.json")):
        run = pj.parent
        out = run / "synbench.json"
        if out.exists():
            continue
        r = json.loads(pj.read_text())
        if r["method"] == "random-init":  # the same initialisation as run.py
            torch.manual_seed(r["seed"])
            model = robrep.create_model("small-cnn", dataset=r["dataset"])
        else:
            model = robrep.load(run / "model.safetensors")
        res = synbench(model.eval(), layer="penultimate", eps=(0.0, 0.1, 0.2, 0.3), n_train=a.n, n_test=a.n)
        d = res.to_dict()
        atomic_write_json(out, {"scores": d["scores"], "best_eps": d["best_eps"], "config": d["config"], "seconds": d["seconds"]})
        print(run.name, {t: {e: round(v, 3) for e, v in row.items()} for t, row in d["scores"].items()}, flush=True)


if __name__ == "__main__":
    main()
