"""Hook implementations of the generic adapter, loaded through the ``lever.adapters`` entry point
(``generic = "lever_adapters.generic.plugin"`` in pyproject.toml). A third-party adapter has the
same two hooks: one class serves ``lever train`` (registered by name) and ``lever.wrap``
(recognised by ``accepts``)."""

from __future__ import annotations

from typing import Any

from lever.hooks.specs import hookimpl


@hookimpl
def lever_register_backbones() -> dict[str, Any]:
    # Imported lazily so loading the plugin (every lever command does) stays cheap.
    from lever_adapters.generic.backbone import GenericBackbone

    return {GenericBackbone.name: GenericBackbone}


@hookimpl(trylast=True)  # the fallback: any torch.nn.Module no other adapter claims
def lever_adapter(classifier: Any):
    from lever_adapters.generic.backbone import GenericBackbone

    return GenericBackbone() if GenericBackbone.accepts(classifier) else None
