"""Hook implementations of the ELIAS adapter, loaded through the ``lever.adapters`` entry point.

One class, :class:`lever_adapters.elias.train.EliasBackbone`, serves both entry points:
``lever train --backbone elias`` (``lever_register_backbones``) and ``lever.wrap(elias_module,
soft_labels)`` (``lever_adapter``). LEVER reaches ELIAS through lever's default hooks, in its
scope: blended targets (``lever_targets``), cluster targets projected through each label's parent
cluster (``lever_level_targets``), teacher clusters and labels forced into the training beam and
shortlist after the positives (``lever_shortlist``) and the teacher-aware index Y + μ·T
(``lever_label_index``).
"""

from __future__ import annotations

from typing import Any

from lever.hooks import hookimpl


@hookimpl
def lever_register_backbones() -> dict[str, type]:
    from lever_adapters.elias.train import EliasBackbone

    return {EliasBackbone.name: EliasBackbone}


@hookimpl
def lever_adapter(classifier: Any):
    from lever_adapters.elias.train import EliasBackbone

    return EliasBackbone() if EliasBackbone.accepts(classifier) else None
