"""The generic adapter: any ``torch.nn.Module`` whose training forward returns dense logits
``[B, L]``, or a ``(logits [B, K], label_ids [B, K])`` pair for a shortlist."""

from __future__ import annotations

from typing import Any

import torch

from lever.hooks.adapter import Adapter, ClassifierOutput
from lever.hooks.specs import hookimpl
from lever.loss import SparseTargets


class GenericAdapter(Adapter):
    """Calls ``classifier(inputs)``, exactly as a plain training loop would, and reads its output."""

    name = "generic"

    def training_output(self, inputs: Any, targets: SparseTargets, hook: Any) -> ClassifierOutput:
        out = self.classifier(inputs)
        return self.parse_output(out, targets)

    def parse_output(self, out: Any, targets: SparseTargets) -> ClassifierOutput:
        who = type(self.classifier).__name__
        batch, num_labels = targets.shape
        if isinstance(out, ClassifierOutput):
            result = out
        elif isinstance(out, torch.Tensor):
            result = ClassifierOutput(out)
        elif (
            isinstance(out, (tuple, list))
            and len(out) == 2
            and all(isinstance(x, torch.Tensor) for x in out)
        ):
            result = ClassifierOutput(out[0], out[1])
        else:
            raise TypeError(
                f"{who} returned {type(out).__name__}; the generic adapter expects dense logits "
                "[B, L] or a (logits [B, K], label_ids [B, K]) pair"
            )
        logits = result.logits
        if logits.dim() != 2 or logits.shape[0] != batch:
            raise ValueError(f"{who} returned logits of shape {tuple(logits.shape)}; expected [{batch}, ...]")
        if result.is_shortlist:
            if result.label_ids.shape != logits.shape or result.label_ids.is_floating_point():
                raise ValueError(
                    f"{who} returned shortlist label ids of shape {tuple(result.label_ids.shape)} "
                    f"({result.label_ids.dtype}); expected integer ids shaped like the logits {tuple(logits.shape)}"
                )
        elif logits.shape[1] != num_labels:
            raise ValueError(
                f"{who} returned dense logits over {logits.shape[1]} labels but the targets have "
                f"{num_labels} (dataset labels); return [B, {num_labels}] or a (logits, label_ids) shortlist"
            )
        return result


@hookimpl(trylast=True)
def lever_adapter(classifier: Any) -> Adapter | None:
    if isinstance(classifier, torch.nn.Module):
        return GenericAdapter(classifier)
    return None


@hookimpl
def lever_register_backbones() -> dict[str, Any]:
    # ``lever train --backbone generic``: a linear head on frozen-encoder embeddings trained through
    # this adapter's dense-logits path. Imported lazily so loading the plugin stays cheap.
    from lever_adapters.generic.backbone import GenericBackbone

    return {"generic": GenericBackbone}
