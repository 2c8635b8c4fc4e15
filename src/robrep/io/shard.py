"""Splitting a chunked job across processes launched by ``torchrun`` (or ``srun torchrun``).

robrep uses PyTorch's own distributed engine, never a scheduler of its own: ``torchrun`` starts
``K`` processes and sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``;
:func:`current_shard` reads them. A resumable job (evaluation, certification, ...) is a list of
chunks (see :mod:`robrep.io.chunks`); each rank computes the chunks assigned to it, writes each
one atomically into the shared ``--out`` folder as soon as it is finished, and after a barrier
every rank reads the whole set back, so the merged result is the same as a single-process run:
randomness is drawn per chunk, never per rank. The assignment is round-robin over the chunks
that are still missing, so ``--resume`` works with any world size and a crashed rank loses only
the chunk it was computing.

Requirements checked before any work starts (:func:`check_peers`): every rank sees the files the
others wrote in ``--out`` (it must be on a shared file system for multi-node runs) and all ranks
run the same robrep version. A failure on any rank is turned into the same one-line error on
every rank (:func:`agree`), so that every process exits non-zero and nothing is half-written.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, RobrepError
from .atomic import atomic_write_json

__all__ = ["Shard", "agree", "barrier", "check_peers", "current_shard", "init_distributed", "threads_per_rank"]

PEER_DIR = ".ranks"


@dataclass(frozen=True)
class Shard:
    """This process's place in a distributed job.

    Attributes:
        rank: global rank, ``0 <= rank < world_size``.
        world_size: number of processes (1: a plain single-process run).
        local_rank: rank on this node (selects the GPU: one GPU per rank).
        local_world_size: processes on this node (sets CPU threads per rank).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def active(self) -> bool:
        """True when the job runs on more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes merged results and records."""
        return self.rank == 0

    def assign(self, indices: Iterable[int]) -> list[int]:
        """This rank's share of ``indices``: every ``world_size``-th one from position ``rank``."""
        return list(indices)[self.rank :: self.world_size]

    def to_dict(self) -> dict[str, int]:
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank,
                "local_world_size": self.local_world_size}


def current_shard(env: dict[str, str] | None = None) -> Shard:
    """The :class:`Shard` described by torchrun's variables (a single process when unset).

    Raises:
        InputError: variables that are not integers or a rank outside ``0..WORLD_SIZE-1``.
    """
    env = dict(os.environ) if env is None else env

    def get(name: str, default: int) -> int:
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise InputError(f"{name}={raw!r} is not an integer; launch distributed runs with torchrun, "
                             "which sets it") from None

    world = get("WORLD_SIZE", 1)
    rank = get("RANK", 0)
    local_rank = get("LOCAL_RANK", rank if world > 1 else 0)
    local_world = get("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise InputError(f"inconsistent torchrun variables (RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}, "
                         f"LOCAL_WORLD_SIZE={local_world}); launch with torchrun --nproc-per-node K")
    return Shard(rank, world, local_rank, max(local_world, 1))


def init_distributed(shard: Shard, device: str | torch.device = "auto", backend: str | None = None) -> torch.device:
    """Join the process group of ``shard`` and return this rank's device.

    One GPU per rank (``cuda:LOCAL_RANK``) with NCCL when CUDA is there and ``device`` is not
    ``cpu``; gloo on CPU. A single-process shard initialises nothing.

    Raises:
        InputError: ``backend="nccl"`` without CUDA; more local ranks than GPUs.
    """
    dev = torch.device(device) if str(device) != "auto" else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if backend is not None and backend not in ("gloo", "nccl"):
        raise InputError(f"unknown distributed backend {backend!r}; use gloo (CPU) or nccl (CUDA GPUs)")
    if backend == "nccl" and (dev.type != "cuda" or not torch.cuda.is_available()):
        raise InputError("the NCCL backend needs CUDA GPUs and this run is on the CPU; use --backend gloo "
                         "(the default on CPU) or run on GPU machines")
    if dev.type == "cuda":
        if shard.local_rank >= torch.cuda.device_count():
            raise InputError(f"local rank {shard.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                             "use --nproc-per-node <= the number of GPUs")
        dev = torch.device("cuda", shard.local_rank)
        torch.cuda.set_device(dev)
    if not shard.active:
        return dev
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if dev.type == "cuda" else "gloo"))
    return dev


