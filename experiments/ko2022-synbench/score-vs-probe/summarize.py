"""Table of SynBench scores vs measured linear-probe accuracies, with Spearman rank correlations.

    python experiments/ko2022-synbench/score-vs-probe/summarize.py [artifacts/synbench/results]

Prints a markdown table (used in docs/reproductions/ko2022-synbench-score-vs-probe.md) and writes summary.json there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scipy import stats


def _f(x) -> str:
    return "n/a (radius 0)" if x is None else f"{x:.3f}"


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/synbench/results")
    rows = [json.loads(p.read_text()) for p in sorted(root.glob("*.json")) if p.name != "summary.json"]
    rows = [r for r in rows if "probe" in r]
    print("| encoder | data | training | SynBench eps=0, a_t 0.6 / 0.7 / 0.8 / 0.9 | best eps@0.7 (score) "
          "| probe natural | probe adv. (linf 0.1) | SynBench CPU s | SynBench wall s | feature dim |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sc = r["synbench"]["scores"]
        s0 = " / ".join(f"{sc[t]['0']:.3f}" for t in ("0.6", "0.7", "0.8", "0.9"))
        be = r["synbench"]["best_eps"]["0.7"]
        obj = r.get("objective")
        obj = obj.get("name") if isinstance(obj, dict) else obj
        thr = r.get("train_threat")
        tr = f"{obj} {thr['norm']} {thr['eps']:g}" if thr else str(obj)
        p = r["probe"]
        print(f"| {r['name']} | {r['dataset']} | {tr} | {s0} | {be:g} ({sc['0.7'][f'{be:g}']:.3f}) | "
              f"{p['natural_accuracy']:.3f} | {p['adversarial_accuracy']:.3f} | {r['synbench_cpu_s']:.0f} | {r['synbench_wall_s']:.0f} | {r['synbench'].get('feature_dim', '')} |")
    eps = [f"{e:g}" for e in rows[0]["synbench"]["eps"]] if rows else []
    print("\n| encoder | a_t | " + " | ".join(f"eps={e}" for e in eps) + " |")
    print("|---|---|" + "---|" * len(eps))
    for r in rows:
        for t in ("0.6", "0.7", "0.8", "0.9"):
            print(f"| {r['name']} | {t} | " + " | ".join(f"{r['synbench']['scores'][t][e]:.3f}" for e in eps) + " |")
    out: dict = {"n": len(rows), "spearman": {}}
    groups = {"all": rows} | {d: [r for r in rows if r["dataset"] == d] for d in sorted({r["dataset"] for r in rows})}
    print("\n| group | n | score (eps=0, a_t) vs probe natural: rho | vs probe adversarial: rho |")
    print("|---|---|---|---|")
    for g, rs in groups.items():
        if len(rs) < 3:
            continue
        for t in ("0.6", "0.7", "0.8", "0.9"):
            s = [r["synbench"]["scores"][t]["0"] for r in rs]
            nat = [r["probe"]["natural_accuracy"] for r in rs]
            adv = [r["probe"]["adversarial_accuracy"] for r in rs]
            rn, pn = stats.spearmanr(s, nat)
            ra, pa = stats.spearmanr(s, adv)
            out["spearman"][f"{g}@{t}"] = {"n": len(rs), "natural": [rn, pn], "adversarial": [ra, pa]}
            print(f"| {g}, a_t={t} | {len(rs)} | {rn:+.2f} (p={pn:.2f}) | {ra:+.2f} (p={pa:.2f}) |")
            sb = [max(r["synbench"]["scores"][t].values()) for r in rs]  # score at the best eps
            rn, pn = stats.spearmanr(sb, nat)
            ra, pa = stats.spearmanr(sb, adv)
            out["spearman"][f"{g}@{t}/best-eps"] = {"n": len(rs), "natural": [rn, pn], "adversarial": [ra, pa]}
            print(f"| {g}, a_t={t}, best eps | {len(rs)} | {rn:+.2f} (p={pn:.2f}) | {ra:+.2f} (p={pa:.2f}) |")
    rp = [r for r in rows if "robust_probe" in r]
    if rp:
        print("\n| encoder | eps* (a_t 0.7) | l2 radius | standard probe nat / adv | robust probe nat / adv |")
        print("|---|---|---|---|---|")
        for r in rp:
            q = r["robust_probe"]
            print(f"| {r['name']} | {q['synbench_eps']:g} | {q['radius']:.3f} | {q['standard_natural_accuracy']:.3f} / "
                  f"{_f(q['standard_adversarial_accuracy'])} | {q['robust_natural_accuracy']:.3f} / {_f(q['robust_adversarial_accuracy'])} |")
    (root / "summary.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
