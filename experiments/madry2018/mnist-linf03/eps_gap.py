"""APGD-CE+DLR vs PGD-50 (step 0.01, 3 restarts) robust accuracy at several eps on the first N
MNIST test images (one thread): where, in eps, does the gap between the two attacks sit?

usage: python experiments/madry2018/mnist-linf03/eps_gap.py CKPT N EPS[,EPS...]
e.g.   python experiments/madry2018/mnist-linf03/eps_gap.py artifacts/madry2018/mnist-linf03/llr1-10ep/model.safetensors 1000 0.2,0.25,0.3"""
import sys

import torch

import robrep
from robrep.attacks import apgd, pgd
from robrep.data import load_dataset

torch.set_num_threads(1)
ckpt, n = sys.argv[1], int(sys.argv[2])
eps_list = [float(e) for e in sys.argv[3].split(",")]
model = robrep.load(ckpt).eval()
x, y = load_dataset("mnist", "test").tensors()
x, y = x[:n], y[:n]
for eps in eps_list:
    tm = robrep.threat("linf", eps)
    g = torch.Generator().manual_seed(0)
    rob_pgd, rob_apgd = [], []
    for s in range(0, n, 250):
        xb, yb = x[s:s + 250], y[s:s + 250]
        rob_pgd.append(~pgd(model, xb, yb, tm, steps=50, step_size=0.01, restarts=3, generator=g).success)
        ce = ~apgd(model, xb, yb, tm, steps=100, loss="ce", generator=g).success
        dlr = ~apgd(model, xb, yb, tm, steps=100, loss="dlr", generator=g).success
        rob_apgd.append(ce & dlr)
    rp = torch.cat(rob_pgd).float().mean().item()
    ra = torch.cat(rob_apgd).float().mean().item()
    print(f"eps {eps}: pgd50x3 {rp:.4f} apgd {ra:.4f} gap {100 * (rp - ra):.2f}", flush=True)
