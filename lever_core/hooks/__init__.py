"""lever's hooks: hookspecs (:mod:`lever.hooks.specs`), the plugin manager, the adapter base
class and the generic adapter. Adapters implement hooks with :data:`hookimpl`."""

from __future__ import annotations

from lever.hooks.adapter import Adapter, ClassifierOutput, NoAdapterError
from lever.hooks.manager import (
    ENTRY_POINT_GROUP,
    get_plugin_manager,
    installed_adapters,
    select_adapter,
)
from lever.hooks.specs import hookimpl, hookspec

__all__ = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "ClassifierOutput",
    "NoAdapterError",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "installed_adapters",
    "select_adapter",
]
