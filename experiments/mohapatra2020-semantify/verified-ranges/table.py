"""Collect artifacts/semantic/*.json into the markdown table of docs/reproductions/mohapatra2020-semantify-verified-ranges.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/semantic")
print("| model | transform | n (correct) | eps | delta | subdiv | mean verified radius | mean attacked radius | "
      "verified [lo, hi] | attacked [lo, hi] | verified / attacked radius (mean) | images fully verified (= attacked) | "
      "verify s/image | attack s/image | violations |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for f in sorted(root.glob("*.json")):
    try:
        r = json.loads(f.read_text())
    except json.JSONDecodeError:
        continue
    model = Path(r["checkpoint"]).parent.name
    per = f.with_suffix("") / "per_image.json"
    ratio, tight = "-", "-"
    if per.exists():
        rows = [x for x in json.loads(per.read_text()) if x["correct"]]
        rs = [x["verified"]["radius"] / x["attacked"]["radius"] for x in rows if x["attacked"]["radius"] > 0]
        ratio = f"{sum(rs) / len(rs):.2f}" if rs else "-"
        eq = sum(abs(x["verified"]["lo"] - x["attacked"]["lo"]) <= r["delta"] and abs(x["verified"]["hi"] - x["attacked"]["hi"]) <= r["delta"]
                 for x in rows)
        tight = f"{eq}/{len(rows)}"
    print(f"| {model} | {r['transform']} | {r['n']} ({r['n_correct']}) | {r['eps']:g} | {r['delta']:g} | {r['subdiv']} | "
          f"{r['verified_radius']:.3f} | {r['attacked_radius']:.3f} | [{r['verified_lo']:.3f}, {r['verified_hi']:.3f}] | "
          f"[{r['attacked_lo']:.3f}, {r['attacked_hi']:.3f}] | {ratio} | {tight} | {r['verify_seconds']:.2f} | {r['attack_seconds']:.2f} | {r['violations']} |")
