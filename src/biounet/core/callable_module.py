"""Modules that can be called: ``biounet.train(...)`` and ``biounet.evaluate(...)`` while ``biounet.training.train.fit`` and
``biounet.evaluation.evaluate.evaluate_folders`` stay where they are.

A package attribute named like a submodule is replaced by that submodule as soon as it is imported, so the
command line's jobs cannot be plain functions called ``biounet.training.train`` and ``biounet.evaluation.evaluate``; instead those
modules become callable, running one function of theirs.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable
from typing import Any


def make_callable(module_name: str, function: Callable[..., Any]) -> None:
    """Let the (imported) module ``module_name`` be called as ``function``, with its signature and docstring."""

    class _CallableModule(types.ModuleType):
        @functools.wraps(function)
        def __call__(self, *args: Any, **kwargs: Any) -> Any:  # forwards to one named function, nothing else
            return function(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
