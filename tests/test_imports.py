"""The modules of biounet import one another one way: no cycles, also through function-local imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "biounet"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def _imported_modules(tree: ast.AST, modules: set[str]) -> set[str]:
    """biounet modules named by any import in ``tree`` (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from biounet.x import y`` names x; ``from biounet import x`` names x when x is a module
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and len(parts) >= 2 and parts[1] in modules:
                found.add(parts[1])
    return found


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """``{module: modules it imports}`` for the package's modules (``__init__`` and ``__main__`` excluded)."""
    modules = {path.stem for path in source.glob("*.py") if not path.stem.startswith("__")}
    return {
        module: _imported_modules(ast.parse((source / f"{module}.py").read_text()), modules) - {module}
        for module in sorted(modules)
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search with a path stack)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target, path)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [])) is not None:
            return cycle
    return None


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_local_imports_count(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from biounet.b import g\n")
    (tmp_path / "b.py").write_text("from biounet import a\n")
    assert import_graph(tmp_path) == {"a": {"b"}, "b": {"a"}}


def test_package_has_no_import_cycle():
    graph = import_graph()
    assert {"predict", "export", "data", "synthetic"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
