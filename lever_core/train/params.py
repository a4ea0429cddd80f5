"""The resolved configuration of one ``lever train`` run (saved as ``RUN_DIR/config.json``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lever.train.auto import AutoParams
from lever.train.schedule import SCHEDULES
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

# Optimisation settings a backbone may default (``Backbone.train_defaults``, keys naming
# ``OptimParams`` fields); these when it does not.
LOOP_DEFAULTS: dict[str, Any] = {"epochs": 4, "batch_size": 256, "warmup_steps": 0, "schedule": "cosine"}


def _error(where: str, name: str, value: Any, expected: str) -> ParamsError:
    return ParamsError(f"{where}.{name}={value!r}: expected {expected}")


@dataclasses.dataclass
class LeverParams(Params):
    """The LEVER settings of a run, defined and validated here only: the soft labels, how the
    targets mix them with the ground truth (λ or one λ per label from κ, the mode), the
    label-as-datapoint rows, and the ``--lam auto`` search. The loss and target hooks see them as
    :class:`lever.loss.LeverLossParams` (:meth:`loss_params`); ``lever.wrap`` validates its λ, κ
    and mode through this class too."""

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
    # The ``--lam auto`` search (validation split, grid, objective; ``--auto KEY=VALUE``).
    auto: AutoParams = dataclasses.field(default_factory=AutoParams)

    def validate(self, where: str = "TrainParams.lever") -> LeverParams:
        """The one check of λ, κ and the mode (``where`` names the settings in errors); fills
        ``label_rows`` (on with soft labels) unless λ is ``auto``, whose search sets it per cell."""
        from lever.loss import lever_settings_error

        if self.lam == AUTO:
            lam = 0.5  # any number: the search chooses λ; κ and the mode are still checked
        else:
            lam = self.lam
        error = lever_settings_error(lam, self.kappa, self.mode)
        if error is not None:
            name, expected = error
            if name == "lam":
                expected += f" or {AUTO!r}"
            raise _error(where, name, getattr(self, name), expected)
        if self.lam == AUTO:
            self.auto.validate(f"{where}.auto")
            return self
        if self.label_rows is None:
            return dataclasses.replace(self, label_rows=self.soft_labels is not None)
        return self

    def loss_params(self, reduction: str):
        """What the loss and target hooks see: these settings (validated, λ a number) and the
        reduction the caller sums with (``sum`` in ``lever train``, the user's in ``lever.wrap``)."""
        from lever.loss import LeverLossParams

        if self.lam == AUTO:
            raise ParamsError("TrainParams.lever.lam='auto': run the search first (lever.train.auto)")
        return LeverLossParams(self, reduction)


@dataclasses.dataclass
class OptimParams(Params):
    """How the weights are optimised: epochs, batch arithmetic, learning rates, schedule.

    Batch arithmetic: one optimizer step sees ``batch_size × world_size × grad_accum`` rows (the
    global batch). The loss is summed over labels and divided by the number of rows in the global
    batch, so 2 processes × batch b, 1 process × accumulation 2 × batch b and 1 process × batch 2b
    are the same optimisation. ``None`` (epochs, batch_size, warmup_steps, schedule): the backbone's default
    (``TrainParams.with_defaults``)."""

    epochs: int | None = field(None, help="epochs (default: the backbone's, else 4)")
    batch_size: int | None = field(None, help="rows per process per micro-batch (default: the backbone's, else 256)")
    grad_accum: int = field(1, help="micro-batches per optimizer step")
    lr: float | None = field(None, help="learning rate of every parameter group (default: each group's)")
    # Learning rate per group name (``--group-lr GROUP=LR``); overrides ``lr``.
    group_lr: dict[str, float] = dataclasses.field(default_factory=dict)
    weight_decay: float | None = field(None, help="weight decay of every group (default: each group's)")
    schedule: str | None = field(
        None, choices=SCHEDULES, help="learning-rate shape (default: the backbone's, else cosine; lever.train.schedule)"
    )
    warmup_steps: int | None = field(None, help="warm-up steps (default: the backbone's, else 0)")
    max_grad_norm: float = field(0.0, help="clip gradients (0: off)")
    amp: bool = field(True, help="mixed precision (CUDA only)")

    def validate(self, where: str = "TrainParams.optim") -> OptimParams:
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise _error(where, "schedule", self.schedule, f"one of {SCHEDULES}")
        for name in ("epochs", "batch_size", "grad_accum"):
            _check_int(self, where, name, 1)
        _check_int(self, where, "warmup_steps", 0)
        if not (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm >= 0):
            raise _error(where, "max_grad_norm", self.max_grad_norm, "a number >= 0 (0: off)")
        return self


@dataclasses.dataclass
class RunParams(Params):
    """Where and how a run executes, logs and saves; none of it changes the optimisation except
    ``seed``."""

    device: str = field("auto", help="auto, cpu, cuda or cuda:N")
    num_workers: int = field(0, help="DataLoader workers building batches")
    eval_every: int = field(1, help="evaluate every N epochs")
    eval_k: int = field(5, help="metrics @1..k")
    checkpoint_every_steps: int = field(0, help="also checkpoint every N optimizer steps (0: per epoch only)")
    cache_dir: str | None = field(None, help="cache folder for derived inputs (default RUN_DIR/cache)")
    seed: int = field(0, help="seed of initialisation, sampling and dropout")

    def validate(self, where: str = "TrainParams.run") -> RunParams:
        for name in ("eval_every", "eval_k"):
            _check_int(self, where, name, 1)
        for name in ("checkpoint_every_steps", "num_workers"):
            _check_int(self, where, name, 0)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise _error(where, "device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        return self


def _check_int(part: Params, where: str, name: str, least: int) -> None:
    value = getattr(part, name)  # None: a default filled later (TrainParams.with_defaults)
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
        raise _error(where, name, value, f"an integer >= {least}")


# The parts of TrainParams; a config.json of the old flat form names their fields at the top.
SECTIONS: dict[str, type[Params]] = {"lever": LeverParams, "optim": OptimParams, "run": RunParams}


def nest_flat_config(d: Any, source: str) -> Any:
    """A TrainParams dict in the nested form. The rule for configs written before the settings
    were nested (one flat object, e.g. an old run's ``config.json``): a top-level key naming a
    field of a part (``lam``, ``epochs``, ``seed``, ...) moves into that part (``lever``,
    ``optim``, ``run``). A field given both ways is an error naming both."""
    if not isinstance(d, dict):
        return d
    out = dict(d)
    for section, cls in SECTIONS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        moved = {k: out.pop(k) for k in list(out) if k in names}
        if not moved:
            continue
        nested = out.get(section, {})
        if not isinstance(nested, dict):
            raise ParamsError(f"{source}: {section!r} must be a JSON object of {cls.__name__}")
        both = sorted(set(moved) & set(nested))
        if both:
            raise ParamsError(
                f"{source}: {both} given both at the top level (the old flat form) and in "
                f"{section!r}; keep only {section}.{both[0]}"
            )
        out[section] = {**nested, **moved}
    return out


@dataclasses.dataclass
class TrainParams(Params):
    """The resolved configuration of one ``lever train`` run, nested once: what to train
    (``data``, ``backbone``, ``out``, ``backbone_params``), the LEVER settings (``lever``), the
    optimisation (``optim``) and the run's execution (``run``). Every field of a part has its own
    flag (``--lam`` sets ``lever.lam``, ``--epochs`` ``optim.epochs``, ``--seed`` ``run.seed``).
    A flat dict of the old form loads too (:func:`nest_flat_config`)."""

    data: str = field("", help="dataset folder (lever data build)")
    backbone: str = field("generic", help="backbone name (generic, or one an adapter registers)")
    out: str = field("", help="run folder (config.json, metrics.jsonl, checkpoints/, model.safetensors)")
    # Backbone settings, typed and validated by the backbone's own Params class (``--bp
    # KEY=VALUE``; see ``lever train --backbone NAME --print-params``).
    backbone_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    lever: LeverParams = dataclasses.field(default_factory=LeverParams)
    optim: OptimParams = dataclasses.field(default_factory=OptimParams)
    run: RunParams = dataclasses.field(default_factory=RunParams)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> TrainParams:
        return super().from_dict(nest_flat_config(d, source), source=source)

    def with_defaults(self, backbone_defaults: dict[str, Any]) -> TrainParams:
        """Fill the optimisation fields left ``None`` from the backbone's defaults, then
        :data:`LOOP_DEFAULTS`."""
        unknown = sorted(set(backbone_defaults) - set(LOOP_DEFAULTS))
        if unknown:
            raise ParamsError(f"backbone train_defaults name {unknown}; allowed: {sorted(LOOP_DEFAULTS)}")
        filled = {
            k: backbone_defaults.get(k, LOOP_DEFAULTS[k])
            for k in LOOP_DEFAULTS
            if getattr(self.optim, k) is None
        }
        return dataclasses.replace(self, optim=dataclasses.replace(self.optim, **filled)) if filled else self

    def validate(self) -> TrainParams:
        if not self.data:
            raise _error("TrainParams", "data", self.data, "a dataset folder")
        if not self.out:
            raise _error("TrainParams", "out", self.out, "a run folder")
        return dataclasses.replace(
            self, lever=self.lever.validate(), optim=self.optim.validate(), run=self.run.validate()
        )


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
RESUMABLE_CHANGES = ("run.num_workers", "run.device", "run.cache_dir")
