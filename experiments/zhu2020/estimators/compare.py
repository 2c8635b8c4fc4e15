"""Compare the MI estimators of robrep.info on Gaussian closed forms, same critics and budget.

    python experiments/zhu2020/estimators/compare.py [--seeds 5] [--steps 300] [--out results.json]

Cases: rho = 0.9 (I = 0.8304 nats, 1-d) and Z = X + 0.5 N in 10-d (I = 5 log 5 = 8.0472 nats).
Estimators: infonce (the default; held-out batch 1024, so at most log 1024 = 6.93 nats), dv,
jsd (critic trained with JSD, read as DV), smile (JSD-trained, DV read with scores clipped at
+-5). Every estimate: 4 separable MLP critics trained together (hidden 64, embed 32, 1 hidden
layer), batch 128, Adam 3e-3, early stopping, 2 held-out batches of 1024. Prints, per case and
estimator, the mean estimate over seeds, its relative error, the mean interval width and how
many intervals contain the truth.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from robrep.info import estimate_mi_samples


def case(name: str, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    if name == "rho0.9":
        x = torch.randn(m, 1, generator=g)
        return x, 0.9 * x + math.sqrt(1 - 0.81) * torch.randn(m, 1, generator=g), -0.5 * math.log(1 - 0.81)
    x = torch.randn(m, 10, generator=g)
    return x, x + 0.5 * torch.randn(m, 10, generator=g), 5 * math.log(5.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--estimators", default="infonce,dv,jsd,smile")
    p.add_argument("--cases", default="rho0.9,d10")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    res = []
    print("| case (truth) | estimator | mean estimate | error | mean width | covers truth | CPU s per estimate |")
    print("|---|---|---|---|---|---|---|")
    for cname in a.cases.split(","):
        for est in a.estimators.split(","):
            vals, widths, cover, cpu = [], [], 0, 0.0
            for s in range(a.seeds):
                x, z, true = case(cname, 8192, 1000 + s)
                c0 = time.process_time()
                try:
                    r = estimate_mi_samples(x, z, estimator=est, n_critics=4, steps=a.steps, batch_size=128,
                                            eval_batch_size=1024, n_eval_batches=2, lr=3e-3, seed=s,
                                            critic_kwargs={"hidden": 64, "embed": 32, "layers": 1})
                except Exception as e:  # a diverging estimator is a result too
                    print(f"<!-- {cname} {est} seed {s}: {e} -->")
                    continue
                cpu += time.process_time() - c0
                vals.append(r.estimate)
                widths.append(r.width)
                cover += r.low <= true <= r.high
            if not vals:
                print(f"| {cname} ({true:.4f}) | {est} | failed | | | | |")
                continue
            mean = sum(vals) / len(vals)
            row = {"case": cname, "truth": true, "estimator": est, "mean": mean, "rel_error": (mean - true) / true,
                   "mean_width": sum(widths) / len(widths), "covers": cover, "n": len(vals), "cpu_s": cpu / len(vals),
                   "values": vals}
            res.append(row)
            print(f"| {cname} ({true:.4f}) | {est} | {mean:.3f} | {100 * row['rel_error']:+.1f} % | {row['mean_width']:.3f} | "
                  f"{cover}/{len(vals)} | {row['cpu_s']:.1f} |", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
