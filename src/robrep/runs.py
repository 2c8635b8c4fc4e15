"""Run records: every command writes its resolved config, versions, git SHA, seeds and metrics."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from .io.atomic import atomic_write_json

__all__ = ["environment", "write_record", "RECORD_NAME"]

RECORD_NAME = "record.json"


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment() -> dict[str, Any]:
    """Versions and machine facts for provenance."""
    import numpy
    import torch

    from ._version import __version__

    env: dict[str, Any] = {
        "robrep": __version__,
        "git_sha": _git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    from .runtime import settings

    env["runtime"] = settings()  # threads and --precision of this process
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    return env


def write_record(out_dir: str | os.PathLike[str], command: str, config: dict[str, Any], metrics: dict[str, Any], **extra: Any) -> Path:
    """Write ``out_dir/record.json`` atomically: command, config, environment, metrics."""
    path = Path(out_dir) / RECORD_NAME
    atomic_write_json(path, {"command": command, "config": config, "environment": environment(), "metrics": metrics, **extra})
    return path
