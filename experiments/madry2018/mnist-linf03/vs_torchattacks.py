"""Attack-strength check: robrep PGD vs torchattacks PGD/PGDL2 on the MNIST linf-0.3 model,
1000 MNIST test images, PGD-10, R random restarts each (an example counts as broken if any restart
breaks it). Prints robust accuracy per implementation and norm."""
import sys

import torch
import torchattacks

import robrep
from robrep.attacks import pgd
from robrep.data import load_dataset
from robrep.threats import threat

torch.manual_seed(0)
ckpt = sys.argv[1] if len(sys.argv) > 1 else "artifacts/madry2018/mnist-linf03/llr1-10ep/model.safetensors"
R = 5
m = robrep.load(ckpt).eval()
x, y = load_dataset("mnist", split="test").head(1000).tensors()
for norm, eps in (("l2", 2.0), ("linf", 0.3)):
    alpha = 2.5 * eps / 10
    ok_r = torch.ones(len(y), dtype=torch.bool)
    ok_t = torch.ones(len(y), dtype=torch.bool)
    for r in range(R):
        g = torch.Generator().manual_seed(r)
        for i in range(0, len(y), 250):
            xb, yb = x[i:i + 250], y[i:i + 250]
            res = pgd(m, xb, yb, threat(norm, eps), steps=10, step_size=alpha, generator=g)
            ok_r[i:i + 250] &= ~res.success
            torch.manual_seed(1000 * r + i)
            atk = (torchattacks.PGDL2(m, eps=eps, alpha=alpha, steps=10) if norm == "l2"
                   else torchattacks.PGD(m, eps=eps, alpha=alpha, steps=10))
            xa = atk(xb, yb)
            with torch.no_grad():
                ok_t[i:i + 250] &= m(xa).argmax(1) == yb
        print(f"{norm} eps={eps} restarts={r + 1}: robrep {ok_r.float().mean():.4f}  torchattacks {ok_t.float().mean():.4f}", flush=True)
