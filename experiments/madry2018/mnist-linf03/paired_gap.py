"""PGD-50 vs APGD robust accuracy of several models on the same test images: the chunks that
every model's two evaluations (PREFIX-eval-pgd50/, PREFIX-eval-apgd/) have finished.

usage: python experiments/madry2018/mnist-linf03/paired_gap.py PREFIX [PREFIX ...]
e.g.   python experiments/madry2018/mnist-linf03/paired_gap.py artifacts/madry2018/mnist-linf03/llr1-10ep artifacts/madry2018/mnist-linf03/relu-e0.3"""
import glob
import json
import sys


def chunks(prefix: str, attack: str) -> dict:
    files = sorted(glob.glob(f"{prefix}-eval-{attack}/chunks/*.json"))
    return {f.rsplit("/", 1)[-1]: json.load(open(f))["result"] for f in files}


runs = {p: (chunks(p, "pgd50"), chunks(p, "apgd")) for p in sys.argv[1:]}
if not runs:
    sys.exit(__doc__)
common = sorted(set.intersection(*[set(a) & set(b) for a, b in runs.values()]))
if not common:
    sys.exit("no chunk is finished by every evaluation yet")
for prefix, (pgd, apgd) in runs.items():
    n = sum(len(pgd[k]["robust"]) for k in common)
    clean = sum(sum(pgd[k]["correct"]) for k in common) / n
    rp = sum(sum(pgd[k]["robust"]) for k in common) / n
    ra = sum(sum(apgd[k]["robust"]) for k in common) / n
    print(f"{prefix}: n={n} clean {clean:.4f} pgd50 {rp:.4f} apgd {ra:.4f} gap {100 * (rp - ra):.2f} points")
