"""Every function in the package stays short: at most 60 lines after its docstring (STYLE.md: functions stay short)."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "biounet"
LIMIT = 60


def function_lengths(source: str) -> dict[str, int]:
    """``{qualified name: lines from the def to its end, its docstring left out}`` for every function in a module."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    assert child.end_lineno is not None
                    lines = child.end_lineno - child.lineno + 1
                    first = child.body[0]
                    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                            and isinstance(first.value.value, str):
                        lines -= (first.end_lineno or first.lineno) - first.lineno + 1
                    lengths[name] = lines
                visit(child, f"{name}.")

    visit(ast.parse(source), "")
    return lengths


def test_function_lengths_count_code_not_docstrings():
    source = 'def f():\n    """Doc\n    string."""\n    a = 1\n    return a\n\n\nclass C:\n    def g(self):\n        pass\n'
    assert function_lengths(source) == {"f": 3, "C.g": 2}


def test_no_function_longer_than_the_limit():
    long = [f"{path.relative_to(SOURCE)}:{name} ({lines} lines)"
            for path in sorted(SOURCE.rglob("*.py"))
            for name, lines in function_lengths(path.read_text()).items() if lines > LIMIT]
    assert long == [], f"functions over {LIMIT} lines: " + ", ".join(long)
