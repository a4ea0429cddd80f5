"""lever: LEVER (ICLR 2024) label-variance reduction for extreme classifiers.

Heavy submodules load on first use, so ``import lever`` stays cheap.
"""

from __future__ import annotations

import importlib

from lever._version import __version__

_LAZY = {
    "XCDataset": "lever.data",
    "SoftLabels": "lever.soft_labels",
    "wrap": "lever.wrapper",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lever' has no attribute {name!r}")


__all__ = ["SoftLabels", "XCDataset", "__version__", "wrap"]
