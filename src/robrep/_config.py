"""Frozen configuration dataclasses read back from JSON (training and transfer configurations)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import InputError

__all__ = ["config_from_dict"]

C = TypeVar("C")


def config_from_dict(cls: type[C], d: Mapping[str, Any], kind: str) -> C:
    """Build the frozen dataclass ``cls`` from a JSON dict, refusing unknown keys.

    Lists become tuples for the fields annotated as tuples (JSON has no tuples), so that
    ``cls.from_dict(cfg.to_dict()) == cfg``.

    Args:
        cls: the dataclass.
        d: its fields by name (a subset: the rest keep their defaults).
        kind: what the options configure, for the error message (e.g. ``"training"``).

    Raises:
        InputError: a key that is not a field of ``cls``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - set(fields)
    if unknown:
        raise InputError(f"unknown {kind} options {sorted(unknown)}; known: {sorted(fields)}")
    kw = dict(d)
    for name, v in kw.items():
        ann = fields[name].type
        if isinstance(v, list) and (ann is tuple or str(ann).startswith("tuple")):
            kw[name] = tuple(v)
    return cls(**kw)
