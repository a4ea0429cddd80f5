"""Package attributes that import their module on first use, so ``import lever`` and
``lever --help`` stay fast while ``lever.XCDataset`` and friends still work."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, mapping: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``mapping`` maps an attribute to its module."""

    def __getattr__(name: str) -> Any:
        if name in mapping:
            return getattr(importlib.import_module(mapping[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *mapping})

    return __getattr__, __dir__
