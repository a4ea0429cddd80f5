"""The resolved configuration of one ``lever train`` run (saved as ``RUN_DIR/config.json``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lever.train.auto import AutoParams
from lever.utils.params import Params, ParamsError

AUTO = "auto"

SCHEDULES = ("cosine", "linear", "constant")
# Loop settings a backbone may default (``Backbone.train_defaults``); these when it does not.
LOOP_DEFAULTS: dict[str, Any] = {"epochs": 4, "batch_size": 256, "warmup_steps": 0}


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
    # λ in [0, 1], or "auto": chosen on a validation split (``auto``; lever.train.auto).
    lam: float | str = 0.5
    # Per-label λ_l = n_l / (n_l + κ) instead of the constant ``lam`` (None: constant λ).
    kappa: float | None = None
    mode: str = "mix"
    # Train on label-as-datapoint rows too (docs + labels). None: on iff soft labels are given.
    label_rows: bool | None = None
    # None: the backbone's measured CPU default (``Backbone.train_defaults``), else LOOP_DEFAULTS.
    epochs: int | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    # Base learning rate of every parameter group; ``group_lr`` overrides it per group name.
    lr: float | None = None
    group_lr: dict[str, float] = dataclasses.field(default_factory=dict)
    weight_decay: float | None = None
    schedule: str = "cosine"
    warmup_steps: int | None = None
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
    # The ``--lam auto`` search (validation split, grid, objective).
    auto: AutoParams = dataclasses.field(default_factory=AutoParams)

    def with_defaults(self, backbone_defaults: dict[str, Any]) -> TrainParams:
        """Fill the fields left ``None`` from the backbone's defaults, then :data:`LOOP_DEFAULTS`."""
        unknown = sorted(set(backbone_defaults) - set(LOOP_DEFAULTS))
        if unknown:
            raise ParamsError(f"backbone train_defaults name {unknown}; allowed: {sorted(LOOP_DEFAULTS)}")
        filled = {
            k: backbone_defaults.get(k, LOOP_DEFAULTS[k])
            for k in LOOP_DEFAULTS
            if getattr(self, k) is None
        }
        return dataclasses.replace(self, **filled) if filled else self

    def validate(self) -> TrainParams:
        def bad(field: str, expected: str) -> ParamsError:
            return ParamsError(f"TrainParams.{field}={getattr(self, field)!r}: expected {expected}")

        if not self.data:
            raise bad("data", "a dataset folder")
        if not self.out:
            raise bad("out", "a run folder")
        if self.lam != AUTO and not (isinstance(self.lam, (int, float)) and 0.0 <= self.lam <= 1.0):
            raise bad("lam", f"a number in [0, 1] or {AUTO!r}")
        if self.kappa is not None and not (isinstance(self.kappa, (int, float)) and self.kappa >= 0):
            raise bad("kappa", "None or a number >= 0")
        if self.lam == AUTO:
            self.auto.validate()
            return self  # label_rows stays as given: each cell of the search resolves its own
        from lever.loss import MODES

        if self.mode not in MODES:
            raise bad("mode", f"one of {MODES}")
        if self.kappa is not None and self.mode != "mix":
            raise bad("kappa", "None with mode 'augment' (per-label λ weighs y against p̂ in mode 'mix')")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"one of {SCHEDULES}")
        # None (epochs, batch_size, warmup_steps): the backbone's default, filled by with_defaults.
        for field in ("epochs", "batch_size", "grad_accum", "eval_every", "eval_k"):
            if getattr(self, field) is not None and int(getattr(self, field)) < 1:
                raise bad(field, "an integer >= 1")
        for field in ("warmup_steps", "checkpoint_every_steps", "num_workers"):
            if getattr(self, field) is not None and int(getattr(self, field)) < 0:
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
