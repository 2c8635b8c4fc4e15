"""The measures of a profile as cells that ``torchrun`` ranks share.

After the features and the probe (computed on every rank: the later measures need them), each
measure (embedding sensitivity, vulnerability, SynBench, smoothing, pictures) is one cell: a
function that fills the card's ``results``, ``headline`` and ``curves`` entries of that measure.
Each cell starts from the random state the probe left, so its numbers do not depend on which
rank computes it or what that rank computed before; under ``torchrun`` the finished cells are
saved atomically in ``out/chunks`` (:mod:`robrep.io.chunks`) and every rank reads them all back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..io.chunks import canonical, open_store, run_chunks
from ..io.shard import Shard

__all__ = ["Cell", "run_cells"]

#: a measure: fills (results, headline, curves) of the card
Cell = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], None]


def run_cells(cells: Mapping[str, Cell], stage: Any, rng_state: torch.Tensor, out: Path, fingerprint: dict[str, Any],
              resume: bool, overwrite: bool, shard: Shard) -> list[dict[str, Any]]:
    """Each cell's ``{"results", "headline", "curves", "seconds"}``, in the order of ``cells``.

    A single process without ``resume`` computes every cell and writes nothing; with several
    ranks (or ``resume``) the cells go through the chunk store of ``out``, fingerprinted by
    ``fingerprint``, and the unfinished ones are dealt round-robin to the ranks.
    """
    names = list(cells)
    store = None
    if shard.active or resume:
        more = "keep the pictures (drop --no-pictures)" if "pictures" not in names else "run it in one process"
        store = open_store(out, fingerprint, len(names), resume=resume, overwrite=overwrite, shard=shard,
                           unit="measures", fewer=more)

    def compute(k: int) -> dict[str, Any]:
        name = names[k]
        torch.set_rng_state(rng_state)
        part: dict[str, Any] = {"results": {}, "headline": {}, "curves": {}}
        with stage(name):
            cells[name](part["results"], part["headline"], part["curves"])
        part["seconds"] = {name: stage.seconds[name]}
        return canonical(part) if store is not None else part

    return list(run_chunks(store, len(names), compute, shard=shard))
