"""Small shared machinery: the eval-mode context manager and the resumable chunk loop."""

from __future__ import annotations

import json

import pytest
from torch import nn

from robrep._modes import eval_mode
from robrep.errors import InputError
from robrep.io.chunks import ChunkStore, run_chunks


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))


def test_eval_mode_sets_and_restores_every_module() -> None:
    a, b = _net(), _net()
    b.eval()
    a[1].eval()  # a mixed state inside a is flattened on exit to a's own mode (module.train(was))
    with eval_mode(a, b):
        assert not any(m.training for m in (*a.modules(), *b.modules()))
    assert a.training and all(m.training for m in a.modules())
    assert not b.training


def test_eval_mode_restores_after_an_exception_and_can_be_disabled() -> None:
    a = _net()
    with pytest.raises(RuntimeError), eval_mode(a):
        raise RuntimeError("boom")
    assert a.training
    with eval_mode(a, enable=False):
        assert a.training and a[2].training
    a.eval()
    with eval_mode(a, enable=False):
        a.train()  # changed inside the block, restored on exit
    assert not a.training


class _Killed(Exception):
    pass


def test_run_chunks_computes_missing_chunks_and_resumes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    die = [True]

    def compute(k: int) -> dict[str, int]:
        calls.append(k)
        if k == 2 and die[0]:
            raise _Killed  # the first run dies in chunk 2
        return {"k": k, "square": k * k}

    fp = {"kind": "test", "n": 4}
    with pytest.raises(_Killed):
        run_chunks(ChunkStore.open(tmp_path, fp, 4), 4, compute)
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == ["chunk-00000.json", "chunk-00001.json"]
    calls.clear()
    die[0] = False
    store = ChunkStore.open(tmp_path, fp, 4, resume=True)
    out = run_chunks(store, 4, compute, order=reversed(range(4)))
    assert calls == [3, 2]  # only the missing chunks are computed
    assert out == [{"k": k, "square": k * k} for k in range(4)]  # index order, whatever the walk order
    assert json.loads((tmp_path / "chunks" / "chunk-00003.json").read_text())["result"] == {"k": 3, "square": 9}
    # without a store nothing is written and everything is computed
    calls.clear()
    assert run_chunks(None, 3, compute) == [{"k": k, "square": k * k} for k in range(3)] and calls == [0, 1, 2]


def test_run_chunks_refuses_a_bad_walk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="repeated"):
        run_chunks(None, 2, lambda k: k, order=[0, 0])
    with pytest.raises(InputError, match="every index"):
        run_chunks(None, 2, lambda k: k, order=[1])
    with pytest.raises(InputError, match="opened for 2"):
        run_chunks(ChunkStore.open(tmp_path, {"a": 1}, 2), 3, lambda k: k)


def test_certify_runner_has_no_import_cycle() -> None:
    """The primitives never import the runner (first_order uses smoothing's public helpers)."""
    import ast
    from pathlib import Path

    import robrep.certify.first_order as fo
    import robrep.certify.smoothing as sm

    for mod in (sm, fo):
        tree = ast.parse(Path(mod.__file__).read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "runner" not in names and not any(n and n.endswith("runner") for n in names)
    src = Path(sm.__file__).read_text()
    assert "first_order" not in [n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)]


def test_evaluate_and_train_are_packages_and_calls() -> None:
    """``robrep.evaluate`` / ``robrep.train`` are the packages (attributes reachable) and calling
    them runs their main function, with its signature (no function shadows a package)."""
    import inspect
    import types

    import torch

    import robrep
    from robrep.evaluate import evaluate as evaluate_fn
    from robrep.evaluate import linear_probe
    from robrep.train import train as train_fn

    assert isinstance(robrep.evaluate, types.ModuleType) and isinstance(robrep.train, types.ModuleType)
    assert robrep.evaluate.linear_probe is linear_probe and robrep.train.TrainConfig is robrep.TrainConfig
    assert inspect.signature(robrep.evaluate) == inspect.signature(evaluate_fn)
    assert inspect.signature(robrep.train) == inspect.signature(train_fn)
    torch.manual_seed(0)
    model = robrep.create_model("linear", num_classes=3, input_shape=(1, 4, 4))
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    a = robrep.evaluate(model, (x, y), threat=robrep.threat("linf", 0.1), attack_kwargs={"steps": 3})
    b = evaluate_fn(model, (x, y), threat=robrep.threat("linf", 0.1), attack_kwargs={"steps": 3})
    assert (a.clean_accuracy, a.robust_accuracy) == (b.clean_accuracy, b.robust_accuracy)


def test_config_from_dict_round_trips_and_refuses_unknown_keys() -> None:
    import json

    from robrep.train import TrainConfig
    from robrep.transfer import TransferConfig

    for cfg, kind in ((TrainConfig(milestones=(0.3, 0.9)), "training"), (TransferConfig(), "transfer")):
        back = type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg  # lists from JSON become tuples again
        with pytest.raises(InputError, match=f"unknown {kind} options \\['nope'\\]"):
            type(cfg).from_dict({"nope": 1})


def test_synbench_is_the_module_and_the_call() -> None:
    import importlib
    import inspect
    import types

    import robrep.evaluate
    from robrep.evaluate import synbench
    from robrep.evaluate.synbench import synbench as synbench_fn

    mod = importlib.import_module("robrep.evaluate.synbench")
    assert robrep.evaluate.synbench is mod and synbench is mod and isinstance(mod, types.ModuleType)
    assert callable(mod) and inspect.signature(mod) == inspect.signature(synbench_fn)
    assert mod.plot_synbench is robrep.evaluate.plot_synbench
