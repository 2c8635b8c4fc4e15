"""Merge the chunked certification runs and print the markdown tables of the reproduction.

usage: python experiments/cohen2019/certified-accuracy/report.py [--root artifacts/certification] [--figures docs/figures/certification]
Writes <root>/certify/<run>/merged/{record.json,certify.tsv,certified_accuracy.png} (a run folder for
`robrep report`), <root>/summary.md and two small figures.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import norm

from robrep.certify import certified_accuracy
from robrep.certify.runner import (
    plot_certified_accuracy,
    summarize_certification,
    tsv_columns,
    write_tsv,
)
from robrep.runs import write_record

L2_RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0]
LINF_RADII = [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1]


def load_runs(root: Path, runs_dir: str = "certify", dataset: str = "mnist") -> dict[float, dict]:
    runs = {}
    for d in sorted((root / runs_dir).glob(f"{dataset}-sigma*-n*")):
        rows = []
        config: dict = {}
        settings: dict = {}
        for ch in sorted((d / "chunks").glob("chunk-*.json")):  # `robrep certify --chunk-size` (finished chunks)
            part = json.loads(ch.read_text())
            rows += part["result"]["rows"]
            config = settings = part["fingerprint"]
        for ch in [] if rows else sorted(d.glob("chunk-*")):  # the earlier layout: one run folder per chunk
            if not (ch / "record.json").exists():
                continue
            rows += json.loads((ch / "per_image.json").read_text())["rows"]
            rec = json.loads((ch / "record.json").read_text())
            config, settings = rec["config"], rec["metrics"]
        if not rows:
            continue
        rows.sort(key=lambda r: r["idx"])
        sigma = float(settings["sigma"])
        m = summarize_certification(rows, sigma, 1, 784, L2_RADII)
        m |= {k: settings[k] for k in ("dataset", "sigma", "order", "n0", "n", "alpha")}
        m["num_images"] = len(rows)
        m["seconds"] = float(sum(r["time"] for r in rows))
        out = d / "merged"
        out.mkdir(exist_ok=True)
        write_tsv(out / "certify.tsv", rows, tsv_columns(1))
        write_record(out, "certify (merged chunks)", config | {"num": len(rows), "start": 0}, m)
        plot_certified_accuracy(m, out / "certified_accuracy.png", f"{dataset} sigma={sigma} n={m['n']} ({len(rows)} images)")
        runs[sigma] = {"rows": rows, "metrics": m}
    return runs


def table_rows(runs: dict[float, dict]) -> list[str]:
    L = []
    L.append("### Certified accuracy, L2 (pixel units): Cohen (zeroth order, alpha) | first-order L2 (alpha split) | max of both\n")
    L.append("| sigma | images | " + " | ".join(f"r={r}" for r in L2_RADII) + " | mean radius |")
    L.append("|---|---|" + "---|" * (len(L2_RADII) + 1))
    for s, run in sorted(runs.items()):
        rows = run["rows"]
        lab = np.array([r["label"] for r in rows])
        cor_co = np.array([bool(r["correct_cohen"]) for r in rows])
        cor_fo = np.array([r["predict"] for r in rows]) == lab
        co = np.array([r["radius_cohen"] for r in rows])
        fo2 = np.array([r["radius_L2"] for r in rows])
        best = np.maximum(np.where(cor_fo, fo2, 0), np.where(cor_co, co, 0))
        cells = []
        for r in L2_RADII:
            a, b, c = (certified_accuracy(co, cor_co, r), certified_accuracy(fo2, cor_fo, r),
                       certified_accuracy(best, cor_fo | cor_co, r))
            cells.append(f"{a:.3f} / {b:.3f} / {c:.3f}")
        mr = f"{co[cor_co].mean():.3f} / {fo2[cor_fo].mean():.3f}"
        L.append(f"| {s} | {len(rows)} | " + " | ".join(cells) + f" | {mr} |")
    L.append("\n### Certified accuracy, L1 (pixel units): Cohen L2 radius used as L1 radius | first-order L1 | max of both\n")
    L.append("| sigma | images | " + " | ".join(f"r={r}" for r in L2_RADII) + " | mean radius |")
    L.append("|---|---|" + "---|" * (len(L2_RADII) + 1))
    for s, run in sorted(runs.items()):
        rows = run["rows"]
        lab = np.array([r["label"] for r in rows])
        cor_co = np.array([bool(r["correct_cohen"]) for r in rows])
        cor_fo = np.array([r["predict"] for r in rows]) == lab
        co = np.array([r["radius_cohen"] for r in rows])
        fo1 = np.array([r["radius_L1"] for r in rows])
        best = np.maximum(np.where(cor_fo, fo1, 0), np.where(cor_co, co, 0))
        cells = [f"{certified_accuracy(co, cor_co, r):.3f} / {certified_accuracy(fo1, cor_fo, r):.3f} / "
                 f"{certified_accuracy(best, cor_fo | cor_co, r):.3f}" for r in L2_RADII]
        L.append(f"| {s} | {len(rows)} | " + " | ".join(cells) + f" | {co[cor_co].mean():.3f} / {fo1[cor_fo].mean():.3f} |")
    L.append("\n### Certified accuracy, Linf (pixel units): Cohen L2 radius / 28 | first-order Linf | max of both\n")
    L.append("| sigma | images | " + " | ".join(f"eps={r}" for r in LINF_RADII) + " | mean radius |")
    L.append("|---|---|" + "---|" * (len(LINF_RADII) + 1))
    for s, run in sorted(runs.items()):
        rows = run["rows"]
        lab = np.array([r["label"] for r in rows])
        cor_co = np.array([bool(r["correct_cohen"]) for r in rows])
        cor_fo = np.array([r["predict"] for r in rows]) == lab
        co = np.array([r["radius_cohen"] for r in rows]) / 28.0
        foi = np.array([r["radius_LInf"] for r in rows])
        best = np.maximum(np.where(cor_fo, foi, 0), np.where(cor_co, co, 0))
        cells = [f"{certified_accuracy(co, cor_co, r):.3f} / {certified_accuracy(foi, cor_fo, r):.3f} / "
                 f"{certified_accuracy(best, cor_fo | cor_co, r):.3f}" for r in LINF_RADII]
        L.append(f"| {s} | {len(rows)} | " + " | ".join(cells) + f" | {co[cor_co].mean():.4f} / {foi[cor_fo].mean():.4f} |")
    L.append("\n### Per-image diagnostics\n")
    L.append("| sigma | images | abstain (FO, alpha/2) | abstain (Cohen) | FO L2 > Cohen | FO L1 > Cohen | FO Linf > Cohen/28 | median ||y|| upper / phi(Phi^-1 p) | R_max = sigma Phi^-1(alpha^(1/n)) | sec/image |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for s, run in sorted(runs.items()):
        rows, m = run["rows"], run["metrics"]
        ok = [r for r in rows if r["predict"] != -1]
        ratio = [r["grad_l2_upper"] / norm.pdf(norm.ppf(r["p_lower"])) for r in ok if r["p_lower"] < 1]
        rmax = s * norm.ppf(m["alpha"] ** (1 / m["n"]))
        L.append(f"| {s} | {len(rows)} | {np.mean([r['predict'] == -1 for r in rows]):.3f} | "
                 f"{np.mean([r['radius_cohen'] <= 0 for r in rows]):.3f} | "
                 f"{np.mean([r['radius_L2'] > r['radius_cohen'] for r in ok]) if ok else 0:.3f} | "
                 f"{np.mean([r['radius_L1'] > r['radius_cohen'] for r in ok]) if ok else 0:.3f} | "
                 f"{np.mean([r['radius_LInf'] > r['radius_cohen'] / 28 for r in ok]) if ok else 0:.3f} | "
                 f"{np.median(ratio) if ratio else math.nan:.2f} | {rmax:.3f} | {m['seconds'] / len(rows):.1f} |")
    return L


def class_rows(runs: dict[float, dict], radii: tuple[float, ...] = (0.0, 0.5, 1.0)) -> list[str]:
    """Per-class certified accuracy (the larger of the zeroth- and first-order L2 radius) of the
    certification runs: the hidden cost of smoothing, class by class, on the certified images."""
    L = ["", "### Per-class certified accuracy (L2, max of Cohen and first-order), noise-trained models", "",
         "| sigma | radius | " + " | ".join(f"c{c}" for c in range(10)) + " | worst class | spread (max-min) |",
         "|---|---|" + "---|" * 12]
    for sigma, run in sorted(runs.items()):
        rows = run["rows"]
        for r in radii:
            acc = []
            for c in range(10):
                rc = [x for x in rows if x["label"] == c]
                ok = [x["correct"] and max(x["radius_L2"] or 0.0, x["radius_cohen"] or 0.0) >= r
                      if r > 0 else x["correct"] for x in rc]
                acc.append(sum(ok) / len(rc) if rc else float("nan"))
            w = min(range(10), key=lambda c: acc[c])
            L.append(f"| {sigma:g} | {r:g} | " + " | ".join(f"{a:.2f}" for a in acc)
                     + f" | {acc[w]:.2f} (class {w}) | {max(acc) - min(acc):.2f} |")
    n = {sigma: len(run["rows"]) for sigma, run in runs.items()}
    per = min(n.values()) / 10
    L.append(f"\n(images per run: {n}; about {per:.0f} per class, so a class value of 0.9 carries a standard error of "
             f"about {math.sqrt(0.09 / per):.2f}.)")
    return L


def hidden_rows(root: Path) -> list[str]:
    L = []
    files = sorted((root / "hidden_cost").glob("*.json"))
    if not files:
        return L
    L.append("### Hidden cost: overall and class-wise accuracy vs sigma\n")
    L.append("| model | sigma | clean | noisy E[1[f(x+d)=y]] | smoothed (majority) | PREDICT (abstain = wrong) | worst class smoothed | best class smoothed | spread (max-min) smoothed | std smoothed | spread of drop (clean-smoothed) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for f in files:
        d = json.loads(f.read_text())
        for c in d["per_sigma"]:
            sm = np.array(c["smoothed"])
            o = c["overall"]
            L.append(f"| {d['model']} | {c['sigma']} | {o['clean']:.3f} | {o['noisy']:.3f} | {o['smoothed']:.3f} | "
                     f"{o['predict']:.3f} | {sm.min():.3f} (class {int(sm.argmin())}) | {sm.max():.3f} | "
                     f"{c['spread']['smoothed']:.3f} | {c['std']['smoothed']:.3f} | {c['drop_spread']:.3f} |")
    L.append(f"\n(n = {d['n']} noise samples per image and sigma, first {d['num_images']} MNIST test images.)\n")
    L.append("### Per-class smoothed accuracy (majority vote)\n")
    L.append("| model | sigma | " + " | ".join(f"c{k}" for k in range(10)) + " |")
    L.append("|---|---|" + "---|" * 10)
    for f in files:
        d = json.loads(f.read_text())
        for c in d["per_sigma"]:
            L.append(f"| {d['model']} | {c['sigma']} | " + " | ".join(f"{v:.2f}" for v in c["smoothed"]) + " |")
    L.append("\n### Per-class noisy accuracy of the base classifier\n")
    L.append("| model | sigma | " + " | ".join(f"c{k}" for k in range(10)) + " |")
    L.append("|---|---|" + "---|" * 10)
    for f in files:
        d = json.loads(f.read_text())
        for c in d["per_sigma"]:
            L.append(f"| {d['model']} | {c['sigma']} | " + " | ".join(f"{v:.2f}" for v in c["noisy"]) + " |")
    return L


def figure(runs: dict[float, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for s, run in sorted(runs.items()):
        m = run["metrics"]
        for ax, key_fo, key_co, lab in ((axes[0], "certified_accuracy_vs_radius_l2_first_order", "certified_accuracy_vs_radius_cohen", "L2"),
                                        (axes[1], "certified_accuracy_vs_radius_l1_best", "certified_accuracy_vs_radius_cohen", "L1")):
            xy = np.array(m[key_co])
            line = ax.plot(xy[:, 0], xy[:, 1], "--", label=f"sigma={s} Cohen")[0]
            xy = np.array(m[key_fo])
            ax.plot(xy[:, 0], xy[:, 1], "-", color=line.get_color(), label=f"sigma={s} first order" + (" (max)" if lab == "L1" else ""))
            ax.set_title(f"MNIST {lab} certified accuracy (n={m['n']})", fontsize=9)
            ax.set_xlabel(f"{lab} radius (pixels in [0,1])")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
    axes[0].set_ylabel("certified accuracy")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="artifacts/certification")
    ap.add_argument("--figures", default="docs/figures/certification")
    ap.add_argument("--runs", default="certify", help="folder under --root holding the <dataset>-sigma*-n* runs (e.g. certify500)")
    ap.add_argument("--dataset", default="mnist")
    args = ap.parse_args()
    root = Path(args.root)
    runs = load_runs(root, args.runs, args.dataset)
    lines = table_rows(runs) + class_rows(runs) if runs else []
    lines += hidden_rows(root)
    (root / ("summary.md" if args.runs == "certify" else f"summary-{args.runs}.md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if runs:
        figure(runs, Path(args.figures) / f"{args.dataset.replace('-', '_')}_certified_accuracy.png")


if __name__ == "__main__":
    main()
