"""Shared helpers of the benchmark scripts: machine description, interleaved median timing,
markdown tables. Not a package: each script puts this folder on ``sys.path`` (it is there when a
script is run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

MALLOC_VARS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD",
               "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Date, CPU model, cores, torch threads and version, allocator settings, load, GPU."""
    dev = torch.device(device)
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "malloc": {k: os.environ[k] for k in MALLOC_VARS if k in os.environ} or "glibc defaults",
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "device": str(dev),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def print_machine(info: dict[str, Any]) -> None:
    print(f"date: {info['date']}; machine: {info['cpu']} ({info['cpu_count']} cores), torch {info['torch']} "
          f"({info['torch_threads']} threads), python {info['python']}")
    print(f"allocator/threads env: {info['malloc']}; load average (1 min): {info['load_avg_1min']}; device: {info['device']}"
          + (f" ({info['gpu']})" if "gpu" in info else ""))
    if info["load_avg_1min"] is not None and info["cpu_count"] and info["load_avg_1min"] > 0.5 * info["cpu_count"]:
        print(f"WARNING: load average {info['load_avg_1min']} on {info['cpu_count']} cores: other jobs run, timings are not valid")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def fit_steps(model: torch.nn.Module, data: Any, opt: torch.optim.Optimizer, steps: int,
              transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.nn.Module:
    """``steps`` cross-entropy steps of ``opt`` on shuffled batches of 64 from ``data`` (an
    ``ImageData``; order seeded with 0), inputs passed through ``transform`` first; returns the
    model in eval mode. The short training the benchmarks give their models."""
    model.train()
    for i, (xb, yb) in enumerate(data.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0))):
        loss = torch.nn.functional.cross_entropy(model(transform(xb) if transform else xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i + 1 == steps:
            break
    return model.eval()


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, dev: torch.device) -> dict[str, list[float]]:
    """Seconds of each callable, ``repeats`` rounds; in each round every callable runs once, in an
    order rotated by one per round (no position favours any of them)."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            sync(dev)
            t = time.perf_counter()
            fns[k]()
            sync(dev)
            times[k].append(time.perf_counter() - t)
    return times


def median(v: Sequence[float]) -> float:
    return statistics.median(v) if v else float("nan")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)
