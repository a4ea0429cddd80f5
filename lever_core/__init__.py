"""lever: LEVER (ICLR 2024) label-variance reduction for extreme classifiers.

Heavy submodules load on first use, so ``import lever`` stays cheap.
"""

from __future__ import annotations

from lever._version import __version__
from lever.utils.lazy import lazy_exports

_LAZY = {
    "XCDataset": "lever.data",
    "SoftLabels": "lever.soft_labels",
    "wrap": "lever.wrapper",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = ["SoftLabels", "XCDataset", "__version__", "wrap"]
