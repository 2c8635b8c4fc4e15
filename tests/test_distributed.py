"""Distributed data parallel (torchrun, gloo on CPU) matches single-process training."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

ARGS = ["train", "--dataset", "demo", "--model", "small-cnn", "--epochs", "1", "--batch-size", "64", "--train-fraction", "0.06",
        "--eval-n", "0", "--lr", "0.05", "--quiet", "--device", "cpu", "--precision", "fp32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("objective", [["--objective", "standard"],
                                       ["--objective", "pgd", "--eps", "0.1", "--objective-arg", "steps=2", "--objective-arg", "random_start=false"]])
def test_two_gloo_processes_match_one_process(tmp_path, objective) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBREP_PROGRESS": "0"}
    single = subprocess.run([sys.executable, "-m", "robrep", *ARGS, *objective, "--out", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                          "--master_port", str(_free_port()), "-m", "robrep", *ARGS, *objective, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), (k, float((a[k] - b[k]).abs().max()))
    # and training moved the weights away from their (seeded) initialisation
    import robrep
    from robrep.train.loop import _seed, build_model_for

    torch.manual_seed(_seed(0, -1, 0))
    init = build_model_for(robrep.TrainConfig(), robrep.load_dataset("demo", "test")).state_dict()
    assert all(k in init for k in a)
    assert max(float((a[k] - init[k]).abs().max()) for k in a) > 1e-3
    import json

    rec = json.loads((tmp_path / "two" / "record.json").read_text())
    assert rec["world_size"] == 2
