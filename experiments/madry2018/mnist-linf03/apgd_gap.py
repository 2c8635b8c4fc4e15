"""Why does APGD-CE+DLR beat PGD-50 (CE, step 0.01, 3 restarts) on an MNIST linf-0.3 model?

For the first N test images: robust flags under PGD-50x3, APGD-CE and APGD-DLR separately,
and, for the examples only APGD breaks, the size of the CE input gradient at the clean point and
at PGD's final iterate (exact zeros mean a saturated softmax: sign(0) = 0 stops PGD), and the
clean logit margin. usage: python experiments/madry2018/mnist-linf03/apgd_gap.py CKPT [N]"""
import sys

import torch

import robrep
from robrep.attacks import apgd, pgd
from robrep.data import load_dataset

ck = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
model = robrep.load(ck).eval()
x, y = load_dataset("mnist", "test").tensors()
x, y = x[:n], y[:n]
tm = robrep.threat("linf", 0.3)
g = torch.Generator().manual_seed(0)
rp, ra_ce, ra_dlr, xs = [], [], [], []
for s in range(0, n, 250):
    xb, yb = x[s:s + 250], y[s:s + 250]
    r = pgd(model, xb, yb, tm, steps=50, step_size=0.01, restarts=3, generator=g)
    rp.append(~r.success)
    xs.append(r.x_adv)
    ra_ce.append(~apgd(model, xb, yb, tm, steps=100, loss="ce", generator=g).success)
    ra_dlr.append(~apgd(model, xb, yb, tm, steps=100, loss="dlr", generator=g).success)
rp, ra_ce, ra_dlr, xp = torch.cat(rp), torch.cat(ra_ce), torch.cat(ra_dlr), torch.cat(xs)
print(f"n={n}: pgd50x3 {rp.float().mean():.4f}  apgd-ce {ra_ce.float().mean():.4f}  apgd-dlr {ra_dlr.float().mean():.4f}"
      f"  apgd-ce+dlr {(ra_ce & ra_dlr).float().mean():.4f}")
gap = rp & ~(ra_ce & ra_dlr)
print(f"only APGD breaks: {int(gap.sum())} (by CE {int((rp & ~ra_ce).sum())}, by DLR {int((rp & ~ra_dlr).sum())})")


def grad_stats(xx, yy):
    xx = xx.clone().requires_grad_(True)
    out = model(xx)
    loss = torch.nn.functional.cross_entropy(out, yy, reduction="sum")
    (gr,) = torch.autograd.grad(loss, xx)
    top2 = out.topk(2, dim=1).values
    margin = out.gather(1, yy[:, None])[:, 0] - torch.where(out.argmax(1) == yy, top2[:, 1], top2[:, 0])
    return gr.flatten(1).abs().sum(1), (gr.flatten(1) == 0).float().mean(1), margin.detach()


for name, mask in (("gap examples", gap), ("robust under both", rp & ra_ce & ra_dlr)):
    idx = mask.nonzero()[:, 0][:200]
    if len(idx) == 0:
        continue
    g0, z0, m0 = grad_stats(x[idx], y[idx])
    g1, z1, _ = grad_stats(xp[idx], y[idx])
    print(f"{name} ({len(idx)}): clean margin median {m0.median():.1f}; |grad|_1 clean median {g0.median():.2e},"
          f" exactly-zero grad coords {z0.mean():.3f}; at PGD final |grad|_1 median {g1.median():.2e},"
          f" zero coords {z1.mean():.3f}, all-zero gradients {(g1 == 0).float().mean():.3f}")
