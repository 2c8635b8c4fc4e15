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


def _need(name: str):  # type: ignore[no-untyped-def]
    import robrep
    from robrep.errors import DataNotFoundError

    try:
        return robrep.load_dataset(name, "test")
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
