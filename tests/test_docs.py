"""The documentation cannot rot.

* The CLI reference page is generated from the parser and equals ``robrep COMMAND --help``.
* Every option's help shows its default (or says it is required, or is a flag), and every
  command's help ends with examples.
* Every ``robrep ...`` command line in the docs (read as tests/doc_commands.py says: shell
  blocks, ``$ robrep`` lines shown with their output, ``torchrun -m robrep``; in the guides,
  reproductions, benchmarks, the README) and in the epilog examples parses with the real parser:
  the command exists, every option exists and every value has the right type and choice.
* Every guide's commands run for real on small sizes: tests/test_guides.py.
* The methods pages the code cites exist, the docs cite no untracked folder, and no page
  describes the project as a development diary.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from doc_commands import robrep_lines
from robrep.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _gen_cli():
    spec = importlib.util.spec_from_file_location("robrep_docs_gen_cli", DOCS / "gen_cli.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    raise AssertionError("no sub-commands")


# --------------------------------------------------------------------- CLI reference and --help
def test_cli_reference_equals_live_help() -> None:
    gen = _gen_cli()
    page = gen.render()
    texts = gen.help_texts()
    names = sorted(_commands(build_parser()))
    assert sorted(k for k in texts if k) == names
    env = {**os.environ, "COLUMNS": gen.WIDTH, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # one command through a real process (what a user types); all go through the same formatter
    for name in ("certify",):
        live = subprocess.run([sys.executable, "-m", "robrep", name, "--help"], env=env, capture_output=True, text=True, timeout=120)
        assert live.returncode == 0, live.stderr
        assert live.stdout == texts[name]
    for name in names:
        block = f"## robrep {name}\n\n```text\n{texts[name].rstrip()}\n```"
        assert block in page, name
        assert "usage: robrep " + name in texts[name]


def test_every_option_shows_its_default_and_every_command_has_examples() -> None:
    from robrep.cli.formatting import HelpFormatter

    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction, argparse._VersionAction,
             argparse._CountAction, argparse._StoreConstAction)
    missing = []
    for name, sub in _commands(build_parser()).items():
        assert sub.formatter_class is HelpFormatter, name
        help_text = sub.format_help()
        assert "examples:" in help_text, f"{name}: add examples to robrep/cli/examples.py"
        assert help_text.count(f"  robrep {name}") >= 2, f"{name}: at least two examples"
        for a in sub._actions:
            if not a.option_strings or isinstance(a, flags) or a.help == argparse.SUPPRESS:
                continue
            shown = HelpFormatter("robrep")._get_help_string(a) % {**vars(a), "prog": "robrep"}
            if not re.search(r"default|required", shown, re.I):
                missing.append(f"{name} {a.option_strings[-1]}")
    assert not missing, missing


def test_formatter_shows_defaults_required_and_leaves_flags() -> None:
    from robrep.cli.formatting import HelpFormatter

    p = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter, epilog="examples:\n  x --n 3\n  x --flag")
    p.add_argument("--n", type=int, default=7, help="how many")
    p.add_argument("--name", required=True)
    p.add_argument("--opt")
    p.add_argument("--flag", action="store_true", help="a flag")
    text = p.format_help()
    assert "how many (default: 7)" in text
    assert "(required)" in text
    assert "(default: none)" in text
    assert "a flag\n" in text and "a flag (default" not in text
    assert "examples:\n  x --n 3\n  x --flag" in text  # the epilog keeps its lines


# --------------------------------------------------------------------- commands in the docs
def _doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), *sorted((ROOT / "experiments").rglob("README.md"))]
    return [f for f in files if f.is_file()]


def _check_line(parser: argparse.ArgumentParser, line: str) -> str | None:
    words = line.split()
    if "..." in line or (len(words) > 1 and words[1].isupper()):
        return None  # an ellipsis or a placeholder (robrep COMMAND --help) is prose, not a command
    argv = shlex.split(line)[1:]
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        return f"{line!r}: exit {e.code}"
    return None


DOC_LINES = [(f.relative_to(ROOT).as_posix(), line) for f in _doc_files() for line in robrep_lines(f.read_text(encoding="utf-8"))]


def test_docs_hold_robrep_commands() -> None:
    guides = {p for p, _ in DOC_LINES if p.startswith("docs/guides/")}
    assert len(guides) >= 5, guides
    assert any(p == "docs/index.md" for p, _ in DOC_LINES)


@pytest.mark.parametrize("where,line", DOC_LINES, ids=[f"{p}:{i}" for i, (p, _) in enumerate(DOC_LINES)])
def test_documented_command_parses(where: str, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    problem = _check_line(build_parser(), line)
    err = capsys.readouterr().err
    assert problem is None, f"{where}: {problem}\n{err}"


def test_epilog_examples_parse(capsys: pytest.CaptureFixture[str]) -> None:
    from robrep.cli.examples import EXAMPLES

    parser = build_parser()
    assert set(EXAMPLES) <= set(_commands(parser)), set(EXAMPLES) - set(_commands(parser))
    bad = [p for rows in EXAMPLES.values() for _, cmd in rows if (p := _check_line(parser, cmd))]
    assert not bad, (bad, capsys.readouterr().err)


def test_a_bad_command_is_caught(capsys: pytest.CaptureFixture[str]) -> None:
    """The check above can fail: an unknown option and a bad choice are reported."""
    parser = build_parser()
    assert _check_line(parser, "robrep eval --checkpoint m.safetensors --no-such-option 1") is not None
    assert _check_line(parser, "robrep eval --checkpoint m.safetensors --norm l7") is not None
    assert _check_line(parser, "robrep no-such-command") is not None
    assert _check_line(parser, "robrep eval --checkpoint m.safetensors --eps 0.1") is None
    capsys.readouterr()


# --------------------------------------------------------------------- pages that stand alone
def test_methods_pages_cited_by_the_code_exist() -> None:
    cited = set()
    for f in [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "experiments").rglob("*")]:
        if f.is_file() and f.suffix in {".py", ".sh", ".md"}:
            cited |= set(re.findall(r"docs/methods/[a-z0-9-]+\.md", f.read_text(encoding="utf-8", errors="replace")))
    assert cited, "the code cites the methods pages"
    missing = sorted(c for c in cited if not (ROOT / c).is_file())
    assert not missing, missing
    stale = []
    for f in (ROOT / "src").rglob("*.py"):
        if re.search(r"(?<![/\w])methods\.md", f.read_text(encoding="utf-8")):
            stale.append(str(f.relative_to(ROOT)))
    assert not stale, f"cite docs/methods/<topic>.md, not methods.md: {stale}"


def test_docs_do_not_read_like_a_diary() -> None:
    pattern = re.compile(r"session ?[0-9]|session-[0-9]|\blanes?\b|\bissue ?#?[0-9]+", re.I)
    hits = []
    for f in [ROOT / "README.md", *DOCS.rglob("*.md"), *(ROOT / "experiments").rglob("*"), *(ROOT / "src").rglob("*.py")]:
        if f.is_file() and f.suffix in {".md", ".py", ".sh"}:
            for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert not hits, hits


def test_relative_links_in_markdown_resolve() -> None:
    broken = []
    for f in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", f.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if target.endswith("reference/cli.md") or target == "cli.md":
                continue  # generated at build time
            if not (f.parent / target).exists():
                broken.append(f"{f.relative_to(ROOT)} -> {target}")
    assert not broken, broken
