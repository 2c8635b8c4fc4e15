"""Gather ``<root>/<dataset>/<method>-s<seed>/probe.json`` (and ``synbench.json``, ``vulnerability.json``) into one
table: mean over seeds, the per-seed values, and a 95% Wilson interval for the test-set
sampling error of each seed's accuracy (n = eval_n test images). Writes
``<root>/summary.json`` and prints Markdown.

    python experiments/ko2022-nca/robust-contrastive/summarize.py --root artifacts/contrastive
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

ORDER = ["random-init", "simclr", "nacl-log-m2", "nacl-nolog", "acl", "intnacl-weighted", "intnacl-positive"]


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return c - h, c + h


def cell(vals: list[float], n: int) -> str:
    if not vals:
        return "-"
    m = sum(vals) / len(vals)
    lo = min(wilson(v, n)[0] for v in vals)
    hi = max(wilson(v, n)[1] for v in vals)
    per = "/".join(f"{100 * v:.1f}" for v in vals)
    return f"{100 * m:.1f} ({per}) [{100 * lo:.1f}, {100 * hi:.1f}]"


def plot(summary: dict[str, Any], path: Path) -> None:
    """Bar chart: natural and PGD accuracy per method for the standard probe and, where present,
    the adversarially trained probe (mean over seeds as bars, each seed as a dot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(6.0 * len(summary), 3.8), squeeze=False)
    for ax, (ds, rows) in zip(axes[0], summary.items()):
        ms = sorted(rows, key=lambda k: ORDER.index(k) if k in ORDER else 99)
        series = [("std_probe", "natural", "tab:blue", "std probe, natural"),
                  ("std_probe", "adversarial", "tab:red", "std probe, PGD (linf)")]
        if any("adv_probe" in r for rs in rows.values() for r in rs):
            series += [("adv_probe", "natural", "tab:cyan", "adv probe, natural"),
                       ("adv_probe", "adversarial", "tab:orange", "adv probe, PGD (linf)")]
        w = 0.8 / len(series)
        for j, (probe, key, col, lab) in enumerate(series):
            off = (j - (len(series) - 1) / 2) * w
            vals = [[100 * r[probe][key] for r in rows[m] if probe in r] for m in ms]
            ax.bar([i + off for i in range(len(ms))], [sum(v) / len(v) if v else 0.0 for v in vals], w, color=col,
                   alpha=0.6, label=lab)
            for i, v in enumerate(vals):
                ax.scatter([i + off] * len(v), v, s=6, color="k", zorder=3)
        ax.set_xticks(range(len(ms)), ms, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("linear-probe accuracy %")
        ax.set_title(ds, fontsize=10)
        ax.set_ylim(0, 118)
        ax.set_yticks(range(0, 101, 20))
        ax.legend(fontsize=7, ncol=2, loc="upper center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="artifacts/contrastive")
    ap.add_argument("--figure", default=None, help="write a bar chart PNG here (e.g. docs/figures/contrastive/probe.png)")
    a = ap.parse_args()
    root = Path(a.root)
    summary: dict[str, Any] = {}
    for ds_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for f in sorted(ds_dir.glob("*/probe.json")):
            r = json.loads(f.read_text())
            for extra in ("synbench", "vulnerability"):
                ef = f.parent / f"{extra}.json"
                if ef.exists():
                    r[extra] = json.loads(ef.read_text())
            rows[r["method"]].append(r)
        if not rows:
            continue
        summary[ds_dir.name] = {m: rs for m, rs in rows.items()}
        any_r = next(iter(rows.values()))[0]
        n = int(any_r["std_probe"]["n"])
        print(f"\n### {ds_dir.name} (n_train {any_r['n_train']}, linf eps {any_r['eps']}, {n} test images)\n")
        has_adv_probe = any("adv_probe" in r for rs in rows.values() for r in rs)
        has_sb = any("synbench" in r for rs in rows.values() for r in rs)
        has_rv = any("vulnerability" in r for rs in rows.values() for r in rs)
        head = "| method | seeds | std probe natural % | std probe PGD % |"
        if has_adv_probe:
            head += " adv probe natural % | adv probe PGD % |"
        if has_sb:
            head += " SynBench (eps=0 / 0.2, a_t=0.7) |"
        if has_rv:
            head += " MI clean / worst (nats) | vulnerability (nats) [95% t] | Fano bound on adv. acc. |"
        head += " pretrain s |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for m in sorted(rows, key=lambda k: ORDER.index(k) if k in ORDER else 99):
            rs = sorted(rows[m], key=lambda r: r["seed"])
            line = f"| {m} | {','.join(str(r['seed']) for r in rs)} | {cell([r['std_probe']['natural'] for r in rs], n)} | " \
                   f"{cell([r['std_probe']['adversarial'] for r in rs], n)} |"
            if has_adv_probe:
                ap_ = [r for r in rs if "adv_probe" in r]
                line += f" {cell([r['adv_probe']['natural'] for r in ap_], n)} | {cell([r['adv_probe']['adversarial'] for r in ap_], n)} |"
            if has_sb:
                sbs = [r["synbench"] for r in rs if "synbench" in r]
                if sbs:
                    v0 = [s["scores"]["0.7"]["0"] for s in sbs]
                    v2 = [s["scores"]["0.7"]["0.2"] for s in sbs]
                    line += f" {sum(v0) / len(v0):.3f} / {sum(v2) / len(v2):.3f} |"
                else:
                    line += " - |"
            if has_rv:
                vs = [r["vulnerability"] for r in rs if "vulnerability" in r]
                if vs:
                    def mean(key: str, vs: list[dict[str, Any]] = vs) -> float:
                        return sum(v[key]["estimate"] for v in vs) / len(vs)
                    per = "/".join(f"{v['vulnerability']['estimate']:.2f}" for v in vs)
                    lo = min(v["vulnerability"]["low"] for v in vs)
                    hi = max(v["vulnerability"]["high"] for v in vs)
                    line += (f" {mean('mi_clean'):.2f} / {mean('mi_worst'):.2f} | {mean('vulnerability'):.2f} ({per}) "
                             f"[{lo:.2f}, {hi:.2f}] | {100 * mean('accuracy_bound'):.1f} % |")
                else:
                    line += " - | - | - |"
            line += f" {sum(r['train_seconds'] for r in rs) / len(rs):.0f} |"
            print(line)
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    if a.figure and summary:
        plot(summary, Path(a.figure))


if __name__ == "__main__":
    main()
