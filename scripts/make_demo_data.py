"""Build src/robrep/data/demo_fashion_mnist.npz: a class-balanced Fashion-MNIST subset.

Source: the official Fashion-MNIST files (Xiao, Rasul, Vollgraf 2017, MIT licence), e.g. from
Debian's ``dataset-fashion-mnist`` package. Selection: for each class, the first
``--train-per-class`` training images and the first ``--test-per-class`` test images in file
order (deterministic, no randomness). Run: ``python scripts/make_demo_data.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from robrep.data.core import DEBIAN_FMNIST, read_idx


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--src", default=str(DEBIAN_FMNIST))
    p.add_argument("--train-per-class", type=int, default=500)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--out", default=str(Path(__file__).parents[1] / "src/robrep/data/demo_fashion_mnist.npz"))
    a = p.parse_args()
    src = Path(a.src)
    out = {}
    for split, stem, k in (("train", "train", a.train_per_class), ("test", "t10k", a.test_per_class)):
        x = read_idx(src / f"{stem}-images-idx3-ubyte.gz")
        y = read_idx(src / f"{stem}-labels-idx1-ubyte.gz")
        idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:k] for c in range(10)]))
        out[f"x_{split}"], out[f"y_{split}"] = x[idx], y[idx].astype(np.uint8)
    np.savez_compressed(a.out, **out)
    print(a.out, Path(a.out).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
