"""Registries of named parts (datasets, models, attacks, objectives, ...).

A registry maps a name to a factory. Names are filled by a decorator; registering a name twice
is an error. A registry may also resolve *prefixed* names such as ``tv:resnet18`` or
``imagefolder:/path`` through a prefix factory that receives the text after the colon.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A named collection of factories of one kind.

    Args:
        kind: what the registry holds, used in error messages ("model", "attack", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._prefixes: dict[str, Callable[[str], T]] = {}
        self._prefix_help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj, help=help)
            return obj

        return deco

    def add(self, name: str, obj: T, help: str = "") -> None:
        if not name or ":" in name:
            raise ValueError(f"invalid {self.kind} name {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        doc = help or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
        self._help[name] = doc

    def register_prefix(self, prefix: str, factory: Callable[[str], T], help: str = "") -> None:
        """Register a resolver for names ``prefix:<rest>``."""
        if prefix in self._prefixes:
            raise ValueError(f"{self.kind} prefix {prefix!r} is registered twice")
        self._prefixes[prefix] = factory
        self._prefix_help[prefix] = help

    def get(self, name: str) -> T:
        """Return the factory registered as ``name`` (or resolved through its prefix)."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            prefix, rest = name.split(":", 1)
            if prefix in self._prefixes:
                return self._prefixes[prefix](rest)
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}"
            + (f"; prefixes: {', '.join(p + ':' for p in self._prefixes)}" if self._prefixes else "")
            + f" (see `robrep list {self.kind}s`)."
        )

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line help) pairs, prefixes last as ``prefix:<...>``."""
        rows = [(n, self._help[n]) for n in self.names()]
        rows += [(p + ":<name>", h) for p, h in sorted(self._prefix_help.items())]
        return rows
