"""Optional dependencies: imported only where used, and when missing, one line that names the pip extra.

>>> require("json", "reading JSON", extra="export").__name__
'json'
>>> available("a_module_that_is_not_there")
False
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


class MissingExtra(ModuleNotFoundError):
    """An optional dependency is not installed; the message says which pip extra installs it."""


def require(module: str, purpose: str, *, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming ``pip install 'biounet[extra]'``.

    ``package`` is the distribution to name when it differs from the module (``python-elf`` for ``elf``).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise MissingExtra(missing_message(module, purpose, extra=extra, package=package)) from err


def missing_message(module: str, purpose: str, *, extra: str, package: str | None = None) -> str:
    """``"<purpose> needs <package>: pip install 'biounet[<extra>]' (or pip install <package>)"``."""
    name = package or module.split(".")[0]
    return f"{purpose} needs {name}: pip install 'biounet[{extra}]' (or pip install {name})"


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
