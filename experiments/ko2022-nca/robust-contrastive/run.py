"""Contrastive pretraining + linear evaluation (Ko et al., ICML 2022, reconstructed losses).

For every method and seed: pretrain a small-cnn encoder with ``robrep.train`` (same encoder,
data, epochs, batch and optimizer for every method), then probe its penultimate layer
(``robrep.evaluate.linear_probe``): a standard linear probe (natural accuracy and PGD accuracy
at --eps) and, with --adv-probe, an adversarially trained linear probe. Results go to
``<out>/<method>-s<seed>/probe.json``; re-running skips finished parts (resumable).

Example (the settings of docs/reproductions/ko2022-nca-robust-contrastive.md):
    nice -n 10 python experiments/ko2022-nca/robust-contrastive/run.py --dataset fashion-mnist --seeds 0 1 \
        --out artifacts/contrastive/fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import robrep
from robrep.evaluate import linear_probe
from robrep.io.atomic import atomic_write_json
from robrep.threats import threat
from robrep.train import TrainConfig, train

# name -> (objective, objective kwargs); augment preset is added per dataset
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "simclr": ("simclr", {}),
    "nacl-log-m2": ("nacl", {"views": 3, "log": True}),
    "nacl-nolog": ("nacl", {"views": 2, "log": False}),
    "acl": ("acl", {"clean_weight": 1.0}),
    "intnacl-weighted": ("intnacl", {"mode": "weighted", "alpha": 1.0, "log": True}),
    "intnacl-positive": ("intnacl", {"mode": "positive", "alpha": 1.0, "log": True}),
}
REFERENCES = ("random-init",)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--methods", nargs="*", default=list(METHODS) + list(REFERENCES))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--n-train", type=int, default=5000, help="class-balanced pretraining / probe-training subset")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eps", type=float, default=0.1, help="linf eps of adversarial pretraining and evaluation")
    ap.add_argument("--train-steps", type=int, default=3, help="PGD steps in adversarial pretraining")
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--probe-epochs", type=int, default=30)
    ap.add_argument("--eval-n", type=int, default=1000)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--adv-probe", action="store_true", help="also train an adversarial linear probe")
    ap.add_argument("--adv-probe-epochs", type=int, default=2)
    ap.add_argument("--adv-probe-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="artifacts/contrastive/run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    full = robrep.load_dataset(a.dataset, "train")
    frac = min(1.0, a.n_train / len(full))
    test = robrep.load_dataset(a.dataset, "test").head(a.eval_n)
    aug = {"mnist": "digits"}.get(a.dataset, "clothes")
    thr = threat("linf", a.eps)
    for seed in a.seeds:
        train_data = full.fraction(frac, seed=seed)  # the same subset robrep.train draws with train_fraction/seed
        for name in a.methods:
            run = out / f"{name}-s{seed}"
            res_path = run / "probe.json"
            if res_path.exists() and (not a.adv_probe or "adv_probe" in json.loads(res_path.read_text())):
                continue
            t0 = time.time()
            if name == "random-init":
                torch.manual_seed(seed)
                model = robrep.create_model("small-cnn", dataset=a.dataset)
                train_s, history = 0.0, []
            else:
                obj, kw = METHODS[name]
                needs_eps = obj in ("acl", "intnacl")
                kw = {**kw, "augment": aug, "temperature": a.temperature, **({"steps": a.train_steps} if needs_eps else {})}
                cfg = TrainConfig(model="small-cnn", dataset=a.dataset, objective=obj, norm="linf", eps=a.eps if needs_eps else 0.0,
                                  epochs=a.epochs, batch_size=a.batch_size, optimizer="adam", lr=a.lr, weight_decay=1e-6,
                                  schedule="cosine", train_fraction=frac, seed=seed, eval_n=0, objective_kwargs=kw)
                if (run / "model.safetensors").exists():
                    model = robrep.load(run / "model.safetensors")
                    rec = json.loads((run / "record.json").read_text())
                    train_s, history = float(rec.get("seconds", 0.0)), rec.get("history", [])
                else:
                    r = train(cfg, run, resume=True, train_data=full, show_progress=False, log=lambda s, n=name, sd=seed: print(f"  [{n} s{sd}] {s}", flush=True))
                    model, train_s, history = r.model, r.seconds, r.history
            model.eval()
            prev = json.loads(res_path.read_text()) if res_path.exists() else {}
            result: dict[str, Any] = {"method": name, "seed": seed, "dataset": a.dataset, "n_train": len(train_data),
                                      "eps": a.eps, "train_seconds": train_s, "final_train": history[-1] if history else {}}
            if "std_probe" in prev:
                result["std_probe"] = prev["std_probe"]
            else:
                p = linear_probe(model, train_data, test, layer="penultimate", eval_threat=thr, epochs=a.probe_epochs,
                                 lr=1e-2, batch_size=256, eval_steps=a.eval_steps, seed=seed)
                result["std_probe"] = {"natural": p.natural_accuracy, "adversarial": p.adversarial_accuracy, **p.eval}
            if a.adv_probe:
                p = linear_probe(model, train_data, test, layer="penultimate", train_threat=thr, eval_threat=thr,
                                 epochs=a.adv_probe_epochs, lr=1e-2, batch_size=256, attack_steps=a.adv_probe_steps,
                                 eval_steps=a.eval_steps, seed=seed)
                result["adv_probe"] = {"natural": p.natural_accuracy, "adversarial": p.adversarial_accuracy, **p.eval}
            result["seconds"] = time.time() - t0
            run.mkdir(parents=True, exist_ok=True)
            atomic_write_json(res_path, result)
            sp = result["std_probe"]
            print(f"{a.dataset} {name} s{seed}: std probe nat {sp['natural']:.4f} adv {sp['adversarial']:.4f}"
                  + (f"; adv probe nat {result['adv_probe']['natural']:.4f} adv {result['adv_probe']['adversarial']:.4f}" if a.adv_probe else "")
                  + f" ({result['seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
