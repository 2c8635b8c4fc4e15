"""Print the markdown table of experiments/zhu2020/layers/run.sh's JSON outputs."""

import json
import sys

print("| model | layer | I(X;Z) [95 %] | worst-case I* [95 %] | RV [95 %] | RV width | Fano bound | probe nat / PGD-20 |")
print("|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1].removesuffix(".json")
    with open(path) as f:
        out = json.loads(f.read().strip().splitlines()[-1])
    for r in out["results"]:
        c, w, v = r["mi_clean"], r["mi_worst"], r["vulnerability"]
        pa, pr = r.get("probe_accuracy"), r.get("probe_robust_accuracy")
        probe = "" if pa is None else f"{pa:.3f} / {pr:.3f}"
        print(f"| {name} | {r['layer']} | {c['estimate']:.2f} [{c['low']:.2f}, {c['high']:.2f}] | "
              f"{w['estimate']:.2f} [{w['low']:.2f}, {w['high']:.2f}] | {v['estimate']:.2f} [{v['low']:.2f}, {v['high']:.2f}] | "
              f"{v['high'] - v['low']:.2f} | {r['accuracy_bound']['estimate']:.3f} | {probe} |")
