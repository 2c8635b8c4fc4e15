"""Resumable long computations in fixed-size chunks.

A run folder ``out`` holds one JSON file per finished chunk, ``out/chunks/chunk-NNNNN.json``,
written atomically together with the run's *fingerprint* (a JSON dict of everything that
determines the numbers: model weights digest, data digest, attack, threat, seed, chunk size...).
A rerun with ``resume=True`` reads the finished chunks and computes only the others; a chunk
made with another fingerprint is refused, and so is a folder with finished chunks when neither
``resume`` nor ``overwrite`` is given (no silent overwrite).

Layout of a chunk file::

    {"format": "robrep-chunk", "version": 1, "index": k, "num_chunks": K,
     "fingerprint": {...}, "result": {...}}
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, RobrepError
from .atomic import atomic_write_json, to_jsonable
from .shard import Shard, agree, check_world

__all__ = ["CHUNK_DIR", "ChunkStore", "canonical", "module_digest", "open_store", "run_chunks", "tensor_digest"]

CHUNK_DIR = "chunks"
_FORMAT = "robrep-chunk"
_VERSION = 1


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of the dtypes, shapes and raw bytes of ``tensors`` (any device and dtype)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's class name and its state dict (parameter and buffer names, values)."""
    h = hashlib.sha256(type(module).__name__.encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return h.hexdigest()


def canonical(obj: Any) -> Any:
    """``obj`` as plain JSON data, as it reads back from a file (tuples become lists, non-finite
    floats None); callables become ``"callable:module.qualname"`` so that a fingerprint does not
    depend on memory addresses."""
    def conv(o: Any) -> Any:
        if isinstance(o, Mapping):
            return {str(k): conv(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        if callable(o) and not isinstance(o, type):
            return f"callable:{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', type(o).__name__)}"
        return o

    return json.loads(json.dumps(to_jsonable(conv(obj)), default=repr))


class ChunkStore:
    """Finished chunks of one run in ``out/chunks`` (see the module docstring).

    Use :meth:`open`; ``done`` maps the index of each chunk read back from an earlier run to
    its stored result; :meth:`write` stores a newly finished chunk atomically.
    """

    def __init__(self, out: Path, fingerprint: dict[str, Any], num_chunks: int, done: dict[int, Any]) -> None:
        self.out = out
        self.folder = out / CHUNK_DIR
        self.fingerprint = fingerprint
        self.num_chunks = num_chunks
        self.done = done

    @classmethod
    def open(cls, out: str | os.PathLike[str], fingerprint: Mapping[str, Any], num_chunks: int, *,
             resume: bool = False, overwrite: bool = False) -> ChunkStore:
        """Check ``out`` against ``fingerprint`` and read its finished chunks (with ``resume``).

        Raises:
            InputError: ``resume`` and ``overwrite`` together; finished chunks in ``out`` without
                either; a chunk of another configuration; an unreadable chunk file.
        """
        if resume and overwrite:
            raise InputError("resume and overwrite exclude each other: pass --resume to continue a run or "
                             "--overwrite to start it again")
        out = Path(out)
        fp = canonical(dict(fingerprint))
        folder = out / CHUNK_DIR
        files = sorted(folder.glob("chunk-*.json")) if folder.is_dir() else []
        if files and not (resume or overwrite):
            raise InputError(f"{out} already holds {len(files)} finished chunk(s); pass --resume to continue them, "
                             "--overwrite to discard them, or use a new --out")
        if overwrite:
            for f in files:
                f.unlink()
            files = []
        done: dict[int, Any] = {}
        for f in files:
            try:
                d = json.loads(f.read_text())
                k = int(d["index"])
                ok = d.get("format") == _FORMAT and f.name == _name(k) and "result" in d and "fingerprint" in d
            except (OSError, ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise InputError(f"{f} is not a robrep chunk file; remove it (or the folder {out}) and run again")
            if d["fingerprint"] != fp:
                old = d["fingerprint"] if isinstance(d["fingerprint"], dict) else {}
                diff = sorted(key for key in set(old) | set(fp) if old.get(key) != fp.get(key))
                raise InputError(f"{out} holds chunks of another configuration (differs in: {', '.join(diff) or '?'}); "
                                 "use a new --out or remove that folder")
            if not 0 <= k < num_chunks:  # cannot happen with equal fingerprints unless edited
                raise InputError(f"{f} is chunk {k} of {d.get('num_chunks')}, but this run has {num_chunks}; "
                                 "use a new --out or remove that folder")
            done[k] = d["result"]
        return cls(out, fp, num_chunks, done)

    def path(self, index: int) -> Path:
        """The file of chunk ``index``."""
        return self.folder / _name(index)

    def write(self, index: int, result: Any) -> None:
        """Store the finished chunk ``index`` (atomically: a kill leaves no partial file)."""
        atomic_write_json(self.path(index), {"format": _FORMAT, "version": _VERSION, "index": index,
                                             "num_chunks": self.num_chunks, "fingerprint": self.fingerprint,
                                             "result": result})


def open_store(out: str | os.PathLike[str], fingerprint: Mapping[str, Any], num_chunks: int, *,
               resume: bool = False, overwrite: bool = False, shard: Shard | None = None, unit: str = "chunks",
               fewer: str = "a smaller --chunk-size") -> ChunkStore:
    """:meth:`ChunkStore.open` for a job that may run on several ``torchrun`` ranks.

    In a single process this is :meth:`ChunkStore.open`. With several ranks, rank 0 checks
    the folder first (fingerprint, ``resume``/``overwrite``; only rank 0 deletes anything),
    then the others read it; a refusal on any rank becomes the same error on every rank. The
    ranks must share ``out`` and run one robrep version (:func:`robrep.io.shard.check_peers`),
    and there must be at least as many chunks as ranks (``unit`` names the chunks and ``fewer``
    says how to get more of them, in that error).

    Raises:
        InputError: as :meth:`ChunkStore.open`, plus the distributed checks above.
    """
    shard = shard or Shard()
    if not shard.active:
        return ChunkStore.open(out, fingerprint, num_chunks, resume=resume, overwrite=overwrite)
    from .shard import check_peers

    store: ChunkStore | None = None
    error: str | None = None
    if shard.is_main:
        try:
            check_world(shard, num_chunks, unit, fewer)
            store = ChunkStore.open(out, fingerprint, num_chunks, resume=resume, overwrite=overwrite)
        except RobrepError as e:
            error = str(e)
    agree(error)
    check_peers(out, shard)
    if not shard.is_main:
        try:
            store = ChunkStore.open(out, fingerprint, num_chunks, resume=True)
        except RobrepError as e:
            error = str(e)
    agree(error)
    assert store is not None
    return store


def _name(index: int) -> str:
    return f"chunk-{index:05d}.json"


def run_chunks(store: ChunkStore | None, num_chunks: int, compute: Callable[[int], Any], *,
               order: Iterable[int] | None = None, shard: Shard | None = None) -> list[Any]:
    """The resumable chunk loop: one result per chunk, in index order.

    Chunk ``k`` is read back from ``store.done`` when an earlier run finished it; otherwise
    ``compute(k)`` makes it and, with a ``store``, it is written at once (atomically), so a kill
    loses at most the chunk in progress. ``compute`` must return JSON data (what is stored is
    what a resumed run gets back, so return it as it reads back: see :func:`canonical`).

    Args:
        store: the run's :class:`ChunkStore` (None: compute everything, write nothing).
        num_chunks: number of chunks ``K``.
        compute: ``k -> result`` of chunk ``k``.
        order: the chunk indices to walk (default ``range(K)``), e.g. wrapped in a progress bar;
            each index of ``range(K)`` must occur once.
        shard: this process's place in a ``torchrun`` job (default: a single process). Each rank
            computes its round-robin share of the chunks still missing and writes them into the
            shared store; after a barrier every rank reads all of them back, so every rank
            returns the full, identical list (see :mod:`robrep.io.shard`).

    Returns:
        ``[result_0, ..., result_{K-1}]``.
    """
    if store is not None and store.num_chunks != num_chunks:
        raise InputError(f"the chunk store was opened for {store.num_chunks} chunks, not {num_chunks}")
    shard = shard or Shard()
    if shard.active and store is None:
        raise InputError("splitting work across ranks needs --out DIR on a shared file system (each rank writes its chunks there)")
    done = store.done if store is not None else {}
    mine = set(shard.assign(k for k in range(num_chunks) if k not in done)) if shard.active else None
    results: dict[int, Any] = {}
    walked: set[int] = set()
    error: str | None = None
    try:
        for k in range(num_chunks) if order is None else order:
            if k in walked or not 0 <= k < num_chunks:
                raise InputError(f"chunk index {k} repeated or outside 0..{num_chunks - 1}")
            walked.add(k)
            if k in done:
                results[k] = done[k]
            elif mine is None or k in mine:
                results[k] = compute(k)
                if store is not None:
                    store.write(k, results[k])
    except RobrepError as e:
        if not shard.active:
            raise
        error = str(e)
    if shard.active:
        agree(error)  # also the barrier: every rank has written its chunks
        assert store is not None
        results = dict(ChunkStore.open(store.out, store.fingerprint, num_chunks, resume=True).done)
        missing = [k for k in range(num_chunks) if k not in results]
        if missing:
            raise InputError(f"chunks {missing[:5]} were not written by any rank; rerun with --resume")
        walked = set(results)
    if len(walked) != num_chunks:
        raise InputError(f"only {len(walked)} of {num_chunks} chunks were walked; give every index once")
    return [results[k] for k in range(num_chunks)]
