"""biounet's stages import one another one way: each layer only the layers below it, no cycle inside a layer,
also through function-local imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "biounet"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version",),
    ("core",),
    ("data",),
    ("inference",),
    ("evaluation",),
    ("training",),
    ("integrations",),
    ("api", "bioimageio"),
    ("cli",),
)
"""Bottom to top: a module may import its own layer and the ones above it in this list, never a later one. The
root package (``biounet/__init__``, lazy re-exports) and ``__main__`` stand above all."""


def module_names(source: Path = SOURCE) -> dict[str, Path]:
    """``{dotted name below the package: file}`` for every module, ``__init__`` files named by their package."""
    names = {}
    for path in sorted(source.rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts != ["__main__"]:
            names[".".join(parts)] = path
    return names


def _imported_modules(tree: ast.AST, modules: set[str]) -> set[str]:
    """Modules of ``modules`` named by any import in ``tree`` (top level or inside functions), the longest match."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from biounet.x import y`` names x, or x.y when y is a module
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != PACKAGE:
                continue
            for end in range(len(parts), 1, -1):
                if ".".join(parts[1:end]) in modules:
                    found.add(".".join(parts[1:end]))
                    break
    return found


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """``{module: modules it imports}`` for the package's modules."""
    names = module_names(source)
    return {name: _imported_modules(ast.parse(path.read_text()), set(names)) - {name}
            for name, path in names.items()}


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for level, members in enumerate(LAYERS):
        if top in members:
            return level
    raise KeyError(f"module biounet.{module} is in no layer of tests/test_imports.py's LAYERS")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                  if layer_of(target) > layer_of(module))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search with a path stack)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
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


def test_local_imports_and_subpackages_count(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "core" / "a.py").write_text("def f():\n    from biounet.data.b import g\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "b.py").write_text("from biounet.core import a\n")
    graph = import_graph(tmp_path)
    assert graph == {"core": set(), "core.a": {"data.b"}, "data.b": {"core", "core.a"}}
    assert upward_imports(graph) == ["core.a -> data.b"]


def test_every_module_has_a_layer():
    for module in module_names():
        layer_of(module)
    with pytest.raises(KeyError, match="no layer"):
        layer_of("flat_module")


def test_no_module_imports_a_layer_above_its_own():
    graph = import_graph()
    assert {"inference.predict", "integrations.export", "data.datasets", "data.synthetic", "cli"} <= set(graph)
    assert upward_imports(graph) == []


def test_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
