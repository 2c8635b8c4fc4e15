"""mkdocs hooks: the site's navigation and the generated CLI reference.

The navigation is built from the files present, so a new guide, benchmark or reproduction
page (``docs/guides/<topic>.md``, ``docs/benchmarks/<topic>.md``,
``docs/reproductions/<paper>-<claim>.md``) appears in the site without editing ``mkdocs.yml``,
and a page listed below but absent is simply left out (``mkdocs build --strict`` stays green).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parent

# preferred order of the task guides; other guides follow alphabetically
GUIDE_ORDER = ["train", "evaluate", "vulnerability", "synbench", "profile", "load-models", "data",
               "transfer", "certify", "see", "scale-out", "speed"]
METHODS_ORDER = ["threat-models", "adversarial-training", "vulnerability", "synbench", "contrastive",
                 "certification", "hidden-cost", "semantic", "transfer", "visualization"]
# pages outside the sections, in order (missing ones are skipped)
TOP = [{"Getting started": "index.md"}]
PROJECT = ["architecture.md", "security.md", "reliability.md", "about-docs.md"]


def _present(rel: str) -> bool:
    return (DOCS / rel).is_file()


def _section(folder: str, order: list[str] | None = None, first: str = "index.md") -> list[str]:
    d = DOCS / folder
    if not d.is_dir():
        return []
    names = sorted(p.name for p in d.glob("*.md"))
    ranked = [f"{n}.md" for n in (order or []) if f"{n}.md" in names]
    rest = [n for n in names if n not in ranked and n != first]
    head = [first] if first in names else []
    return [f"{folder}/{n}" for n in head + ranked + rest]


def build_nav() -> list:
    nav: list = [p for p in TOP if _present(next(iter(p.values())))]
    for title, folder, order in [
        ("Guides", "guides", GUIDE_ORDER),
        ("Notebooks", "notebooks", None),
        ("Methods", "methods", METHODS_ORDER),
        ("Reproductions", "reproductions", None),
        ("Benchmarks", "benchmarks", None),
    ]:
        pages = _section(folder, order)
        if pages:
            nav.append({title: pages})
    reference = ["reference/cli.md"] + _section("reference/api")
    nav.append({"Reference": reference})
    project = [p for p in PROJECT if _present(p)]
    if project:
        nav.append({"Project": project})
    return nav


def _gen_cli():
    spec = importlib.util.spec_from_file_location("robrep_docs_gen_cli", DOCS / "gen_cli.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def on_config(config, **kwargs):  # noqa: ARG001 (mkdocs hook signature)
    config.nav = build_nav()
    return config


def on_files(files, config, **kwargs):  # noqa: ARG001
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/cli.md", content=_gen_cli().render()))
    return files
