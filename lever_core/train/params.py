"""The resolved configuration of one ``lever train`` run (saved as ``RUN_DIR/config.json``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lever.utils.params import Params, ParamsError

SCHEDULES = ("cosine", "linear", "constant")


@dataclasses.dataclass
class TrainParams(Params):
    """Settings shared by every backbone; backbone-specific ones live in ``backbone_params``.

    Batch arithmetic: one optimizer step sees ``batch_size × world_size × grad_accum`` rows (the
    global batch). The loss is summed over labels and divided by the number of rows in the global
    batch, so 2 processes × batch b, 1 process × accumulation 2 × batch b and 1 process × batch 2b
    are the same optimisation.
    """

    data: str = ""
    backbone: str = "generic"
    out: str = ""
    # Backbone settings, validated by the backbone's own Params class (see ``lever train
    # --backbone NAME --print-params``).
    backbone_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    # LEVER soft labels: a SoftLabels .npz with (N + L) rows; targets t = λ·y + (1−λ)·p̂ (mode
    # "mix") or max(y, p̂) (mode "augment"), see lever.loss.soft_targets.
    soft_labels: str | None = None
    lam: float = 0.5
    mode: str = "mix"
    # Train on label-as-datapoint rows too (docs + labels). None: on iff soft labels are given.
    label_rows: bool | None = None
    epochs: int = 4  # sized for the generic backbone on WordNet (one run ≲ 10 min on 1 CPU core)
    batch_size: int = 256
    grad_accum: int = 1
    # Base learning rate of every parameter group; ``group_lr`` overrides it per group name.
    lr: float | None = None
    group_lr: dict[str, float] = dataclasses.field(default_factory=dict)
    weight_decay: float | None = None
    schedule: str = "cosine"
    warmup_steps: int = 0
    max_grad_norm: float = 0.0
    amp: bool = True
    device: str = "auto"
    num_workers: int = 0
    eval_every: int = 1
    eval_k: int = 5
    checkpoint_every_steps: int = 0
    # Where backbones cache derived inputs (e.g. frozen-encoder embeddings); default RUN/cache.
    cache_dir: str | None = None
    seed: int = 0

    def validate(self) -> TrainParams:
        def bad(field: str, expected: str) -> ParamsError:
            return ParamsError(f"TrainParams.{field}={getattr(self, field)!r}: expected {expected}")

        if not self.data:
            raise bad("data", "a dataset folder")
        if not self.out:
            raise bad("out", "a run folder")
        if not 0.0 <= self.lam <= 1.0:
            raise bad("lam", "a number in [0, 1]")
        from lever.loss import MODES

        if self.mode not in MODES:
            raise bad("mode", f"one of {MODES}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"one of {SCHEDULES}")
        for field in ("epochs", "batch_size", "grad_accum", "eval_every", "eval_k"):
            if int(getattr(self, field)) < 1:
                raise bad(field, "an integer >= 1")
        for field in ("warmup_steps", "checkpoint_every_steps", "num_workers"):
            if int(getattr(self, field)) < 0:
                raise bad(field, "an integer >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.soft_labels is None and self.label_rows is None:
            return dataclasses.replace(self, label_rows=False)
        if self.label_rows is None:
            return dataclasses.replace(self, label_rows=True)
        return self


# Fields that may differ between a run and its resumption: they do not change what is computed.
RESUMABLE_CHANGES = ("num_workers", "device", "cache_dir")
