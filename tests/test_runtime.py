"""Thread selection and the --precision/--threads settings (robrep.runtime, CLI)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from robrep import runtime
from robrep.cli import build_parser, main
from robrep.errors import InputError


@pytest.fixture
def fresh_runtime():
    threads = torch.get_num_threads()
    runtime._reset_for_tests()
    yield
    runtime._reset_for_tests()
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cpus,load,machine,expected", [
    (2, 0.0, 2, 2),   # idle 2-core machine: both cores
    (2, 0.4, 2, 2),   # light background load
    (2, 1.0, 2, 1),   # one other CPU-bound job: one thread
    (2, 7.0, 2, 1),   # heavily loaded: never below 1
    (8, 2.0, 8, 6),
    (2, 8.0, 64, 2),  # 2 of 64 CPUs (quota/affinity): the host's load is spread over 64
    (4, 32.0, 64, 2),
])
def test_pick_threads_closed_form(cpus, load, machine, expected) -> None:
    assert runtime.pick_threads(cpus, load, machine) == expected


def test_cgroup_quota_v2_and_v1(tmp_path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert runtime._cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime._cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert runtime._cgroup_cpu_limit(v1) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert runtime._cgroup_cpu_limit(v1) is None


def test_available_cpus_respects_quota(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: 1.5)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert runtime.available_cpus() == 2
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: None)
    assert runtime.available_cpus() == 4


def test_threads_above_available_warn_once(fresh_runtime, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "available_cpus", lambda: 1)
    with pytest.warns(RuntimeWarning, match=r"3 threads requested \(--threads\) but only 1 CPUs.*--threads 1"):
        c = runtime.configure_threads(3)
    assert c["threads"] == 3 and torch.get_num_threads() == 3 and c["source"] == "--threads"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: no warning
        runtime.configure_threads(3)
    with pytest.raises(InputError, match="--threads must be >= 1"):
        runtime.configure_threads(0)


def test_omp_num_threads_wins_over_the_picker(fresh_runtime, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    c = runtime.configure_threads()
    assert c == {**c, "threads": 1, "source": "OMP_NUM_THREADS"}
    assert runtime.configure_threads()["source"] == "OMP_NUM_THREADS"  # the first choice stays


def test_picker_used_without_env(fresh_runtime, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runtime, "busy_cpus_now", lambda: None)  # no /proc/stat: the load average decides
    lines: list[str] = []
    c = runtime.configure_threads(log=lines.append)
    assert c["threads"] == 1 and c["source"] == "auto" and torch.get_num_threads() == 1
    assert "1 thread (auto; 2 CPUs available, load average 1.2)" in lines[0]


def test_busy_cpus_now_wins_over_a_lagging_load_average(fresh_runtime, monkeypatch) -> None:
    """A job that ended a minute ago still weighs on the load average; the sample sees it gone."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (1.9, 1.0, 1.0))
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runtime, "busy_cpus_now", lambda: 0.05)
    lines: list[str] = []
    c = runtime.configure_threads(log=lines.append)
    assert c["threads"] == 2 and c["load_source"] == "busy CPUs now"
    assert "2 threads (auto; 2 CPUs available, busy CPUs now 0.05)" in lines[0]


def test_busy_cpus_now_from_two_proc_stat_samples(tmp_path, monkeypatch) -> None:
    stat = tmp_path / "stat"
    # 4 CPUs; between the samples 400 jiffies pass, 100 of them busy: one CPU's worth of 4 x 25 %
    first = "cpu  1000 0 500 8000 100 0 0 0 0 0\ncpu0 1 0 0 0 0\ncpu1 1 0 0 0 0\ncpu2 1 0 0 0 0\ncpu3 1 0 0 0 0\n"
    second = "cpu  1080 0 520 8300 100 0 0 0 0 0\ncpu0 1 0 0 0 0\ncpu1 1 0 0 0 0\ncpu2 1 0 0 0 0\ncpu3 1 0 0 0 0\n"
    stat.write_text(first)
    import time as _time

    monkeypatch.setattr(_time, "sleep", lambda s: stat.write_text(second))
    assert runtime.busy_cpus_now(0.0, stat) == 1.0
    stat.write_text("garbage\n")
    assert runtime.busy_cpus_now(0.0, stat) is None
    assert runtime.busy_cpus_now(0.0, tmp_path / "missing") is None


