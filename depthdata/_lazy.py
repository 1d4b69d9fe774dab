"""Package attributes that import their module on first use (PEP 562).

Used by packages whose public names pull in heavy libraries (torch for ``depthdata.stream``,
pandas/scipy/matplotlib for ``depthdata.eda``), so that importing a light module of the package
(the CLI does) does not load them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose names ``exports`` maps to their modules."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def dir_() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return getattr_, dir_
