"""The plugin manager: lever's hookspecs, its defaults and every installed adapter; and the scoped
view of the hooks that one backbone's training step calls."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pluggy

from lever.hooks import defaults, specs

ENTRY_POINT_GROUP = "lever.adapters"
DEFAULTS_PLUGIN = "lever.defaults"


class NoAdapterError(TypeError):
    """No installed adapter accepts a classifier."""


def get_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A new plugin manager with lever's hookspecs, the defaults and (unless ``load_entry_points``
    is False) every plugin of the ``lever.adapters`` entry-point group, the built-in ``generic``,
    ``renee``, ``elias`` and ``cascadexml`` adapters included. A hook implementation that matches
    no hookspec (a misspelt ``lever_*`` name) is an error here, not silently ignored.

    A third-party package adds an adapter by declaring, in its pyproject.toml::

        [project.entry-points."lever.adapters"]
        mybackbone = "my_package.lever_plugin"
    """
    pm = pluggy.PluginManager(specs.PROJECT)
    pm.add_hookspecs(specs)
    pm.register(defaults, name=DEFAULTS_PLUGIN)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
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


class ScopedHooks:
    """The hooks one backbone's training step calls: ``hooks.lever_loss(levels=..., ...)``.

    Plugins that register other backbones (and not this one) are left out, so their hooks never
    run for this backbone; every call is given ``backbone=<name>``, so plugins that register no
    backbone (modifiers for all) can tell who they serve. Picklable (DataLoader workers)."""

    def __init__(self, pm: pluggy.PluginManager | None, backbone: str | None):
        self.pm, self.backbone = pm, backbone
        self._removed = _plugins_of_other_backbones(pm, backbone) if pm is not None else []

    def caller(self, name: str):
        """The pluggy hook caller of ``name`` restricted to this scope (``None`` without a pm)."""
        if self.pm is None:
            return None
        return self.pm.subset_hook_caller(name, remove_plugins=self._removed)

    def __getattr__(self, name: str):
        if not name.startswith("lever_"):
            raise AttributeError(name)
        caller = self.caller(name)
        if caller is None:  # no plugin manager: lever's own defaults answer
            return _default_call(name)
        return functools.partial(caller, backbone=self.backbone)

    def overridden(self, name: str) -> bool:
        """Whether a plugin in scope (not lever's defaults) implements hook ``name``."""
        caller = self.caller(name)
        if caller is None:
            return False
        return any(impl.plugin_name != DEFAULTS_PLUGIN for impl in caller.get_hookimpls())


def _default_call(name: str):
    """``lever.hooks.defaults``' implementation of hook ``name`` (given only the arguments it
    names, as pluggy would), or a call answering ``None`` where lever has no default."""
    impl = getattr(defaults, name, None)
    if impl is None:
        return lambda **kwargs: None
    names = set(inspect.signature(impl).parameters)
    return lambda **kwargs: impl(**{k: v for k, v in kwargs.items() if k in names})


def _plugins_of_other_backbones(pm: pluggy.PluginManager, backbone: str | None) -> list[Any]:
    """Plugins that register backbones, none of them ``backbone``."""
    from lever.hooks.registry import backbone_owners

    owners: dict[str, set[str]] = {}
    for name, (_, plugin_name) in backbone_owners(pm).items():
        owners.setdefault(plugin_name, set()).add(name)
    return [pm.get_plugin(p) for p, names in owners.items() if backbone not in names]


def scoped_hooks(pm: pluggy.PluginManager | ScopedHooks | None, backbone: str | None) -> ScopedHooks:
    """``pm``'s hooks as seen by ``backbone`` (a ``ScopedHooks`` is returned as it is)."""
    return pm if isinstance(pm, ScopedHooks) else ScopedHooks(pm, backbone)


def default_targets_only(hooks: pluggy.PluginManager | ScopedHooks | None) -> bool:
    """Whether a batch's targets come from lever's defaults alone (no plugin in scope implements
    ``lever_teacher_rows`` or ``lever_targets``), so they may be built for all rows at once."""
    hooks = scoped_hooks(hooks, None)
    return not (hooks.overridden("lever_teacher_rows") or hooks.overridden("lever_targets"))


def select_adapter(classifier, pm: pluggy.PluginManager):
    """The adapter (a ``Backbone`` instance) the installed plugins choose for ``classifier``; a
    clear error if none does."""
    adapter = pm.hook.lever_adapter(classifier=classifier)
    if adapter is None:
        raise NoAdapterError(
            f"no lever adapter accepts a {type(classifier).__module__}.{type(classifier).__qualname__}; "
            f"installed adapters: {', '.join(installed_adapters(pm)) or 'none'}. The generic adapter "
            "takes any torch.nn.Module returning logits [B, L] or (logits [B, K], label_ids [B, K]); "
            "other classifiers need an adapter registered under the 'lever.adapters' entry point"
        )
    return adapter
