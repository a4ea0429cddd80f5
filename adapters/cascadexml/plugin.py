"""Hook implementations of the CascadeXML adapter, loaded through the ``lever.adapters`` entry point.

One class, :class:`lever_adapters.cascadexml.train.CascadeXMLBackbone`, serves both entry points:
``lever train --backbone cascadexml`` (``lever_register_backbones``) and
``lever.wrap(cascade_module, soft_labels)`` (``lever_adapter``). Teacher labels reach each level's
training beam through lever's default ``lever_shortlist`` (positives first, then teacher nodes);
cluster targets come from the default ``lever_level_targets`` (max over the cluster's labels).
"""

from __future__ import annotations

from typing import Any

from lever.hooks import hookimpl


@hookimpl
def lever_register_backbones() -> dict[str, type]:
    from lever_adapters.cascadexml.train import CascadeXMLBackbone

    return {CascadeXMLBackbone.name: CascadeXMLBackbone}


@hookimpl
def lever_adapter(classifier: Any):
    from lever_adapters.cascadexml.train import CascadeXMLBackbone

    return CascadeXMLBackbone() if CascadeXMLBackbone.accepts(classifier) else None
