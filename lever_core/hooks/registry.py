"""The backbone registry: ``lever train --backbone NAME`` finds its backbone class here.

Every plugin may answer ``lever_register_backbones`` with ``{name: BackboneClass}``; the registry
is the union, and the plugin that registered a name is remembered, so hooks can be scoped to the
backbone they serve (:func:`lever.hooks.manager.scoped_hook`). Lives next to the hooks, not the
training loop, so nothing below ``lever.train`` has to import the loop.
"""

from __future__ import annotations

from typing import Any

import pluggy


def available_backbones(plugin_manager: pluggy.PluginManager | None = None) -> dict[str, Any]:
    """``{name: BackboneClass}`` over every registered plugin; a name registered twice is an error."""
    return {name: cls for name, (cls, _) in backbone_owners(plugin_manager).items()}


def backbone_owners(plugin_manager: pluggy.PluginManager | None = None) -> dict[str, tuple[Any, str]]:
    """``{name: (BackboneClass, name of the plugin that registered it)}``."""
    if plugin_manager is None:
        from lever.hooks.manager import get_plugin_manager

        plugin_manager = get_plugin_manager()
    found: dict[str, tuple[Any, str]] = {}
    for impl in plugin_manager.hook.lever_register_backbones.get_hookimpls():
        for key, cls in (impl.function() or {}).items():
            if key in found and found[key][0] is not cls:
                raise ValueError(
                    f"backbone {key!r} registered twice: by plugin {found[key][1]!r} ({found[key][0]}) "
                    f"and by plugin {impl.plugin_name!r} ({cls})"
                )
            found[key] = (cls, impl.plugin_name)
    return found


def get_backbone_class(name: str, plugin_manager: pluggy.PluginManager | None = None) -> Any:
    """The backbone class registered under ``name``; a clear error naming the others if none is."""
    registry = available_backbones(plugin_manager)
    if name not in registry:
        raise ValueError(f"backbone {name!r}: not registered; available: {sorted(registry)}")
    return registry[name]


def make_backbone(name: str, backbone_params: Any, plugin_manager: pluggy.PluginManager | None = None):
    """An instance of backbone ``name`` configured with ``backbone_params``."""
    return get_backbone_class(name, plugin_manager)(backbone_params)
