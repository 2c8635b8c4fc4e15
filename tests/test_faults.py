"""Faults: a training run killed with SIGKILL and resumed ends with the same weights as
an uninterrupted run; checkpoint writes are atomic (a failure or kill mid-write leaves the
previous file intact and loadable)."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import robrep
from robrep.cli import main as cli_main
from robrep.errors import InputError, RobrepError
from robrep.io.atomic import atomic_write_json
from robrep.models import create_model, load_with_meta, save_model

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]

TRAIN_ARGS = ["train", "--model", "small-cnn", "--model-arg", "width=4", "--model-arg", "feat_dim=16", "--dataset", "demo",
              "--train-fraction", "0.2", "--epochs", "5", "--batch-size", "32", "--eval-n", "0", "--quiet", "--device", "cpu",
              "--seed", "3", "--threads", "1"]  # the in-process runs and the child: one thread each


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ROBREP_PROGRESS": "0",
                "PYTHONPATH": str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")})
    return env


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _tensor_bytes(path: Path) -> bytes:
    """The raw tensor section of a safetensors file (everything after the JSON header)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return raw[8 + n:]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, capsys):
    # uninterrupted reference (in-process, one thread like the child)
    ref_out = tmp_path / "ref"
    assert cli_main([*TRAIN_ARGS, "--out", str(ref_out)]) == 0
    # the same run in a child process, killed with SIGKILL at a random moment after epoch 1 is saved
    out = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-m", "robrep", *TRAIN_ARGS, "--out", str(out)], env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "checkpoints" / "epoch-0000" / "state.pt"
    deadline = time.time() + 600  # generous: a loaded CI box can take minutes to import torch
    while not first.exists():
        assert child.poll() is None, f"training child died early: {child.stderr.read().decode()[-500:]}"
        assert time.time() < deadline, "no epoch checkpoint within 600 s"
        time.sleep(0.01)
    t0 = time.time()
    second = out / "checkpoints" / "epoch-0001" / "state.pt"
    while not second.exists():  # one epoch's duration on this machine sizes the kill point
        assert child.poll() is None, f"training child died early: {child.stderr.read().decode()[-500:]}"
        assert time.time() < deadline, "no second epoch checkpoint within 600 s"
        time.sleep(0.005)
    epoch = time.time() - t0
    time.sleep(random.Random(11).uniform(0.0, 0.9) * epoch)  # a 'random' point in epoch 3 (incl. mid-checkpoint)
    assert child.poll() is None, "the child finished before it could be killed; make the run longer"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists(), "the killed run must not have finished"
    done = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("epoch-"))
    assert done and done[-1] < "epoch-0004"
    # resume to the end
    capsys.readouterr()
    assert cli_main([*TRAIN_ARGS, "--out", str(out), "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().err
    a, b = _weights(ref_out / "model.safetensors"), _weights(out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise: same values, no tolerance
    assert _tensor_bytes(ref_out / "model.safetensors") == _tensor_bytes(out / "model.safetensors")
    # the metadata agree too, except wall-clock timings
    ma, mb = load_with_meta(ref_out)[1], load_with_meta(out)[1]
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert strip(ma["history"]) == strip(mb["history"]) and ma["config"] == mb["config"]


def test_resume_refuses_other_configuration(tmp_path, capsys):
    out = tmp_path / "run"
    args = [a if a != "5" else "1" for a in TRAIN_ARGS]  # one epoch
    assert cli_main([*args, "--out", str(out)]) == 0
    good = (out / "model.safetensors").read_bytes()
    rc = cli_main([*args, "--lr", "0.01", "--out", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "another configuration" in err[-1]
    assert (out / "model.safetensors").read_bytes() == good


# ------------------------------------------------------------------------------------------
# atomic writes


def _good_model_file(path: Path):
    m = create_model("small-cnn", width=4, feat_dim=8)
    save_model(path, m, {"tag": "good"})
    return m, path.read_bytes()


def _half_writer(exc: BaseException):
    """A safetensors writer that writes half the file, then fails like a full disk or a crash."""
    from safetensors.torch import save as st_save

    def writer(tensors, filename, metadata=None):
        data = st_save(tensors, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
        raise exc

    return writer


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("crash mid-write"),
                                 KeyboardInterrupt()])
def test_save_model_failure_mid_write_keeps_previous_file(tmp_path, monkeypatch, exc):
    import safetensors.torch

    path = tmp_path / "model.safetensors"
    m, good = _good_model_file(path)
    monkeypatch.setattr(safetensors.torch, "save_file", _half_writer(exc))
    other = create_model("small-cnn", width=4, feat_dim=8)
    expected = RobrepError if isinstance(exc, OSError) else type(exc)
    with pytest.raises(expected) as ei:
        save_model(path, other, {"tag": "new"})
    if isinstance(exc, OSError):
        assert "free space" in str(ei.value) and "\n" not in str(ei.value)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"], "temporary file left behind"
    m2, meta = load_with_meta(path)
    assert meta["tag"] == "good"
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(m2(x), m.eval()(x))


def test_kill_mid_write_in_child_keeps_previous_file(tmp_path):
    """A real SIGKILL while the new file is half written: the old file is untouched and loads."""
    path = tmp_path / "model.safetensors"
    _, good = _good_model_file(path)
    script = textwrap.dedent(f"""
        import os, signal, safetensors.torch
        from safetensors.torch import save as st_save
        from robrep.models import create_model, save_model
        def writer(tensors, filename, metadata=None):
            data = st_save(tensors, metadata=metadata)
            with open(filename, "wb") as f:
                f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        safetensors.torch.save_file = writer
        save_model({str(path)!r}, create_model("small-cnn", width=4, feat_dim=8), {{"tag": "new"}})
    """)
    r = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()[-400:]
    assert path.read_bytes() == good
    assert load_with_meta(path)[1]["tag"] == "good"
    leftovers = [p for p in tmp_path.iterdir() if p.name != "model.safetensors"]
    assert all(p.name.startswith(".model.safetensors.") for p in leftovers)  # hidden temp, never the real name


def test_atomic_json_failure_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    atomic_write_json(path, {"a": 1})
    good = path.read_bytes()
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(RobrepError, match="cannot write"):
        atomic_write_json(path, {"a": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == good and json.loads(good) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_epoch_checkpoint_failure_keeps_previous_epoch(tmp_path, monkeypatch, demo_data):
    """A failure while writing epoch 2's checkpoint leaves epoch 1's folder complete; resume works."""
    tr, _ = demo_data
    tr = tr.fraction(0.05, seed=0)
    cfg = robrep.TrainConfig(model="small-cnn", dataset="demo", epochs=3, batch_size=64, eval_n=0, seed=1,
                             model_kwargs={"width": 4, "feat_dim": 8}, device="cpu")
    ref = robrep.train(cfg, tmp_path / "ref", train_data=tr, show_progress=False)
    import importlib

    loop = importlib.import_module("robrep.train.loop")

    real_save = loop.torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2's state.pt
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(loop.torch, "save", flaky_save)
    with pytest.raises(RobrepError, match="free space"):
        robrep.train(cfg, tmp_path / "run", train_data=tr, show_progress=False)
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    monkeypatch.setattr(loop.torch, "save", real_save)
    assert loop.find_latest_checkpoint(tmp_path / "run").name == "epoch-0000"
    res = robrep.train(cfg, tmp_path / "run", train_data=tr, show_progress=False, resume=True)
    for (k, a), b in zip(ref.model.state_dict().items(), res.model.state_dict().values()):
        assert torch.equal(a, b), k


# ------------------------------------------------------------------------------------------
# resumable evaluations: `robrep eval` and `robrep certify` in chunks (--out, --resume)

# The child runs the CLI with one change: storing chunk 1 and later takes "forever", so a kill
# after the first chunk file appears always lands while chunk 1 is being finished.
_CHILD = textwrap.dedent("""
    import sys, time
    import robrep.io.chunks as chunks
    write = chunks.ChunkStore.write
    def slow_write(self, index, result):
        if index >= 1:
            time.sleep(600)
        write(self, index, result)
    chunks.ChunkStore.write = slow_write
    from robrep.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture
def one_thread():
    """The child runs with OMP_NUM_THREADS=1; in-process runs compared with it use one thread too."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cli_json(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert cli_main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _kill_after_first_chunk(argv: list[str], out: Path) -> None:
    """Run ``robrep argv`` in a child process and SIGKILL it once chunk 0 is stored."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *argv], env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    first = out / "chunks" / "chunk-00000.json"
    deadline = time.time() + 600
    while not first.exists():
        assert child.poll() is None, f"child died early: {child.stderr.read().decode()[-500:]}"
        assert time.time() < deadline, "no chunk file within 600 s"
        time.sleep(0.01)
    assert child.poll() is None, "the child finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert [p.name for p in (out / "chunks").glob("chunk-*.json")] == ["chunk-00000.json"]
    assert not (out / "result.json").exists()


def _eval_argv(ck: Path, out: Path, *extra: str) -> list[str]:
    # 120 images in chunks of 40, batches of 16 (chunks end mid-batch); a short PGD whose random
    # start decides ~5 % of the images, so a wrong random stream in any chunk shows
    return ["eval", "--checkpoint", str(ck), "--dataset", "demo", "--n", "120", "--chunk-size", "40", "--batch-size",
            "16", "--eps", "0.1", "--steps", "2", "--step-size", "0.04", "--device", "cpu", "--quiet", "--json",
            "--out", str(out), *extra]


def _chunk_results(out: Path) -> list:
    return [json.loads(p.read_text())["result"] for p in sorted((out / "chunks").glob("chunk-*.json"))]


def test_eval_sigkill_then_resume_equals_uninterrupted(tmp_path, capsys, tiny_trained, one_thread):
    model, ck = tiny_trained
    ref = _cli_json(_eval_argv(ck, tmp_path / "ref"), capsys)
    assert ref["chunks_done"] == 3 and ref["chunks_resumed"] == 0 and ref["n"] == 120
    assert 0 < ref["robust_accuracy"] < ref["clean_accuracy"]  # the attack breaks some but not all images
    out = tmp_path / "killed"
    _kill_after_first_chunk(_eval_argv(ck, out), out)
    first = out / "chunks" / "chunk-00000.json"
    stamp, raw = first.stat().st_mtime_ns, first.read_bytes()
    time.sleep(0.05)  # a rewrite would get a later mtime
    res = _cli_json(_eval_argv(ck, out, "--resume"), capsys)
    assert res["chunks_done"] == 3 and res["chunks_resumed"] == 1
    assert first.stat().st_mtime_ns == stamp and first.read_bytes() == raw  # chunk 0 was not recomputed
    assert {k: v for k, v in res.items() if k != "chunks_resumed"} == {k: v for k, v in ref.items() if k != "chunks_resumed"}
    assert json.loads((out / "result.json").read_text()) == res
    assert _chunk_results(out) == _chunk_results(tmp_path / "ref")  # per-example flags, bit for bit
    # the comparison has teeth: the attack's randomness changes per-example results
    other = robrep.evaluate(model, robrep.load_dataset("demo", "test"), threat=robrep.threat("linf", 0.1), attack="pgd",
                            attack_kwargs={"steps": 2, "step_size": 0.04}, n=120, batch_size=16, chunk_size=40, seed=1,
                            out=tmp_path / "seed1")
    assert other.clean_accuracy == ref["clean_accuracy"]
    assert [c["robust"] for c in _chunk_results(tmp_path / "seed1")] != [c["robust"] for c in _chunk_results(out)]


def test_eval_refuses_other_configuration_and_silent_overwrite(tmp_path, capsys, tiny_trained):
    _, ck = tiny_trained
    out = tmp_path / "run"
    argv = _eval_argv(ck, out)
    argv[argv.index("--n") + 1] = "60"  # two chunks: 40 + 20
    ref = _cli_json(argv, capsys)
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "chunks").iterdir()}
    assert len(files) == 2
    for extra, needle in [(["--resume", "--seed", "1"], "another configuration (differs in: seed)"),
                          (["--resume", "--eps", "0.05"], "another configuration (differs in: threat)"),
                          (["--resume", "--steps", "3"], "another configuration (differs in: attack_kwargs)"),
                          (["--resume", "--chunk-size", "30"], "differs in: chunk_size"),
                          ([], "already holds 2 finished chunk(s); pass --resume")]:
        capsys.readouterr()
        assert cli_main(argv + extra) == 2  # a repeated option: argparse keeps the last value
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
        assert ("use a new --out" in err[0]) and err[0].startswith("robrep: error:")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "chunks").iterdir()} == files
    # --overwrite recomputes everything, to the same numbers
    again = _cli_json([*argv, "--overwrite"], capsys)
    assert again == ref and all(p.stat().st_mtime_ns > files[p][0] for p in files)


def test_evaluate_api_resume_merges_chunks(tmp_path, tiny_trained):
    """Library: a deleted chunk is recomputed alone; one chunk equals the unchunked evaluation."""
    model, _ = tiny_trained
    data = robrep.load_dataset("demo", "test")
    kw = dict(threat=robrep.threat("linf", 0.03), attack="pgd", attack_kwargs={"steps": 3}, n=90, batch_size=16)
    full = robrep.evaluate(model, data, **kw, chunk_size=30, out=tmp_path)
    assert (full.chunks_done, full.chunks_resumed) == (3, 0)
    (tmp_path / "chunks" / "chunk-00001.json").unlink()
    res = robrep.evaluate(model, data, **kw, chunk_size=30, out=tmp_path, resume=True)
    assert (res.chunks_done, res.chunks_resumed) == (3, 2)
    assert res == replace(full, chunks_resumed=2)
    # one chunk holding everything is the legacy single pass (seeded by `seed` itself)
    assert robrep.evaluate(model, data, **kw, chunk_size=1000) == robrep.evaluate(model, data, **kw)
    with pytest.raises(InputError, match="need a run folder"):
        robrep.evaluate(model, data, **kw, resume=True)


def _certify_argv(ck: Path, out: Path, *extra: str) -> list[str]:
    return ["certify", "--checkpoint", str(ck), "--dataset", "demo", "--sigma", "0.25", "--order", "1", "--num", "6",
            "--chunk-size", "2", "--n", "200", "--n0", "20", "--batch-size", "100", "--device", "cpu", "--quiet",
            "--json", "--out", str(out), *extra]


_TIMING = {"seconds", "samples_per_second", "chunks_resumed"}


def test_certify_sigkill_then_resume_equals_uninterrupted(tmp_path, capsys, tiny_trained, one_thread):
    _, ck = tiny_trained
    ref = _cli_json(_certify_argv(ck, tmp_path / "ref"), capsys)
    assert ref["chunks_done"] == 3 and ref["chunks_resumed"] == 0 and ref["num_images"] == 6
    assert ref["certified_accuracy_table"]["0"] > 0  # some images certified, so the numbers can differ
    out = tmp_path / "killed"
    _kill_after_first_chunk(_certify_argv(ck, out), out)
    first = out / "chunks" / "chunk-00000.json"
    stamp, raw = first.stat().st_mtime_ns, first.read_bytes()
    time.sleep(0.05)
    res = _cli_json(_certify_argv(ck, out, "--resume"), capsys)
    assert res["chunks_done"] == 3 and res["chunks_resumed"] == 1
    assert first.stat().st_mtime_ns == stamp and first.read_bytes() == raw
    assert {k: v for k, v in res.items() if k not in _TIMING} == {k: v for k, v in ref.items() if k not in _TIMING}
    assert res["seconds"] > 0 and json.loads((out / "result.json").read_text()) == res

    def rows(d: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "time"} for r in json.loads((d / "per_image.json").read_text())["rows"]]

    assert rows(out) == rows(tmp_path / "ref") and [r["idx"] for r in rows(out)] == list(range(6))
    # a changed setting is refused with a one-line error, the finished chunks untouched
    capsys.readouterr()
    assert cli_main(_certify_argv(ck, out, "--resume", "--n0", "30")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs in: n0" in err[0] and "use a new --out" in err[0]
    assert first.stat().st_mtime_ns == stamp
