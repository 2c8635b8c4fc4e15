"""Robust accuracy of the finished chunks of the MNIST evaluations (PGD-50x3 and APGD), paired
on the chunks both have finished; run at any time while `robrep eval --out ... --resume` works.
usage: python experiments/madry2018/mnist-linf03/partial_eval.py [PREFIX]  (default artifacts/madry2018/mnist-linf03/llr1-10ep; reads PREFIX-eval-pgd50/, PREFIX-eval-apgd/)"""
import glob
import json
import sys

PREFIX = sys.argv[1] if len(sys.argv) > 1 else "artifacts/madry2018/mnist-linf03/llr1-10ep"


def load(d):
    return {f.split("/")[-1]: json.load(open(f))["result"] for f in sorted(glob.glob(f"{PREFIX}-eval-{d}/chunks/*.json"))}

p, a = load("pgd50"), load("apgd")
for name, d in (("pgd50", p), ("apgd", a)):
    n = sum(len(c["robust"]) for c in d.values())
    if n:
        print(f"{name}: {len(d)} chunks, n={n}, clean {sum(sum(c['correct']) for c in d.values())/n:.4f}, "
              f"robust {sum(sum(c['robust']) for c in d.values())/n:.4f}")
both = sorted(set(p) & set(a))
if both:
    n = sum(len(p[k]["robust"]) for k in both)
    rp = sum(sum(p[k]["robust"]) for k in both) / n
    ra = sum(sum(a[k]["robust"]) for k in both) / n
    worst = sum(sum(x and y for x, y in zip(p[k]["robust"], a[k]["robust"])) for k in both) / n
    print(f"paired on {len(both)} chunks (n={n}): pgd50 {rp:.4f}, apgd {ra:.4f}, gap {100*(rp-ra):.2f} points, worst-case of both {worst:.4f}")
