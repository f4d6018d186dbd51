"""core/ has no import circle, lazy imports inside functions included.

A circle "works" only while every module in it happens to defer one import to call time; the
next refactor that moves that import to the top fails at start-up. The health reason codes once
closed one (auth -> errors -> health -> auth), so the check reads every import in core's source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CORE = Path(__file__).resolve().parents[2] / "core"


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    return module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]


def core_imports(source: str, package: str, modules: set[str]) -> set[str]:
    """The core modules ``source`` (a module of ``package``) imports anywhere: top level or in functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # "from core import errors" imports the module core.errors; "from core.errors import X" core.errors.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            # The module itself, or the nearest package above it that is one of ours.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != "core":
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary circle, each reported once from its smallest module."""
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    found.append([*path, start])
                elif nxt > start and nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    return found


def test_the_cycle_finder_sees_a_circle_through_a_lazy_import():
    graph = {"core.a": {"core.b"}, "core.b": {"core.c"}, "core.c": {"core.a"}, "core.d": {"core.a"}}
    assert cycles(graph) == [["core.a", "core.b", "core.c", "core.a"]]
    source = ("import os\nfrom core.errors import NotReady\n\n"
              "def f():\n    from core import health\n    from . import http\n")
    modules = {"core", "core.errors", "core.health", "core.http"}
    assert core_imports(source, "core", modules) == {"core.errors", "core.health", "core.http"}


def test_core_has_no_import_circle():
    paths = sorted(CORE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): core_imports(path.read_text(), package_of(path), modules) for path in paths}
    assert "core.errors" in graph["core.web.health"]  # the graph is read, not empty
    assert cycles(graph) == []
