"""Shared fixtures. Data sets are found through ROBREP_DATA (default: ../shared/data beside the
repository when present). A missing data set skips a test locally and fails it in CI
(ROBREP_REQUIRE_DATA=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("ROBREP_PROGRESS", "0")
if not os.environ.get("ROBREP_DATA") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["ROBREP_DATA"] = str(REPO.parent / "shared" / "data")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models (two threads wait for each other on them);
    use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _need(name: str, split: str = "test"):  # type: ignore[no-untyped-def]
    import robrep
    from robrep.errors import DataNotFoundError

    try:
        return robrep.load_dataset(name, split)
    except DataNotFoundError as e:
        if os.environ.get("ROBREP_REQUIRE_DATA") == "1":
            pytest.fail(f"data set {name} missing in CI: {e}")
        pytest.skip(f"{name} not available: {e}")


@pytest.fixture(scope="session")
def mnist_test():
    return _need("mnist")


@pytest.fixture(scope="session")
def fmnist_test():
    return _need("fashion-mnist")


@pytest.fixture(scope="session")
def demo_data():
    import robrep

    return robrep.load_dataset("demo", "train"), robrep.load_dataset("demo", "test")


@pytest.fixture(scope="session")
def tiny_trained(demo_data, tmp_path_factory):
    """A small CNN trained for 2 epochs on the bundled demo data (standard), ~75% accuracy."""
    import robrep

    tr, te = demo_data
    out = tmp_path_factory.mktemp("tiny")
    cfg = robrep.TrainConfig(model="small-cnn", dataset="demo", epochs=2, batch_size=64, lr=0.05, eval_n=0, seed=0)
    res = robrep.train(cfg, out, train_data=tr, show_progress=False)
    return res.model.eval(), out / "model.safetensors"


# --- small adversarially trained models of the reproductions' data sets (shared by the attack tests)


def _tiny_cnn() -> torch.nn.Module:
    """ELU, not ReLU: a tiny ReLU CNN adversarially trained at MNIST's eps 0.3 learns dead units whose
    input gradient is exactly zero on its 'robust' points (masked gradients, which the flags report)."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ELU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ELU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


def train_tiny_robust(data, eps: float, steps: int = 250, seed: int = 0) -> torch.nn.Module:
    """A tiny CNN adversarially trained (PGD-2, linf ``eps``) for ``steps`` Adam steps of 64 images."""
    import robrep

    torch.manual_seed(seed)
    x, y = data.tensors()
    x = x.float() / 255 if not x.is_floating_point() else x
    model = _tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    thr = robrep.threat("linf", eps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(x), (64,), generator=g)
        xa = robrep.attacks.pgd_perturb(model.eval(), x[i], y[i], thr, steps=2, step_size=1.25 * eps, generator=g)
        loss = torch.nn.functional.cross_entropy(model.train()(xa), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _train_test(name: str):  # type: ignore[no-untyped-def]
    return _need(name, "train"), _need(name, "test")


@pytest.fixture(scope="session")
def mnist_model():
    """(tiny CNN adversarially trained on MNIST at linf 0.3, MNIST test set)."""
    tr, te = _train_test("mnist")
    return train_tiny_robust(tr, 0.3), te


@pytest.fixture(scope="session")
def fmnist_model():
    """(tiny CNN adversarially trained on Fashion-MNIST at linf 0.1, Fashion-MNIST test set)."""
    tr, te = _train_test("fashion-mnist")
    return train_tiny_robust(tr, 0.1), te