def _dist_on() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _dist_on():
        import torch.distributed as dist

        dist.barrier()


def agree(error: str | None) -> None:
    """Make every rank raise when any rank failed.

    Each rank passes the message of its own failure (or None); all messages are gathered, and
    when any is set every rank raises :class:`InputError` with the first one (prefixed by the
    rank that failed), so the job stops everywhere with the same one-line error.
    """
    if not _dist_on():
        if error is not None:
            raise InputError(error)
        return
    import torch.distributed as dist

    msgs: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(msgs, error)
    for r, m in enumerate(msgs):
        if m is not None:
            raise InputError(m if r == 0 else f"rank {r}: {m}")


def run_on_all(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` on every rank and turn a :class:`RobrepError` on any rank into the same
    error on all (see :func:`agree`); returns ``fn``'s result on this rank."""
    try:
        out, err = fn(*args, **kwargs), None
    except RobrepError as e:
        out, err = None, str(e)
    agree(err)
    return out


def check_peers(out: str | os.PathLike[str], shard: Shard, info: dict[str, Any] | None = None) -> None:
    """Check that all ranks share ``out`` and run the same robrep version.

    Every rank writes ``out/.ranks/rank-R.json`` (robrep version, host, a token of this launch);
    after a barrier each rank reads every other rank's file. A missing file means ``out`` is
    not shared between those processes; a different version means mixed installations.

    Raises:
        InputError: on every rank, when any rank found a problem.
    """
    if not shard.active:
        return
    import torch.distributed as dist

    from .._version import __version__

    token = [uuid.uuid4().hex if shard.is_main else None]
    dist.broadcast_object_list(token, src=0)
    folder = Path(out) / PEER_DIR
    mine = {"rank": shard.rank, "version": __version__, "host": socket.gethostname(), "token": token[0],
            **(info or {})}
    err: str | None = None
    try:
        atomic_write_json(folder / f"rank-{shard.rank}.json", mine)
    except OSError as e:
        err = f"cannot write to --out {out}: {e}"
    agree(err)
    for r in range(shard.world_size):
        try:
            other = json.loads((folder / f"rank-{r}.json").read_text())
        except (OSError, ValueError):
            other = None
        if other is None or other.get("token") != token[0]:
            err = (f"--out {out} is not shared between ranks: rank {shard.rank} on {mine['host']} cannot see rank {r}'s "
                   "file; put --out on a file system every node mounts")
            break
        if other.get("version") != __version__:
            err = (f"mixed robrep versions across ranks ({__version__} on rank {shard.rank}, {other.get('version')} on rank {r}); "
                   "install the same robrep on every node")
            break
    agree(err)


def threads_per_rank(shard: Shard, cpus: int) -> int:
    """CPU threads for each of the ``local_world_size`` ranks sharing ``cpus`` cores (at least 1)."""
    return max(1, cpus // max(1, shard.local_world_size))


def check_world(shard: Shard, num_chunks: int, what: str = "chunks", fewer: str = "a smaller --chunk-size") -> None:
    """Refuse a world larger than the work: some ranks would have nothing to do.

    Raises:
        InputError: ``world_size > num_chunks``.
    """
    if shard.world_size > num_chunks:
        raise InputError(f"{shard.world_size} ranks for {num_chunks} {what}: use --nproc-per-node <= {num_chunks} "
                         f"or {fewer}")


def owned(indices: Sequence[int], shard: Shard) -> set[int]:
    """The set form of :meth:`Shard.assign` (for membership tests in loops)."""
    return set(shard.assign(indices))
