"""Process-wide runtime settings: intra-op threads and numeric precision.

Threads: torch starts one intra-op thread per core it sees, which oversubscribes a machine whose
cores are busy with other jobs (each parallel region then waits for its descheduled threads;
measured up to 20x slower on a loaded 2-core machine). :func:`configure_threads` picks the count
from the CPUs this process may use (affinity mask and cgroup CPU quota) and the load it sees now
(``/proc/stat`` sampled for a quarter of a second; the 1-minute load average where that is not
available), unless the user chose (``--threads`` or ``OMP_NUM_THREADS``).

Precision: ``fp32`` (exact float32 everywhere), ``bf16`` (bfloat16 autocast of the forward and
backward passes; needs native bf16: AVX512-BF16/AMX on CPUs, compute capability >= 8 on CUDA)
and ``auto`` (bf16 where supported, else fp32). :func:`resolve_precision` turns the setting into
what actually runs on a device. Attacks keep their verdicts exact (see
:mod:`robrep.attacks.precision`).

The settings chosen by the command line are recorded in every run record
(:func:`settings`, read by :func:`robrep.runs.environment`).
"""

from __future__ import annotations

import math
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .errors import InputError

__all__ = [
    "PRECISIONS",
    "available_cpus",
    "bf16_supported",
    "busy_cpus_now",
    "configure_threads",
    "pick_threads",
    "plan_processes",
    "resolve_precision",
    "set_precision",
    "settings",
]

PRECISIONS = ("auto", "fp32", "bf16")

_SETTINGS: dict[str, Any] = {}
_WARNED: set[str] = set()


# ----------------------------------------------------------------------------- CPUs and threads


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            return float(quota) / float(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = float((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup CPU quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit - 1e-9)))
    return max(1, n)


