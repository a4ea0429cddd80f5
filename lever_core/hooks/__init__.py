"""lever's hooks: hookspecs (:mod:`lever.hooks.specs`), the plugin manager and its scoped view
(:mod:`lever.hooks.manager`), and the backbone registry (:mod:`lever.hooks.registry`). Adapters
implement hooks with :data:`hookimpl`; the contract they implement is
:class:`lever.train.backbone.Backbone`."""

from __future__ import annotations

from lever.hooks.manager import (
    ENTRY_POINT_GROUP,
    NoAdapterError,
    ScopedHooks,
    get_plugin_manager,
    installed_adapters,
    scoped_hooks,
    select_adapter,
)
from lever.hooks.specs import hookimpl, hookspec
from lever.loss import LABELS, Level

__all__ = [
    "ENTRY_POINT_GROUP",
    "LABELS",
    "Level",
    "NoAdapterError",
    "ScopedHooks",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "installed_adapters",
    "scoped_hooks",
    "select_adapter",
]
