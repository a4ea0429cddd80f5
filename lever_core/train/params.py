"""The resolved configuration of one ``lever train`` run (saved as ``RUN_DIR/config.json``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lever.train.auto import AutoParams
from lever.utils.params import Params, ParamsError, field

AUTO = "auto"


def parse_lam(text: str) -> float | str:
    """``--lam``: a number, or ``auto``."""
    import argparse

    if text == AUTO:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number in [0, 1] or 'auto'") from None

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

    data: str = field("", help="dataset folder (lever data build)")
    backbone: str = field("generic", help="backbone name (generic, or one an adapter registers)")
    out: str = field("", help="run folder (config.json, metrics.jsonl, checkpoints/, model.safetensors)")
    # Backbone settings, validated by the backbone's own Params class (``--bp KEY=VALUE``; see
    # ``lever train --backbone NAME --print-params``).
    backbone_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    soft_labels: str | None = field(
        None, help="LEVER soft labels: a SoftLabels .npz with (N + L) rows; targets "
        "t = λ·y + (1−λ)·p̂ (mode mix) or max(y, p̂) (mode augment)"
    )
    lam: float | str = field(
        0.5, parse=parse_lam,
        help="λ, weight of the ground truth in the target, or 'auto': choose λ/κ, τ_d and the "
        "calibration on a validation split (see --auto)",
    )
    kappa: float | None = field(
        None, help="per-label λ_l = n_l / (n_l + κ) instead of a constant λ (n_l: training "
        "documents of l)"
    )
    mode: str = field("mix", choices=("mix", "augment"),
                      help="target mode: mix (λ·y + (1-λ)·p̂) or augment (max(y, p̂))")
    label_rows: bool | None = field(
        None, help="train on label-as-datapoint rows too (default: on with soft labels)"
    )
    epochs: int | None = field(None, help="epochs (default: the backbone's, else 4)")
    batch_size: int | None = field(None, help="rows per process per micro-batch (default: the backbone's, else 256)")
    grad_accum: int = field(1, help="micro-batches per optimizer step")
    lr: float | None = field(None, help="learning rate of every parameter group (default: each group's)")
    # Learning rate per group name (``--group-lr GROUP=LR``); overrides ``lr``.
    group_lr: dict[str, float] = dataclasses.field(default_factory=dict)
    weight_decay: float | None = field(None, help="weight decay of every group (default: each group's)")
    schedule: str = field("cosine", choices=SCHEDULES, help="learning-rate decay after warm-up")
    warmup_steps: int | None = field(None, help="warm-up steps (default: the backbone's, else 0)")
    max_grad_norm: float = field(0.0, help="clip gradients (0: off)")
    amp: bool = field(True, help="mixed precision (CUDA only)")
    device: str = field("auto", help="auto, cpu, cuda or cuda:N")
    num_workers: int = field(0, help="DataLoader workers building batches")
    eval_every: int = field(1, help="evaluate every N epochs")
    eval_k: int = field(5, help="metrics @1..k")
    checkpoint_every_steps: int = field(0, help="also checkpoint every N optimizer steps (0: per epoch only)")
    cache_dir: str | None = field(None, help="cache folder for derived inputs (default RUN_DIR/cache)")
    seed: int = field(0, help="seed of initialisation, sampling and dropout")
    # The ``--lam auto`` search (validation split, grid, objective; ``--auto KEY=VALUE``).
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
        for name in ("epochs", "batch_size", "grad_accum", "eval_every", "eval_k"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise bad(name, "an integer >= 1")
        for name in ("warmup_steps", "checkpoint_every_steps", "num_workers"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 0:
                raise bad(name, "an integer >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.soft_labels is None and self.label_rows is None:
            return dataclasses.replace(self, label_rows=False)
        if self.label_rows is None:
            return dataclasses.replace(self, label_rows=True)
        return self


@dataclasses.dataclass
class PredictParams(Params):
    """Settings of ``lever predict`` (one flag per field)."""

    run: str = field("", help="run folder of lever train")
    data: str | None = field(None, help="dataset folder (default: the run's)")
    out: str = field("", help="output .npz (test points × labels)")
    k: int = field(100, help="labels kept per test point")
    batch_size: int = field(512, help="test points scored at once")
    device: str = field("auto", help="auto, cpu, cuda or cuda:N")
    filter: bool = field(True, help="remove the dataset's test filter pairs (--no-filter keeps them)")

    def validate(self) -> PredictParams:
        for name in ("run", "out"):
            if not getattr(self, name):
                raise ParamsError(f"PredictParams.{name}: required (--{name})")
        for name in ("k", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ParamsError(f"PredictParams.{name}={getattr(self, name)!r}: expected an integer >= 1")
        return self


# Fields that may differ between a run and its resumption: they do not change what is computed.
RESUMABLE_CHANGES = ("num_workers", "device", "cache_dir")
