"""What an adapter is: the object that runs one kind of classifier in a LEVER training step."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from lever.loss import LeverLossParams, SparseTargets


class NoAdapterError(TypeError):
    """No installed adapter accepts a classifier."""


@dataclasses.dataclass
class ClassifierOutput:
    """A classifier's training scores: dense ``logits [B, L]`` (``label_ids`` is ``None``), or
    shortlisted ``logits [B, K]`` for ``label_ids [B, K]`` (padding ids ``< 0`` or ``>= L``)."""

    logits: torch.Tensor
    label_ids: torch.Tensor | None = None

    @property
    def is_shortlist(self) -> bool:
        return self.label_ids is not None


class Adapter:
    """Runs ``classifier`` in a training step and returns the LEVER loss.

    Subclasses implement :meth:`training_output`; backbones whose classifier has a hand-written
    backward (Renée) override :meth:`training_loss` instead, returning a scalar whose
    ``backward()`` produces the LEVER gradient (e.g. through ``lever.loss.fused_grad_``).
    An adapter never changes what the classifier computes at inference.
    """

    name: ClassVar[str] = ""

    def __init__(self, classifier: Any):
        self.classifier = classifier

    def training_output(self, inputs: Any, targets: SparseTargets, hook: Any) -> ClassifierOutput:
        """The classifier's scores on ``inputs``. ``targets`` and ``hook`` (the plugin manager's
        ``pm.hook``) are there for shortlisting classifiers that call ``hook.lever_shortlist``."""
        raise NotImplementedError(
            f"adapter {self.name!r} implements neither training_output nor training_loss"
        )

    def training_loss(
        self, inputs: Any, targets: SparseTargets, params: LeverLossParams, hook: Any
    ) -> torch.Tensor:
        output = self.training_output(inputs, targets, hook)
        loss = hook.lever_loss(output=output, targets=targets, params=params)
        if loss is None:
            raise RuntimeError(f"adapter {self.name!r}: no lever_loss implementation returned a loss")
        return loss

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, classifier={type(self.classifier).__name__})"
