"""Generate the CLI reference from the parser itself (never hand-copied).

``render()`` walks :func:`robrep.cli.build_parser` and returns one Markdown page holding each
command's ``--help`` text exactly as ``robrep COMMAND --help`` prints it in a 100-column
terminal. The mkdocs hook (``docs/hooks.py``) adds that page to the site at build time;
``python docs/gen_cli.py [PATH]`` prints or writes it. ``tests/test_docs.py`` checks that the
page equals the live ``--help`` output of every command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# document this checkout's CLI, not whichever robrep happens to be installed
_SRC = str(Path(__file__).resolve().parents[1] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

WIDTH = "100"  # terminal width the help is formatted for (argparse reads $COLUMNS)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def help_texts() -> dict[str, str]:
    """``{"": top-level help, command: command help}`` formatted at :data:`WIDTH` columns."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        from robrep.cli import build_parser

        parser = build_parser()
        texts = {"": parser.format_help()}
        for name, sub in _subparsers(parser).items():
            texts[name] = sub.format_help()
        return texts
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def render() -> str:
    """The CLI reference page (Markdown)."""
    texts = help_texts()
    out = [
        "# CLI reference",
        "",
        "Generated from the `robrep` argument parser when the site is built (`docs/gen_cli.py`):",
        "each block below is exactly what `robrep COMMAND --help` prints. Every option shows its",
        "default; each command ends with examples.",
        "",
        "```text",
        texts[""].rstrip("\n"),
        "```",
        "",
    ]
    for name in sorted(k for k in texts if k):
        out += [f"## robrep {name}", "", "```text", texts[name].rstrip("\n"), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    page = render()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            f.write(page)
    else:
        sys.stdout.write(page)
