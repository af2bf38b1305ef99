"""Imports point one way: applications -> orchestration -> assets -> checks -> producer ->
adapters (parity.io) -> core (parity.core), and no module imports itself back through others.

The rule is read from the source (every ``import`` statement, function-level ones included),
so a back-edge fails here before it becomes a cycle at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("parity", "checks", "assets", "orchestration")

#: Lower layers never import higher ones.
LAYERS = (
    ("parity.core", 0),
    ("parity.io", 1),
    ("parity.producer", 2),
    ("checks", 3),
    ("assets", 4),
    ("orchestration", 5),
    ("parity.app", 6),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            found[_module_name(path)] = path
    return found


def layer_of(module: str) -> int | None:
    for prefix, rank in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name belongs to (``a.b.c`` -> ``a.b`` if only that exists)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            target = _resolve(name, modules)
            if target is not None:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    edges = {}
    for name, path in modules.items():
        targets = imports_of(path, modules) - {name}
        # A package's __init__ is not an edge of its own modules (``from parity.io import x``
        # names the module x, resolved above).
        edges[name] = {t for t in targets if not name.startswith(t + ".")}
    return edges


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in graph() if m != "parity" and layer_of(m) is None]
    assert unplaced == []


def test_imports_point_down_the_layers() -> None:
    back_edges = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in sorted(graph().items())
        for target in sorted(targets)
        if (layer_of(source) or 0) < (layer_of(target) or 0)
    ]
    assert back_edges == []


def test_no_import_cycles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("package", ["parity.core", "parity.io", "parity.producer"])
def test_the_library_never_imports_dagster_or_great_expectations(package: str) -> None:
    offenders = []
    for name, path in _modules().items():
        if layer_of(name) != layer_of(package):
            continue
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            roots = []
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = [node.module.split(".")[0]]
            offenders += [f"{name}: {r}" for r in roots if r in ("dagster", "great_expectations")]
    assert offenders == []


def test_the_rule_catches_a_back_edge(tmp_path: Path) -> None:
    """The checker itself: a core module importing an adapter is reported."""
    fake = tmp_path / "m.py"
    fake.write_text("from parity.io import files\n", "utf-8")
    modules = _modules()
    assert "parity.io.files" in imports_of(fake, modules)
    core, adapter = layer_of("parity.core.events"), layer_of("parity.io.files")
    assert core is not None and adapter is not None and core < adapter
