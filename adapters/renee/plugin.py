"""Hook implementations of the Renée adapter, loaded through the ``lever.adapters`` entry point.

One class, :class:`lever_adapters.renee.train.ReneeBackbone`, serves both entry points:

* ``lever_register_backbones``: the ``renee`` backbone of ``lever train --backbone renee``; the
  shared loop builds each batch's sparse targets through the ``lever_teacher_rows`` /
  ``lever_targets`` hooks (``t = λ·y + (1−λ)·p̂`` with soft labels) and Renée's hand-written
  backward subtracts whatever targets it is handed.
* ``lever_adapter``: ``lever.wrap(renee_module, soft_labels)`` trains a :class:`ReneeModule` in a
  user's own loop with the same fused loss (no autograd graph over [B, L]).

A ``lever_loss`` implementation in Renée's scope switches both to the autograd path through the
hook (dense logits, one level), or is refused for a label-sharded classifier.
"""

from __future__ import annotations

from typing import Any

from lever.hooks import hookimpl


@hookimpl
def lever_register_backbones() -> dict[str, type]:
    from lever_adapters.renee.train import ReneeBackbone

    return {ReneeBackbone.name: ReneeBackbone}


@hookimpl
def lever_adapter(classifier: Any):
    from lever_adapters.renee.train import ReneeBackbone

    return ReneeBackbone() if ReneeBackbone.accepts(classifier) else None
