"""Collect artifacts/semantic/*.json into the markdown table of docs/reproductions/semantic.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/semantic")
print("| model | transform | n (correct) | eps | delta | subdiv | mean verified radius | mean attacked radius | "
      "verified [lo, hi] | attacked [lo, hi] | verify s/image | attack s/image | violations |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for f in sorted(root.glob("*.json")):
    try:
        r = json.loads(f.read_text())
    except json.JSONDecodeError:
        continue
    model = Path(r["checkpoint"]).parent.name
    print(f"| {model} | {r['transform']} | {r['n']} ({r['n_correct']}) | {r['eps']:g} | {r['delta']:g} | {r['subdiv']} | "
          f"{r['verified_radius']:.3f} | {r['attacked_radius']:.3f} | [{r['verified_lo']:.3f}, {r['verified_hi']:.3f}] | "
          f"[{r['attacked_lo']:.3f}, {r['attacked_hi']:.3f}] | {r['verify_seconds']:.2f} | {r['attack_seconds']:.2f} | {r['violations']} |")
