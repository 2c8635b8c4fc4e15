"""Markdown tables from artifacts/visualization/<dataset>/metrics.json (for docs/reproductions/engstrom2019-inversion.md).

    python experiments/engstrom2019/inversion/tables.py artifacts/visualization
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def f(d: dict, nd: int = 3) -> str:
    return f"{d['mean']:.{nd}f} [{d['low']:.{nd}f}, {d['high']:.{nd}f}]"


def main(root: str) -> None:
    for name in ("mnist", "fashion-mnist"):
        p = Path(root) / name / "metrics.json"
        if not p.is_file():
            print(f"\n({name}: no results)\n")
            continue
        m = json.loads(p.read_text())
        print(f"\n### {name} (n = {m['n']} test images)\n")
        print(f"Models: standard `{m['models']['standard']}`, robust `{m['models']['robust']}`; clean accuracy on the "
              f"searched test images: standard {m['clean_accuracy']['standard']:.3f}, robust {m['clean_accuracy']['robust']:.3f}.\n")
        print("| inversion from noise | relative rep. error | image l2 to original | SSIM to original | seconds |")
        print("|---|---|---|---|---|")
        for key, inv in m["inversion"].items():
            for k in ("standard", "robust"):
                v = inv[k]
                print(f"| {k} ({key}) | {f(v['rep_error'], 4)} | {f(v['l2'])} | {f(v['ssim'])} | {v['seconds']:.0f} |")
            d = inv["robust_minus_standard"]
            print(f"| robust − standard, paired ({key}) | {f(d['rep_error'], 4)} | {f(d['l2'])} | {f(d['ssim'])} | |")
        b = m["baseline_noise_start"]
        print(f"| the noise start itself | – | {f(b['l2'])} | {f(b['ssim'])} | |")
        o = m["inversion_from_other_image"]
        print(f"\nInversion seeded with another test image (n = {o['n']}):\n")
        print("| model | relative rep. error | SSIM to target | SSIM to seed |")
        print("|---|---|---|---|")
        for k in ("standard", "robust"):
            print(f"| {k} | {f(o[k]['rep_error'], 4)} | {f(o[k]['ssim_to_target'])} | {f(o[k]['ssim_to_seed'])} |")
        print("\nBrittleness (x_source + δ, ‖δ‖₂ ≤ ε, matching R(x_target); target = next test image):\n")
        print("| ε | model | rel. error before | rel. error after | SSIM(x_source + δ, x_source) |")
        print("|---|---|---|---|---|")
        for e, bb in m["brittleness"].items():
            for k in ("standard", "robust"):
                v = bb[k]
                print(f"| {e} | {k} | {f(v['rep_error_before'])} | {f(v['rep_error_after'])} | {f(v['ssim_adv_to_source'])} |")
        fa = m["feature_addition"]
        print("\nFeature addition / visualization / misclassification / saliency:\n")
        print("| model | feature addition: component, target, before → after, reached, ‖Δx‖₂ | feature vis.: components, activation start → end | misclassified: pushed input keeps the wrong class | corr(‖grad‖, image) |")
        print("|---|---|---|---|---|")
        for k in ("standard", "robust"):
            a = fa[k]
            fv = m["features"][k]
            mc = m["misclassification"][k]
            act = ", ".join(f"{s:.2f}→{e:.2f}" for s, e in zip(fv["activation_start"], fv["activation"]))
            keep = f"{mc['pushed_keeps_wrong_class']:.2f}" if "pushed_keeps_wrong_class" in mc else "–"
            print(f"| {k} | #{a['component']}, {a['target']:.2f}, {a['before']:.2f} → {a['after']:.2f}, {a['reached']:.2f}, {a['l2_change']:.2f} "
                  f"| {fv['components']}: {act} ({fv['active_units']}/{fv['dim']} units active) | {keep} | {m['saliency'][k]['corr_abs_grad_with_image']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "artifacts/visualization")
