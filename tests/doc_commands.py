"""The ``robrep`` command lines of a markdown page, as the docs tests read them.

A command is

* a line starting with ``robrep`` (after an optional ``$`` prompt and ``VAR=value`` prefixes) in a
  fenced ``bash``/``sh``/``shell``/``console`` block or in a fence without a language;
* a line starting with ``$ robrep`` in any other fenced block (``text``: a command shown with its
  output) or in an indented code block;
* ``torchrun [options] -m robrep COMMAND ...`` (also after ``srun``), read as ``robrep COMMAND ...``:
  the same command line in every process.

Continuation lines are joined; comments and what follows a shell operator are cut. When the line
after a command is ``robrep: error: MESSAGE``, the page shows that command failing: its
:attr:`DocCommand.error` is ``MESSAGE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DocCommand", "doc_commands", "robrep_lines"]

_SHELL = {"bash", "sh", "shell", "console", ""}
_FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_INDENTED = re.compile(r"(?:^(?: {4}|\t).*\n?)+", re.M)
_TORCHRUN = re.compile(r"^(?:srun\s+)?torchrun\s.*?\s-m\s+(robrep\s.*)$")


@dataclass(frozen=True)
class DocCommand:
    line: str
    error: str | None = None  #: the message the page shows after ``robrep: error:``


def _command(raw: str, prompt_only: bool) -> str | None:
    line = raw.strip()
    if prompt_only and not line.startswith("$ "):
        return None
    line = line.removeprefix("$").strip()
    line = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", line)  # VAR=value prefixes
    if m := _TORCHRUN.match(line):
        line = m.group(1)
    if not line.startswith("robrep "):
        return None
    line = re.split(r"\s+#", line)[0]
    line = re.split(r"\s(?:\||&&|;|>|2>|&)\s?", line)[0]
    return line.strip()


def _block(body: str, prompt_only: bool) -> list[DocCommand]:
    out: list[DocCommand] = []
    for raw in re.sub(r"[ \t]*\\\n\s*", " ", body).splitlines():
        cmd = _command(raw, prompt_only)
        if cmd is not None:
            out.append(DocCommand(cmd))
        elif out and out[-1].error is None and raw.strip().startswith("robrep: error: "):
            out[-1] = DocCommand(out[-1].line, raw.strip().removeprefix("robrep: error: "))
    return out


def doc_commands(text: str) -> list[DocCommand]:
    """The commands of a markdown page, in page order."""
    found: list[tuple[int, list[DocCommand]]] = []
    for m in _FENCE.finditer(text):
        found.append((m.start(), _block(m.group(2), prompt_only=m.group(1) not in _SHELL)))
    outside = _FENCE.sub(lambda m: re.sub(r"[^\n]", "x", m.group(0)), text)  # fenced blocks are done; same offsets
    for m in _INDENTED.finditer(outside):
        body = "\n".join(line[4:] if line.startswith("    ") else line[1:] for line in m.group(0).splitlines())
        found.append((m.start(), _block(body, prompt_only=True)))
    return [c for _, cmds in sorted(found, key=lambda t: t[0]) for c in cmds]


def robrep_lines(text: str) -> list[str]:
    """The command lines of :func:`doc_commands`."""
    return [c.line for c in doc_commands(text)]
