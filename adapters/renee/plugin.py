"""Hook implementations of the Renée adapter, loaded through the ``lever.adapters`` entry point.

* ``lever_register_backbones``: the ``renee`` backbone of ``lever train --backbone renee``; the
  shared loop builds each batch's sparse targets through the ``lever_teacher_rows`` /
  ``lever_targets`` hooks (``t = λ·y + (1−λ)·p̂`` with soft labels) and Renée's hand-written
  backward subtracts whatever targets it is handed.
* ``lever_adapter``: ``lever.wrap(renee_module, soft_labels)`` trains a :class:`ReneeModule` in a
  user's own loop with the same fused loss (no autograd graph over [B, L]).
"""

from __future__ import annotations

from typing import Any

from lever.hooks import Adapter, hookimpl


class ReneeAdapter(Adapter):
    """Runs a ``ReneeModule`` in a LEVER training step: the encoder with autograd, the classifier
    through ``FusedOvABCE`` (σ(z) − t written in place, two matmuls), so ``loss.backward()`` gives
    the LEVER gradient of both. ``reduction="mean"`` divides by B·L like ``BCEWithLogitsLoss``;
    Renée's own recipe is ``"sum"``."""

    name = "renee"

    def training_loss(self, inputs: Any, targets, params, hook):
        from lever_adapters.renee.model import fused_ova_bce

        clf = self.classifier.classifier
        emb = self.classifier.head(inputs).float()
        loss = fused_ova_bce(emb, clf.weight, targets.to(emb.device).col_slice(clf.lo, clf.hi))
        return loss / (emb.shape[0] * clf.num_labels) if params.reduction == "mean" else loss


@hookimpl
def lever_register_backbones() -> dict[str, type]:
    from lever_adapters.renee.train import ReneeBackbone

    return {ReneeBackbone.name: ReneeBackbone}


@hookimpl
def lever_adapter(classifier: Any) -> Adapter | None:
    from lever_adapters.renee.model import ReneeModule

    return ReneeAdapter(classifier) if isinstance(classifier, ReneeModule) else None
