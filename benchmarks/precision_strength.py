"""Attack strength under mixed precision: robust accuracy of PGD-10 with ``precision="auto"``
(bf16 passes, float32 verdicts and re-check) against float32 PGD-10 on the same images, on
models trained here for the reproductions' threat models.

    python benchmarks/precision_strength.py                  # MNIST, Fashion-MNIST, CIFAR-shape ResNet-18
    python benchmarks/precision_strength.py --n 200 --resnet-steps 30   # smaller
    python benchmarks/precision_strength.py --grid           # standard MNIST CNN, 4 radii x 3 starts

Models (trained at the start, seeds fixed):

* MNIST, ``small-cnn`` PGD-trained at linf 0.3 (quarter of the training set, 2 epochs, PGD-7,
  eps warm-up; the recipe of the vulnerability benchmark), evaluated at linf 0.3;
* Fashion-MNIST, the same recipe at linf 0.1, evaluated at linf 0.1;
* a CIFAR-shape ResNet-18 (3x32x32 inputs, batch norm; trained briefly, standard training, on
  MNIST digits as three-channel 32x32 images, since no CIFAR data is available offline),
  evaluated at linf 2/255 and 4/255.

Per model and radius: clean accuracy, robust accuracy with float32 and with ``auto`` (same images,
same seed), their difference in points (the acceptance bound is +0.3), and the examples each
precision leaves robust that the other breaks. One JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit_steps, machine_info, markdown_table, print_machine  # noqa: E402

import robrep  # noqa: E402
from robrep.attacks import create_attack  # noqa: E402
from robrep.models import create_model  # noqa: E402
from robrep.train import TrainConfig  # noqa: E402


def _robust_cnn(dataset: str, eps: float, out: Path) -> nn.Module:
    cfg = TrainConfig(model="small-cnn", dataset=dataset, objective="pgd", eps=eps, eps_warmup=0.4, epochs=2,
                      optimizer="adam", lr=1e-3, train_fraction=0.25, eval_n=0, seed=0, objective_kwargs={"steps": 7})
    return robrep.train(cfg, out, show_progress=False).model.eval()


def _rgb32(x: torch.Tensor) -> torch.Tensor:
    x = x.float() / 255 if not x.is_floating_point() else x
    return nn.functional.pad(x.expand(-1, 3, -1, -1), (2, 2, 2, 2))


def _cifar_shape_resnet(steps: int) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32))
    return fit_steps(model, robrep.load_dataset("mnist", "train"), torch.optim.Adam(model.parameters(), lr=1e-3), steps,
                     transform=_rgb32)


def _standard_cnn(steps: int = 300) -> nn.Module:
    """``small-cnn`` trained normally for ``steps`` SGD steps of 64 MNIST images (the model of
    ``bench_precision.py``'s MNIST row)."""
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), dataset="mnist")
    return fit_steps(model, robrep.load_dataset("mnist", "train"),
                     torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), steps)


def _robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, precision: str,
            seed: int = 0) -> tuple[torch.Tensor, float]:
    """Per example: classified correctly and not broken by PGD-10 (batches of 250, one seeded
    generator per batch); and the seconds it took."""
    atk = create_attack("pgd", steps=10, precision=precision)
    thr = robrep.threat("linf", eps)
    out = []
    t = time.perf_counter()
    for k, s in enumerate(range(0, len(y), 250)):
        xb, yb = x[s:s + 250], y[s:s + 250]
        with torch.no_grad():
            ok = model(xb).argmax(1) == yb
        res = atk(model, xb, yb, thr, generator=torch.Generator().manual_seed(1000 * seed + k))
        out.append(ok & ~res.success)
    return torch.cat(out), time.perf_counter() - t


def _row(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0) -> list:
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    r32, t32 = _robust(model, x, y, eps, "fp32", seed)
    rau, tau = _robust(model, x, y, eps, "auto", seed)
    a32, aau = float(r32.float().mean()), float(rau.float().mean())
    return [name, f"{eps:.4g}", len(y), clean, a32, aau, round(100 * (aau - a32), 2), int((rau & ~r32).sum()),
            int((r32 & ~rau).sum()), round(t32 / tau, 2)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="test images per model (default: %(default)s)")
    p.add_argument("--resnet-n", type=int, default=500, help="test images for the ResNet-18 (default: %(default)s)")
    p.add_argument("--resnet-steps", type=int, default=100, help="Adam steps of the ResNet-18 (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--grid", action="store_true",
                   help="instead: a standard-trained small-cnn (300 SGD steps) at linf 0.04, 0.06, 0.08, 0.1, three "
                        "random starts each (12 settings), where many images sit near the boundary")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print_machine(machine_info("cpu"))
    tmp = Path(tempfile.mkdtemp(prefix="robrep-precision-strength-"))
    rows = []
    if a.grid:
        model = _standard_cnn()
        x, y = robrep.load_dataset("mnist", "test").head(a.n).tensors()
        for eps in (0.04, 0.06, 0.08, 0.1):
            for seed in range(3):
                rows.append(_row(f"mnist small-cnn, standard, start seed {seed}", model, x, y, eps, seed))
                print(markdown_table(HEAD, rows[-1:]), flush=True)
        _summary(rows)
        return
    for dataset, eps in (("mnist", 0.3), ("fashion-mnist", 0.1)):
        model = _robust_cnn(dataset, eps, tmp / dataset)
        x, y = robrep.load_dataset(dataset, "test").head(a.n).tensors()
        rows.append(_row(f"{dataset} small-cnn, PGD-trained", model, x, y, eps))
        print(markdown_table(HEAD, rows[-1:]), flush=True)
    model = _cifar_shape_resnet(a.resnet_steps)
    x, y = robrep.load_dataset("mnist", "test").head(a.resnet_n).tensors()
    for eps in (2 / 255, 4 / 255):
        rows.append(_row(f"ResNet-18 3x32x32, {a.resnet_steps} steps", model, _rgb32(x), y, eps))
        print(markdown_table(HEAD, rows[-1:]), flush=True)
    _summary(rows)


def _summary(rows: list[list]) -> None:
    print()
    print(markdown_table(HEAD, rows))
    worst = max(r[6] for r in rows)
    print(f"\nlargest excess of auto over float32: {worst:+.2f} points (bound +0.3): {'met' if worst <= 0.3 else 'NOT met'}")
    print(json.dumps({"rows": [dict(zip(KEYS, r)) for r in rows]}, default=float))


HEAD = ["model", "linf eps", "images", "clean", "robust fp32", "robust auto", "auto - fp32 (points)",
        "robust only with auto", "robust only with fp32", "fp32 time / auto time"]
KEYS = ["model", "eps", "n", "clean", "robust_fp32", "robust_auto", "difference_points", "only_auto", "only_fp32",
        "speedup"]

if __name__ == "__main__":
    main()
