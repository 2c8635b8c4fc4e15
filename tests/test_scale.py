"""Jobs split across torchrun ranks (gloo on CPU) give the single-process result."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from robrep.errors import InputError
from robrep.io.chunks import ChunkStore, run_chunks
from robrep.io.shard import Shard, check_world, current_shard, threads_per_rank


def test_shard_assignment_covers_every_index_once() -> None:
    idx = [0, 2, 3, 5, 7, 8, 11]
    for world in (1, 2, 3, 7):
        parts = [Shard(r, world).assign(idx) for r in range(world)]
        assert sorted(i for p in parts for i in p) == idx
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_current_shard_reads_torchrun_variables() -> None:
    assert current_shard({}) == Shard()
    s = current_shard({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (s.rank, s.world_size, s.local_rank, s.local_world_size, s.active, s.is_main) == (3, 4, 1, 2, True, False)
    with pytest.raises(InputError, match="torchrun"):
        current_shard({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(InputError, match="not an integer"):
        current_shard({"WORLD_SIZE": "two"})
    assert threads_per_rank(Shard(0, 2, 0, 2), 16) == 8
    assert threads_per_rank(Shard(0, 4, 0, 4), 2) == 1
    with pytest.raises(InputError, match="nproc-per-node <= 3"):
        check_world(Shard(0, 4, 0, 4), 3)


def test_single_process_run_chunks_unchanged(tmp_path: Path) -> None:
    store = ChunkStore.open(tmp_path, {"a": 1}, 4)
    assert run_chunks(store, 4, lambda k: {"v": k * k}, shard=Shard()) == [{"v": k * k} for k in range(4)]
    with pytest.raises(InputError, match="--out"):
        run_chunks(None, 4, lambda k: k, shard=Shard(0, 2))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ROBREP_PROGRESS": "0"}


def _robrep(args: list[str], ranks: int = 1) -> subprocess.CompletedProcess[str]:
    pre = [sys.executable, "-m", "robrep"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
        "--master_port", str(_port()), "-m", "robrep"]
    return subprocess.run(pre + args, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    import robrep

    torch.manual_seed(0)
    model = robrep.create_model("small-cnn", dataset="demo")
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    robrep.save_model(path, model, {"dataset": "demo"})
    return path


def _certify(ckpt: Path, out: Path, extra: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    return ["certify", "--checkpoint", str(ckpt), "--dataset", "demo", "--sigma", "0.25", "--num-images", "12", "--n0", "8",
            "--samples", "64", "--batch-size", "64", "--chunk-size", "3", "--out", str(out), "--quiet", "--device", "cpu", *extra]


def _rows(out: Path) -> list[dict]:
    rows = json.loads((out / "per_image.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _result(out: Path) -> dict:
    res = json.loads((out / "result.json").read_text())
    return {k: v for k, v in res.items() if k not in ("seconds", "samples_per_second", "chunks_resumed")}


def test_certify_two_ranks_equal_one_rank_and_resume_across_world_sizes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    one = _robrep(_certify(tiny_checkpoint, tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = _robrep(_certify(tiny_checkpoint, tmp_path / "two"), ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _rows(tmp_path / "two") == _rows(tmp_path / "one")
    assert _result(tmp_path / "two") == _result(tmp_path / "one")
    assert two.stdout.count("smoothed accuracy") == 1  # rank 0 alone prints
    # a rank that died loses only its unfinished chunks: drop two, resume with ONE process
    chunks = sorted((tmp_path / "two" / "chunks").glob("chunk-*.json"))
    assert len(chunks) == 4
    for f in chunks[1::2]:
        f.unlink()
    again = _robrep(_certify(tiny_checkpoint, tmp_path / "two", ["--resume"]))
    assert again.returncode == 0, again.stderr[-2000:]
    assert _rows(tmp_path / "two") == _rows(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "result.json").read_text())["chunks_resumed"] == 2


def test_eval_two_ranks_equal_one_rank(tiny_checkpoint: Path, tmp_path: Path) -> None:
    args = ["eval", "--checkpoint", str(tiny_checkpoint), "--dataset", "demo", "--attack", "pgd", "--eps", "0.1",
            "--steps", "3", "--num-images", "40", "--chunk-size", "10", "--quiet", "--device", "cpu"]
    one = _robrep([*args, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _robrep([*args, "--out", str(tmp_path / "two")], ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _result(tmp_path / "two") == _result(tmp_path / "one")
    assert json.loads((tmp_path / "one" / "result.json").read_text())["robust_accuracy"] is not None


def test_distributed_refusals_are_one_line_and_every_rank_fails(tiny_checkpoint: Path, tmp_path: Path) -> None:
    first = _robrep(_certify(tiny_checkpoint, tmp_path / "run"), ranks=2)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {f.name: f.read_bytes() for f in (tmp_path / "run" / "chunks").iterdir()}
    # another job pointed at the same folder with other settings: refused by the fingerprint
    other = _robrep(_certify(tiny_checkpoint, tmp_path / "run", ["--resume", "--sigma", "0.5"]), ranks=2)
    assert other.returncode != 0
    errors = [line for line in other.stderr.splitlines() if line.startswith("robrep: error:")]
    assert len(errors) == 1 and "another configuration" in errors[0] and "sigma" in errors[0], other.stderr[-2000:]
    assert {f.name: f.read_bytes() for f in (tmp_path / "run" / "chunks").iterdir()} == before  # nothing lost
    # more ranks than chunks
    small = _robrep(_certify(tiny_checkpoint, tmp_path / "small", ["--num-images", "3"]), ranks=2)
    assert small.returncode != 0 and "nproc-per-node <= 1" in small.stderr
    # NCCL on a CPU machine: refused with the flag that works
    script = ("import sys; from robrep.io.shard import current_shard, init_distributed\n"
              "from robrep.errors import InputError\n"
              "try:\n    init_distributed(current_shard(), 'cpu', backend='nccl')\n"
              "except InputError as e:\n    print('ERR', e); sys.exit(2)\n")
    nccl = subprocess.run([sys.executable, "-c", script], env={**ENV, "WORLD_SIZE": "2", "RANK": "0"},
                          capture_output=True, text=True, timeout=60)
    assert nccl.returncode == 2 and "gloo" in nccl.stdout


def test_transfer_sweep_two_ranks_equal_one_rank(tmp_path: Path) -> None:
    import torch

    import robrep

    sources = []
    for name in ("a", "b"):
        torch.manual_seed(len(name) + 3 * (name == "b"))
        m = robrep.create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), width=2, feat_dim=8)
        sources.append(f"{name}={robrep.save_model(tmp_path / f'{name}.safetensors', m, {'dataset': 'demo'})}")
    args = ["transfer-sweep", "--sources", *sources, "--targets", "demo", "--fractions", "0.02", "--modes", "fixed",
            "--seeds", "0", "1", "--epochs", "1", "--eval-eps", "0.1", "--eval-steps", "2", "--eval-n", "20", "--quiet",
            "--device", "cpu"]

    def cells(out: Path) -> dict[str, dict]:
        got = {}
        for f in sorted((out / "cells").glob("*.json")):
            rec = json.loads(f.read_text())
            got[f.name] = {k: v for k, v in rec["metrics"].items() if "second" not in k}
        return got

    one = _robrep([*args, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _robrep([*args, "--out", str(tmp_path / "two")], ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert len(cells(tmp_path / "one")) == 4 and cells(tmp_path / "two") == cells(tmp_path / "one")
    assert (tmp_path / "two" / "summary.json").is_file()


def _json_line(p: subprocess.CompletedProcess[str]) -> dict:
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, p.stdout[-2000:]  # rank 0 alone prints
    return json.loads(lines[0])


def _synbench(ckpt: Path, out: Path, extra: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    return ["synbench", "--checkpoint", str(ckpt), "--scales", "0.5", "1", "2", "4", "--eps", "0", "0.2", "--n-train", "48",
            "--n-test", "40", "--batch-size", "32", "--out", str(out), "--json", "--quiet", "--device", "cpu", "--precision", "fp32",
            *extra]


def _no_time(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "seconds"}


def test_synbench_two_ranks_equal_one_rank_and_resume_across_world_sizes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import robrep
    from robrep.evaluate.synbench import synbench

    one = _robrep(_synbench(tiny_checkpoint, tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = _robrep(_synbench(tiny_checkpoint, tmp_path / "two"), ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    res = _no_time(json.loads((tmp_path / "one" / "result.json").read_text()))
    assert _no_time(json.loads((tmp_path / "two" / "result.json").read_text())) == res
    assert _no_time(_json_line(two)) == _no_time(_json_line(one)) == res
    # the chunked run equals the plain in-process computation (nothing stored)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocesses' summation order
    try:
        ref = synbench(robrep.load(tiny_checkpoint).eval(), scales=[0.5, 1, 2, 4], eps=[0, 0.2], n_train=48, n_test=40,
                       batch_size=32, device="cpu").to_dict()
    finally:
        torch.set_num_threads(threads)
    assert res["scores"] == ref["scores"] and res["accuracy"] == ref["accuracy"] and res["bound"] == ref["bound"]
    # ranks lost two scales: resume them with ONE process; the finished ones are read, not rewritten
    chunks = sorted((tmp_path / "two" / "chunks").glob("chunk-*.json"))
    assert len(chunks) == 4
    kept = {f.name: f.stat().st_mtime_ns for f in chunks[::2]}
    for f in chunks[1::2]:
        f.unlink()
    again = _robrep(_synbench(tiny_checkpoint, tmp_path / "two", ["--resume"]))
    assert again.returncode == 0, again.stderr[-2000:]
    assert _no_time(json.loads((tmp_path / "two" / "result.json").read_text())) == res
    assert {n: (tmp_path / "two" / "chunks" / n).stat().st_mtime_ns for n in kept} == kept
    # other settings in the same folder: refused on every rank, one line, nothing lost
    before = {f.name: f.read_bytes() for f in (tmp_path / "two" / "chunks").iterdir()}
    other = _robrep(_synbench(tiny_checkpoint, tmp_path / "two", ["--resume", "--n-train", "64"]), ranks=2)
    errors = [line for line in other.stderr.splitlines() if line.startswith("robrep: error:")]
    assert other.returncode != 0 and len(errors) == 1 and "n_train" in errors[0], other.stderr[-2000:]
    assert {f.name: f.read_bytes() for f in (tmp_path / "two" / "chunks").iterdir()} == before
    # without --resume a finished folder is not silently recomputed
    plain = _robrep(_synbench(tiny_checkpoint, tmp_path / "one"))
    assert plain.returncode == 2 and "--resume" in plain.stderr


VULN = ["vulnerability", "--dataset", "demo", "--layer", "penultimate,logits", "--eps", "0.05", "0.1", "--num-images", "96",
        "--critic", "mlp", "--critic-hidden", "16", "--n-critics", "2", "--steps", "6", "--adv-steps", "4", "--batch-size", "32",
        "--attack-steps", "1", "--eval-attack-steps", "2", "--eval-batches", "1", "--precision", "fp32", "--json", "--quiet",
        "--device", "cpu"]


def test_vulnerability_two_ranks_equal_one_rank(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """2 layers x 2 eps = 4 cells; on 2 ranks each rank estimates the clean MI of a layer for
    itself, and every cell still equals the single-process run (which estimates it once)."""
    args = [*VULN, "--checkpoint", str(tiny_checkpoint)]
    one = _robrep([*args, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _robrep([*args, "--out", str(tmp_path / "two")], ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _json_line(one), _json_line(two)
    assert len(a["results"]) == 4 and [r["layer"] for r in a["results"]] == ["penultimate"] * 2 + ["logits"] * 2
    assert b == a
    rec = json.loads((tmp_path / "two" / "record.json").read_text())
    assert rec["metrics"]["results"] == a["results"]
    # no --out: the same numbers, nothing stored
    plain = _robrep(args)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert _json_line(plain) == a


def _profile(ckpt: Path, out: Path) -> list[str]:
    tiny = {"probe_train_n": 200, "test_n": 96, "probe_eval_n": 16, "probe_eval_steps": 2, "mi_n": 96, "mi_critics": 2,
            "mi_critic_hidden": 16, "mi_steps": 4, "mi_batch": 32, "mi_attack_steps": 1, "mi_eval_attack_steps": 1,
            "mi_eval_batches": 1, "synbench_scales": "1,3", "synbench_n": 32, "sensitivity_n": 8, "sensitivity_steps": 2,
            "cert_n": 4, "cert_n0": 8, "cert_samples": 24, "picture_n": 2, "vis_steps": 2, "smoothgrad_samples": 2}
    sets = [a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]
    return ["profile", str(ckpt), "--dataset", "demo", "--eps", "0.1", "--seed", "3", *sets, "--out", str(out), "--quiet",
            "--device", "cpu", "--precision", "fp32", "--json"]


def test_profile_two_ranks_write_the_single_process_card(tiny_checkpoint: Path, tmp_path: Path) -> None:
    def card(out: Path) -> dict:
        c = json.loads((out / "card.json").read_text())
        return {k: v for k, v in c.items() if k not in ("seconds", "environment")}

    one = _robrep(_profile(tiny_checkpoint, tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = _robrep(_profile(tiny_checkpoint, tmp_path / "two"), ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert card(tmp_path / "two") == card(tmp_path / "one")
    assert set(card(tmp_path / "one")["curves"]) == {"sensitivity", "vulnerability", "synbench", "certified"}
    assert len(list((tmp_path / "two" / "chunks").glob("chunk-*.json"))) == 5  # the measures after the probe
    assert (tmp_path / "two" / "inversion.png").stat().st_size > 0
    assert set(json.loads((tmp_path / "two" / "card.json").read_text())["seconds"]) >= {"SynBench", "pictures"}
    _json_line(two)


TRAIN = ["train", "--dataset", "demo", "--model", "small-cnn", "--epochs", "2", "--batch-size", "64", "--train-fraction",
         "0.04", "--eval-n", "0", "--lr", "0.05", "--quiet", "--device", "cpu", "--objective", "standard",
         "--precision", "fp32"]  # --amp below asks for bf16 explicitly


@pytest.mark.parametrize("layout", [["--channels-last"], ["--amp"]])
def test_training_resumes_with_another_world_size(tmp_path: Path, layout: list[str]) -> None:
    """2 ranks train epoch 1 (and 2: its checkpoint is then lost); 1 rank resumes epoch 2: the
    weights equal an uninterrupted 1-rank run with the same global batch."""
    from safetensors.torch import load_file

    one = _robrep([*TRAIN, *layout, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _robrep([*TRAIN, *layout, "--out", str(tmp_path / "two")], ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    tol = 2e-2 if layout == ["--amp"] else 2e-5  # bf16 sums reduce in another order on 2 ranks
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= tol
    ck = sorted((tmp_path / "two" / "checkpoints").iterdir())
    assert [c.name for c in ck] == ["epoch-0000", "epoch-0001"]  # epochs count from 0
    import shutil

    shutil.rmtree(ck[-1])
    (tmp_path / "two" / "model.safetensors").unlink()
    again = _robrep([*TRAIN, *layout, "--out", str(tmp_path / "two"), "--resume"])
    assert again.returncode == 0, again.stderr[-2000:]
    c = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert max(float((a[k] - c[k]).abs().max()) for k in a) <= tol
    rec = json.loads((tmp_path / "two" / "record.json").read_text())
    assert rec["world_size"] == 1


def _torchrun_script(path: Path, script: str) -> subprocess.CompletedProcess[str]:
    path.write_text(script)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(_port()), str(path)],
                          env=ENV, capture_output=True, text=True, timeout=120)


def test_unshared_out_folder_is_detected(tmp_path: Path) -> None:
    # each rank gets a folder of its own, as on nodes that do not share a file system
    script = ("import os, sys; from robrep.io.shard import current_shard, init_distributed, check_peers\n"
              "from robrep.errors import InputError\n"
              "s = current_shard(); init_distributed(s, 'cpu')\n"
              f"base = {str(tmp_path)!r}\n"
              "try:\n    check_peers(os.path.join(base, FOLDER), s)\n"
              "except InputError as e:\n    print('ERR', e); sys.exit(2)\n"
              "import torch.distributed as dist; dist.destroy_process_group()\n"
              "print('OK')\n")
    p = _torchrun_script(tmp_path / "apart.py", script.replace("FOLDER", "'rank%d' % s.rank"))
    assert p.returncode != 0
    # each rank fails alike (torchrun may stop the slower one before it prints)
    assert p.stdout.count("ERR") >= 1 and "not shared between ranks" in p.stdout, p.stdout + p.stderr[-2000:]
    ok = _torchrun_script(tmp_path / "shared.py", script.replace("FOLDER", "'shared'"))
    assert ok.returncode == 0 and ok.stdout.count("OK") == 2, ok.stdout + ok.stderr[-2000:]


SHARDED_COMMANDS = ["certify", "eval", "profile", "synbench", "transfer-sweep", "vulnerability"]


@pytest.mark.parametrize("command", SHARDED_COMMANDS)
def test_every_option_of_a_sharded_command_passes_through_torchrun(command: str) -> None:
    """torchrun's parser takes abbreviations of its own options (``--n`` -> ``--nnodes``...);
    each option of a command that runs under torchrun has a spelling that reaches robrep."""
    import argparse
    import contextlib
    import io

    from torch.distributed.run import get_args_parser

    from robrep.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    torchrun = get_args_parser()
    for action in sub._actions:
        if not action.option_strings or action.dest == "help":
            continue
        reaches = []
        for opt in action.option_strings:
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    ns = torchrun.parse_args(["-m", "robrep", command, opt, "1"])
                reaches.append(opt in ns.training_script_args)
            except SystemExit:
                reaches.append(False)
        assert any(reaches), f"robrep {command} {action.option_strings}: torchrun takes every spelling; add one it does not"
