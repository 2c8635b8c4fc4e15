"""Progress bars (tqdm) that stay quiet when not wanted or not on a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["progress"]


def progress(it: Iterable[T], *, desc: str = "", total: int | None = None, enable: bool = True) -> Iterator[T]:
    """Wrap ``it`` in a tqdm bar on stderr when enabled (off with ROBREP_PROGRESS=0)."""
    if not enable or os.environ.get("ROBREP_PROGRESS", "1") == "0":
        yield from it
        return
    from tqdm.auto import tqdm

    yield from tqdm(it, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)
