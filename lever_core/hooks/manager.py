"""The plugin manager: lever's hookspecs, its built-in plugins, and every installed adapter."""

from __future__ import annotations

import pluggy

from lever.hooks import defaults, specs

ENTRY_POINT_GROUP = "lever.adapters"
DEFAULTS_PLUGIN = "lever.defaults"


def get_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A new plugin manager with lever's hookspecs, the defaults and (unless ``load_entry_points``
    is False) every plugin of the ``lever.adapters`` entry-point group, the built-in ``generic``,
    ``renee``, ``elias`` and ``cascadexml`` adapters included.

    A third-party package adds an adapter by declaring, in its pyproject.toml::

        [project.entry-points."lever.adapters"]
        mybackbone = "my_package.lever_plugin"
    """
    pm = pluggy.PluginManager(specs.PROJECT)
    pm.add_hookspecs(specs)
    pm.register(defaults, name=DEFAULTS_PLUGIN)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


def installed_adapters(pm: pluggy.PluginManager) -> list[str]:
    """The registered adapter plugins (all but lever's defaults), with the distribution that
    installed each where known, e.g. ``renee (lever-xc 0.1.0)``."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in pm.list_name_plugin():
        if name == DEFAULTS_PLUGIN:
            continue
        dist = dists.get(id(plugin))
        out.append(f"{name} ({dist.project_name} {dist.version})" if dist is not None else name)
    return sorted(out)


def default_targets_only(pm: pluggy.PluginManager | None) -> bool:
    """Whether a batch's targets come from lever's defaults alone (no plugin implements
    ``lever_teacher_rows`` or ``lever_targets``), so they may be built for all rows at once."""
    if pm is None:
        return True
    hooks = (pm.hook.lever_teacher_rows, pm.hook.lever_targets)
    return all(impl.plugin_name == DEFAULTS_PLUGIN for hook in hooks for impl in hook.get_hookimpls())


def select_adapter(classifier, pm: pluggy.PluginManager):
    """The adapter the installed plugins choose for ``classifier``; a clear error if none does."""
    from lever.hooks.adapter import NoAdapterError

    adapter = pm.hook.lever_adapter(classifier=classifier)
    if adapter is None:
        raise NoAdapterError(
            f"no lever adapter accepts a {type(classifier).__module__}.{type(classifier).__qualname__}; "
            f"installed adapters: {', '.join(installed_adapters(pm)) or 'none'}. The generic adapter "
            "takes any torch.nn.Module returning logits [B, L] or (logits [B, K], label_ids [B, K]); "
            "other classifiers need an adapter registered under the 'lever.adapters' entry point"
        )
    return adapter