def _read_cpu_jiffies(stat: Path) -> tuple[int, int, int] | None:
    """``(busy, total, cpus)`` jiffies from a ``/proc/stat`` file; ``None`` where unreadable."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    head = next((ln.split() for ln in lines if ln.startswith("cpu ")), None)
    cpus = sum(1 for ln in lines if ln.startswith("cpu") and ln[3:4].isdigit())
    if head is None or len(head) < 5 or cpus == 0:
        return None
    v = [int(x) for x in head[1:9]] + [0] * max(0, 9 - len(head))
    idle = v[3] + v[4]  # idle + iowait
    total = sum(v[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total, cpus


def busy_cpus_now(interval: float = 0.25, stat: Path = Path("/proc/stat")) -> float | None:
    """How many CPUs of the machine the other jobs keep busy *now*: ``/proc/stat`` sampled twice,
    ``interval`` seconds apart, while this process sleeps (so its own use does not count).

    The 1-minute load average lags: a job that started two seconds ago is invisible to it, and one
    that finished a minute ago still counts. This sample sees the machine as it is when a command
    starts. ``None`` where ``/proc/stat`` is unreadable (not Linux): the caller falls back to the
    load average.
    """
    import time

    a = _read_cpu_jiffies(stat)
    if a is None:
        return None
    time.sleep(interval)
    b = _read_cpu_jiffies(stat)
    if b is None or b[1] <= a[1]:
        return None
    return round((b[0] - a[0]) / (b[1] - a[1]) * b[2], 2)


def pick_threads(cpus: int | None = None, load: float | None = None, machine_cpus: int | None = None) -> int:
    """Intra-op threads for a compute-bound job: the CPUs left free by the other jobs.

    ``free = cpus - load * cpus / machine_cpus`` (the 1-minute load average, scaled to this
    process's share of the machine when affinity or a quota restrict it), rounded to the nearest
    integer and kept in ``[1, cpus]``. On an idle 2-core machine this is 2; with one other
    CPU-bound job running it is 1.

    Args:
        cpus: CPUs this process may use (default :func:`available_cpus`).
        load: load average of the other jobs (default ``os.getloadavg()[0]``; 0 where unknown).
        machine_cpus: CPUs the load average is spread over (default ``os.cpu_count()``).
    """
    cpus = available_cpus() if cpus is None else int(cpus)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - not Unix
            load = 0.0
    machine = machine_cpus or os.cpu_count() or cpus
    others = float(load) * min(1.0, cpus / max(machine, 1))
    return int(max(1, min(cpus, math.floor(cpus - others + 0.5))))


def plan_processes(jobs: int | None, n_tasks: int, *, threads: int | None = None, device: str = "cpu",
                   per_cpu: int = 1) -> tuple[int, int]:
    """(processes, threads per process) for ``n_tasks`` independent tasks (e.g. the demo's stages).

    ``jobs=None`` (automatic): on a CPU with at least two usable CPUs and no thread count fixed by
    the caller, the tasks run side by side in up to ``per_cpu`` one-thread processes per usable CPU
    (small models gain little from a second intra-op thread, and independent single-thread
    processes keep their speed on a busy machine, where synchronising threads lose it); else one
    process. ``per_cpu=2`` suits many short tasks of uneven length: a process waiting for its next
    task leaves its CPU to the other, and beside another CPU-bound job the operating system's
    per-process share gives the tasks 4/5 of two CPUs rather than 2/3.
    """
    cpus = available_cpus()
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if per_cpu < 1:
        raise InputError(f"per_cpu must be >= 1, got {per_cpu}")
    if jobs is None:
        jobs = min(n_tasks, per_cpu * cpus) if on_cpu and threads is None and cpus >= 2 else 1
    if int(jobs) < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    jobs = min(int(jobs), max(1, n_tasks))
    return jobs, (max(1, (threads or cpus) // jobs) if jobs > 1 else (threads or 1))


def _warn_once(key: str, msg: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def configure_threads(threads: int | None = None, *, log: Any = None) -> dict[str, Any]:
    """Set torch's intra-op threads once per process and return what was chosen.

    Order: ``threads`` (``--threads``) > ``OMP_NUM_THREADS`` (torch already honours it; left as
    is) > :func:`pick_threads`. A count above :func:`available_cpus` is applied but warned about
    (once per process). Later calls without ``threads`` keep the first choice.

    Returns:
        ``{"threads": n, "source": "--threads" | "OMP_NUM_THREADS" | "auto", "available_cpus": c,
        "load": l}`` (also recorded by :func:`settings`).
    """
    if threads is not None and int(threads) < 1:
        raise InputError(f"--threads must be >= 1, got {threads}; omit it to let robrep choose")
    if threads is None and "threads" in _SETTINGS:
        _log_threads(_SETTINGS["threads"], log)
        return dict(_SETTINGS["threads"])
    cpus = available_cpus()
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    load, load_source = None, "busy CPUs now"
    if threads is None and not (env.isdigit() and int(env) > 0):
        load = busy_cpus_now()  # only when robrep chooses: it costs a quarter of a second
    if load is None:
        load_source = "load average"
        try:
            load = round(os.getloadavg()[0], 2)
        except (AttributeError, OSError):  # pragma: no cover
            load = 0.0
    if threads is not None:
        n, source = int(threads), "--threads"
    elif env.isdigit() and int(env) > 0:
        n, source = int(env), "OMP_NUM_THREADS"
    else:
        n, source = pick_threads(cpus, load), "auto"
    if n > cpus:
        _warn_once("threads", f"{n} threads requested ({source}) but only {cpus} CPUs are available to this process: "
                              f"the threads will compete for them; use --threads {cpus} or fewer")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    chosen = {"threads": n, "source": source, "available_cpus": cpus, "load": load, "load_source": load_source}
    _SETTINGS["threads"] = chosen
    _log_threads(chosen, log)
    return dict(chosen)


def _log_threads(c: dict[str, Any], log: Any) -> None:
    if log is not None:
        n = c["threads"]
        log(f"robrep: {n} thread{'s' if n > 1 else ''} ({c['source']}; {c['available_cpus']} CPUs available, "
            f"{c.get('load_source', 'load average')} {c['load']:g}); --threads N to override")


# ----------------------------------------------------------------------------- precision


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:  # pragma: no cover - not Linux
        pass
    return frozenset()


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 natively (where bf16 autocast is faster than float32):
    CPUs with AVX512-BF16 or AMX-BF16 (Linux CPU flags; also honoured by oneDNN), CUDA devices
    with bf16 support (compute capability >= 8.0). Other devices: False."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        flags = _cpu_flags()
        return bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.backends.mkldnn.is_available()
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """What runs on ``device`` for a precision setting: ``"fp32"`` or ``"bf16"``.

    ``auto`` gives bf16 where :func:`bf16_supported`, else fp32; ``bf16`` where the device lacks
    native bf16 raises :class:`~robrep.errors.InputError` (it would run, emulated, slower than
    fp32); unknown names raise too.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return "fp32"
    ok = bf16_supported(device)
    if precision == "bf16" and not ok:
        dev = torch.device(device)
        what = "this CPU has no AVX512-BF16/AMX" if dev.type == "cpu" else f"the {dev.type} device has no native bf16"
        raise InputError(f"--precision bf16 needs native bf16 support and {what}; use --precision auto "
                         f"(falls back to fp32) or --precision fp32")
    return "bf16" if ok else "fp32"


def set_precision(precision: str) -> None:
    """Record the precision setting of this process (the command line's ``--precision``) so that
    every run record shows it; validates the name."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    _SETTINGS["precision"] = {"requested": precision, "cpu": resolve_precision(precision, "cpu") if precision != "bf16"
                              or bf16_supported("cpu") else "unsupported"}


def settings() -> dict[str, Any]:
    """The runtime settings of this process (threads, precision), for run records."""
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    if "threads" in _SETTINGS:
        out["threads_choice"] = dict(_SETTINGS["threads"])
    if "precision" in _SETTINGS:
        out["precision"] = dict(_SETTINGS["precision"])
    out["bf16_native_cpu"] = bf16_supported("cpu")
    return out


def _reset_for_tests() -> None:
    """Forget the process's choices (tests only)."""
    _SETTINGS.clear()
    _WARNED.clear()
