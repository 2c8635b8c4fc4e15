"""Pivot tables (markdown) and figures of a transfer sweep folder, for docs/reproductions/salman2020-robust-transfer.md.

Usage: python experiments/salman2020/robust-transfer/make_report.py [artifacts/transfer/sweep] [docs/figures/transfer]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from robrep.transfer import best_vs_standard, load_records, plot_sweep, summarize_sweep


def pct(s: dict | None) -> str:
    return "-" if s is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/transfer/sweep")
    figs = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/figures/transfer")
    rows = summarize_sweep(load_records(out))
    srcs: dict[str, dict] = {}
    for p in sorted((out / "sources").glob("*.json")):
        d = json.loads(p.read_text())
        srcs[d["source"]["name"]] = d
    order = sorted({(r["norm"] or "", r["eps"], r["source"]) for r in rows}, key=lambda t: (t[0] != "", t[0], t[1]))
    for mode in ("fixed", "full"):
        for metric in ("natural", "adversarial"):
            tasks = sorted({(r["target"], r["fraction"], r["n_train"]) for r in rows if r["mode"] == mode})
            if not tasks:
                continue
            print(f"\n#### {mode}-feature transfer, {metric} accuracy (%), mean ± std over seeds\n" if mode == "fixed"
                  else f"\n#### full-network transfer, {metric} accuracy (%), mean ± std over seeds\n")
            head = "| source (F-MNIST) | source clean / robust acc | " + " | ".join(f"{t} {f:g} (n={n})" for t, f, n in tasks) + " |"
            print(head)
            print("|" + "---|" * (2 + len(tasks)))
            for norm, eps, name in order:
                s = srcs.get(name, {})
                sacc = f"{100 * s['clean_accuracy']:.1f}" if s.get("clean_accuracy") is not None else "-"
                racc = f"{100 * s['robust_accuracy']:.1f}" if s.get("robust_accuracy") is not None else "-"
                cells = []
                for t, f, _n in tasks:
                    m = [r for r in rows if r["mode"] == mode and r["target"] == t and r["fraction"] == f and r["source"] == name]
                    cells.append(pct(m[0].get(metric)) + (f" [{len(m[0]['seeds'])}]" if m and len(m[0]["seeds"]) != 3 else "") if m else "-")
                label = "standard (eps 0)" if eps == 0 else f"{norm} eps {eps:g}"
                print(f"| {label} | {sacc} / {racc} | " + " | ".join(cells) + " |")
    print("\n#### best eps > 0 vs eps = 0 (difference of means; 95 % t half-widths combined in quadrature)\n")
    print("| metric | target | frac | mode | eps 0 | best robust source | its acc | diff (pp) | ± (pp) | beyond CI? |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for metric in ("natural", "adversarial"):
        for c in best_vs_standard(rows, metric):
            print(f"| {metric} | {c['target']} | {c['fraction']:g} | {c['mode']} | {100 * c['eps0']:.1f} | {c['best_source']} | "
                  f"{100 * c['best']:.1f} | {100 * c['diff']:+.1f} | {100 * c['half_width']:.1f} | "
                  f"{'yes' if c['significant'] else ('no' if c['significant'] is not None else 'n/a')} |")
    figs.mkdir(parents=True, exist_ok=True)
    plot_sweep(rows, figs / "accuracy_vs_eps.png", "natural")
    if any("adversarial" in r for r in rows):
        plot_sweep(rows, figs / "adversarial_accuracy_vs_eps.png", "adversarial")


if __name__ == "__main__":
    main()