def test_precision_names_and_resolution(monkeypatch) -> None:
    with pytest.raises(InputError, match="unknown precision 'half'"):
        runtime.resolve_precision("half")
    assert runtime.resolve_precision("fp32") == "fp32"
    monkeypatch.setattr(runtime, "bf16_supported", lambda device="cpu": True)
    assert runtime.resolve_precision("auto") == runtime.resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(runtime, "bf16_supported", lambda device="cpu": False)
    assert runtime.resolve_precision("auto") == "fp32"
    with pytest.raises(InputError, match="AVX512-BF16/AMX"):
        runtime.resolve_precision("bf16", "cpu")


def _checkpoint(tmp_path):
    from robrep.models import create_model, save_model

    torch.manual_seed(0)
    m = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), width=4, dataset="demo")
    return save_model(tmp_path / "m.safetensors", m, {"dataset": "demo"})


def test_cli_records_precision_and_threads(tmp_path, capsys, fresh_runtime) -> None:
    ck = _checkpoint(tmp_path)
    out = tmp_path / "ev"
    rc = main(["eval", "--checkpoint", str(ck), "--dataset", "demo", "--n", "8", "--eps", "0.1", "--steps", "1",
               "--precision", "fp32", "--threads", "1", "--quiet", "--json", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    rec = json.loads((out / "record.json").read_text())
    rt = rec["environment"]["runtime"]
    assert rt["precision"]["requested"] == "fp32" and rt["threads"] == 1 and rt["threads_choice"]["source"] == "--threads"
    assert "precision" not in rec["metrics"]["attack"]  # fp32: the attack exactly as before
    out2 = tmp_path / "ev2"
    assert main(["eval", "--checkpoint", str(ck), "--dataset", "demo", "--n", "8", "--eps", "0.1", "--steps", "1",
                 "--precision", "auto", "--quiet", "--json", "--out", str(out2), "--device", "cpu"]) == 0
    rec2 = json.loads((out2 / "record.json").read_text())
    assert rec2["metrics"]["attack"]["precision"] == "auto" and rec2["environment"]["runtime"]["precision"]["requested"] == "auto"


def test_cli_bf16_without_hardware_exits_2(tmp_path, capsys, monkeypatch, fresh_runtime) -> None:
    monkeypatch.setattr(runtime, "bf16_supported", lambda device="cpu": False)
    ck = _checkpoint(tmp_path)
    rc = main(["eval", "--checkpoint", str(ck), "--dataset", "demo", "--n", "4", "--eps", "0.1", "--steps", "1",
               "--precision", "bf16", "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "native bf16" in err[0] and "--precision fp32" in err[0]


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_cli_train_precision_maps_to_amp(precision) -> None:
    from robrep.cli.train import config_from_args

    args = build_parser().parse_args(["train", "--precision", precision, "--device", "cpu"])
    cfg = config_from_args(args)
    bf16 = precision == "auto" and runtime.bf16_supported("cpu")
    assert cfg.amp is bf16 and cfg.channels_last is bf16
    args = build_parser().parse_args(["train", "--precision", "fp32", "--amp", "--device", "cpu"])
    assert config_from_args(args).amp is True and config_from_args(args).channels_last is False


def test_plan_processes(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    assert runtime.plan_processes(None, 2) == (2, 1)  # two CPUs, two tasks: side by side, one thread each
    assert runtime.plan_processes(None, 2, threads=2) == (1, 2)  # the caller fixed the threads: one process
    assert runtime.plan_processes(1, 2) == (1, 1)
    assert runtime.plan_processes(4, 2) == (2, 1)  # never more processes than tasks
    assert runtime.plan_processes(None, 14, per_cpu=2) == (4, 1)  # many short tasks: two one-thread processes per CPU
    assert runtime.plan_processes(None, 3, per_cpu=2) == (3, 1)
    assert runtime.plan_processes(None, 14, threads=1, per_cpu=2) == (1, 1)
    with pytest.raises(InputError, match="per_cpu"):
        runtime.plan_processes(None, 2, per_cpu=0)
    monkeypatch.setattr(runtime, "available_cpus", lambda: 8)
    assert runtime.plan_processes(None, 2) == (2, 4)
    monkeypatch.setattr(runtime, "available_cpus", lambda: 1)
    assert runtime.plan_processes(None, 2) == (1, 1)
    with pytest.raises(InputError, match="--jobs must be >= 1"):
        runtime.plan_processes(0, 2)
