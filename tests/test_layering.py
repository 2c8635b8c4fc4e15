"""The layering stated in docs/architecture.md holds: every import inside src/robrep goes leftwards.

The order is parsed from the doc (the code span after "Layers import only leftwards"), so the doc
and this test cannot disagree. Layers are separated by ``->``; names inside one layer (``a/b``)
may import each other. Imports inside functions (lazy imports) count too; an exception needs an
entry in ``ALLOWED`` with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "robrep"
DOC = ROOT / "docs" / "architecture.md"

ALLOWED: dict[tuple[str, str], str] = {
    # (importing top-level name, imported top-level name): reason
}


def stated_layers() -> list[list[str]]:
    text = DOC.read_text()
    m = re.search(r"Layers import only leftwards:\s*`([^`]+)`", text)
    assert m, "docs/architecture.md must state the order as: Layers import only leftwards: `a -> b/c -> ...`"
    return [[n.strip() for n in group.split("/")] for group in m.group(1).split("->")]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top(name: str) -> str:
    """``robrep.certify.runner`` -> ``certify``; the package itself -> ``robrep``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "robrep"


def robrep_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported robrep module, line, lazy) for every import in the file, nested ones included;
    imports under ``if TYPE_CHECKING:`` are left out (annotations only: they never run)."""
    mod = _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if _in_type_checking(tree, node):
            continue
        lazy = id(node) not in top_level
        out += [(n, node.lineno, lazy) for n in names if n == "robrep" or n.startswith("robrep.")]
    return out


def _in_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            if any(n is node for n in ast.walk(stmt)):
                return True
    return False


def test_the_doc_places_every_top_level_module() -> None:
    names = [n for g in stated_layers() for n in g]
    assert len(names) == len(set(names)), f"a name appears twice in the stated order: {names}"
    present = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
               if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name not in ("__init__.py",)}
    present = {"robrep" if n == "__init__" else n for n in present} | {"robrep"}
    missing = sorted(present - set(names))
    assert not missing, f"docs/architecture.md's layer order does not place {missing}: add them to the order"
    assert not sorted(set(names) - present), "the stated order names modules that do not exist"


def test_imports_follow_the_stated_layers() -> None:
    rank = {n: i for i, g in enumerate(stated_layers()) for n in g}
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        src_top = _top(_module_name(path))
        for target, line, lazy in robrep_imports(path):
            dst_top = _top(target)
            if dst_top == src_top or (src_top, dst_top) in ALLOWED:
                continue
            if rank[dst_top] > rank[src_top]:
                bad.append(f"{path.relative_to(ROOT)}:{line} {'(inside a function) ' if lazy else ''}"
                           f"{src_top} imports {target} ({dst_top} is a later layer)")
    assert not bad, "imports against the layer order of docs/architecture.md:\n" + "\n".join(bad)


def test_the_checker_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    # the parser itself: a lazy relative import two levels up is found and resolved
    code = "from __future__ import annotations\n\ndef f():\n    from ..evaluate import evaluate\n"
    fake = SRC / "train" / "_layering_probe.py"
    assert not fake.exists()
    fake.write_text(code)
    try:
        assert robrep_imports(fake) == [("robrep.evaluate", 4, True)]
    finally:
        fake.unlink()


@pytest.mark.parametrize("package", ["certify", "evaluate", "info", "attacks", "models", "train", "visualize"])
def test_no_import_cycles_inside_a_package(package: str) -> None:
    """Modules of one package import each other one way only (an ``__init__`` re-exporting aside)."""
    graph: dict[str, set[str]] = {}
    for path in (SRC / package).glob("*.py"):
        if path.name == "__init__.py":
            continue
        mod = _module_name(path)
        graph[mod] = {t for t, _, _ in robrep_imports(path) if t.startswith(f"robrep.{package}.") and t != mod}
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        if seen.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if seen.get(m) == 2:
            return
        seen[m] = 1
        for t in sorted(graph.get(m, ())):
            visit(t, stack + [m])
        seen[m] = 2

    for m in sorted(graph):
        visit(m, [])
