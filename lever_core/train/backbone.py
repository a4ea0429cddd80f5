"""The one contract of a model family (an *adapter*): Renée, ELIAS, CascadeXML, the generic linear
head, or a third party's model. The same object serves both entry points:

* ``lever train --backbone NAME`` — the registry (``lever_register_backbones``) gives the class;
  the loop instantiates it with the run's ``backbone_params`` and calls ``build``.
* ``lever.wrap(model)`` — the ``lever_adapter`` hook returns an instance whose ``accepts(model)``
  is true; the user's loop then calls ``training_loss`` through the wrapped model.

The loop owns everything else (sampling, targets, optimizers, schedules, AMP, accumulation, data
parallelism, checkpoints, evaluation). What an adapter implements:

* ``build(ctx) -> nn.Module`` — the trainable module for ``ctx.dataset``. Everything the
  module needs at prediction time must be in its ``state_dict`` (it is saved with safetensors).
* ``param_groups(module) -> list[ParamGroup]`` — each group gets its own optimizer (``sgd``,
  ``adam`` or ``adamw``) and learning rate, all following the run's warm-up + decay schedule;
  e.g. Renée: classifier on SGD, encoder on Adam.
* ``batch_inputs(row_ids)`` / ``test_inputs(row_ids)`` — what a batch carries besides the row
  ids and targets (token ids, cached embeddings, ...). Runs on CPU, possibly in DataLoader workers,
  so it must only read picklable or memory-mapped state.
* ``training_levels(module, inputs, targets, hooks) -> list[Level]`` — the scores of a batch,
  one :class:`lever.loss.Level` per level (logits, candidate ids or ``None`` for dense, id space:
  labels or the clusters of level ``i``). Cluster levels also need ``cluster_map(module, i)``;
  their targets are the label targets projected by the ``lever_level_targets`` hook. The default
  ``training_loss`` hands levels and per-level targets to the ``lever_loss`` hook (default: the
  BCE of every level, summed) and ``forward_backward`` back-propagates it.
* ``forward_backward(module, batch, amp) -> float`` — override only for a hand-written backward
  (Renée's fused classifier step). The targets still come from ``batch.targets`` (built by the
  ``lever_targets`` hook), and a ``lever_loss`` implementation in scope must either reach the
  step (Renée then runs the autograd path) or be refused with a clear error.
* ``predict_scores(module, inputs, labels) -> Tensor [b, len(labels)]`` — scores of a label block;
  the loop handles filters and top-k blockwise. Backbones that never score all labels (shortlists)
  override ``predict_topk`` instead.

Data parallelism: parameters with ``requires_grad=True`` are replicated (broadcast from rank 0,
gradients summed over processes by the loop); ``requires_grad=False`` marks process-local state
(frozen parts, or a model-parallel shard whose gradient the backbone writes itself). Checkpoints
are per process. Model-parallel backbones also set ``collective_predict`` and override
``export_state_dict`` to gather their shards into the single-process layout.

Backbones are found by name through the plugin manager (``lever.hooks.registry``); the hooks a
backbone calls are scoped to it (``lever.hooks.manager.ScopedHooks``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from lever.hooks.manager import ScopedHooks
from lever.loss import Level, LeverLossParams, SparseTargets
from lever.train.params import LeverParams, TrainParams
from lever.utils.params import Params

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclasses.dataclass
class ParamGroup:
    """Parameters sharing one optimizer; ``lr`` and ``weight_decay`` are the backbone's defaults,
    overridden by ``TrainParams.optim.lr`` / ``optim.group_lr[name]`` / ``optim.weight_decay``."""

    name: str
    params: list[torch.nn.Parameter]
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # Adam(W) only
    eps: float = 1e-8  # Adam(W) only

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"param group {self.name!r}: optimizer {self.optimizer!r}; "
                f"expected one of {OPTIMIZERS}"
            )


@dataclasses.dataclass
class Stage:
    """A part of training with its own optimizer groups and learning-rate schedule (warm-up and
    decay over the stage's steps). ``epochs=None``: the epochs the other stages leave of
    ``TrainParams.optim.epochs`` (at most one such stage). E.g. ELIAS: clusters first, then labels."""

    name: str
    param_groups: list[ParamGroup]
    epochs: int | None = None


def stage_epochs(stages: list[Stage], total: int) -> list[int]:
    """The number of epochs of each stage, their sum being ``total``."""
    fixed = sum(s.epochs for s in stages if s.epochs is not None)
    free = [s.name for s in stages if s.epochs is None]
    if not stages or len(free) > 1 or fixed > total or (not free and fixed != total):
        plan = ", ".join(f"{s.name}: {s.epochs if s.epochs is not None else 'rest'}" for s in stages)
        raise ValueError(
            f"the backbone's stages ({plan or 'none'}) do not fit TrainParams.optim.epochs={total}: "
            "the fixed epochs must sum to it, or leave at most one stage's epochs to fill it"
        )
    return [s.epochs if s.epochs is not None else total - fixed for s in stages]


def shortlists_file(backbone_name: str) -> str:
    """The run-folder file holding a backbone's :meth:`Backbone.shortlist_shares`."""
    return f"{backbone_name}_shortlists.json"


@dataclasses.dataclass
class BuildContext:
    """What a backbone may use to build itself. ``rows`` is None at prediction time."""

    dataset: Any  # lever.data.XCDataset
    rows: Any  # lever.train.rows.TrainRows | None
    train_params: TrainParams | None  # None: defaults (a module built outside lever train)
    device: torch.device
    env: Any  # lever.train.distributed.DistEnv
    cache_dir: Path
    hooks: ScopedHooks | None = None  # the hooks in this backbone's scope
    progress: bool = True  # progress bars of long set-up work (False under --no-progress, rank > 0)


class AmpContext:
    """Autocast + gradient scaling on CUDA; a no-op elsewhere (AMP is CUDA only)."""

    def __init__(self, device: torch.device, enabled: bool):
        self.enabled = bool(enabled) and device.type == "cuda"
        self.device = device
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled)

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.float16)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()


class Backbone:
    """Base class of every adapter (one per model family); see the module docstring."""

    name: ClassVar[str] = ""
    params_class: ClassVar[type[Params]] = Params
    # The loop settings (epochs, batch_size, warmup_steps) this backbone trains best with on a CPU
    # when the user leaves them unset; see ``TrainParams.with_defaults``.
    train_defaults: ClassVar[dict[str, Any]] = {}
    # True when predicting needs every process (model-parallel parts): evaluation then calls
    # predict_topk on all ranks together, otherwise rank 0 predicts alone. May be set in ``build``.
    collective_predict: bool = False
    # True when a training step runs collectives: forward_backward is then called on every rank,
    # even for an empty micro-batch. May be set per instance in ``build``.
    collective_step: bool = False

    def __init__(self, params: Params | dict | None = None):
        if params is None or isinstance(params, dict):
            params = self.params_class.from_dict(
                params or {}, source=f"backbone_params ({self.name})"
            )
        if not isinstance(params, self.params_class):
            raise TypeError(
                f"backbone {self.name!r}: settings must be a {self.params_class.__name__} or a "
                f"dict of its fields, got {type(params).__name__}"
            )
        self.params = params.validate()  # typed per backbone, checked before anything is built
        self.hooks = ScopedHooks(None, self.name)  # lever's defaults until attach()
        self.loss_params = LeverParams().validate().loss_params("sum")

    def attach(self, hooks: ScopedHooks, loss_params: LeverLossParams) -> Backbone:
        """Called by ``lever train`` and ``lever.wrap`` before training: the hooks in this
        backbone's scope and the loss settings (``sum`` in the loop, the user's in ``wrap``)."""
        self.hooks, self.loss_params = hooks, loss_params
        return self

    # -- lever.wrap ------------------------------------------------------------------------------
    @classmethod
    def accepts(cls, classifier: Any) -> bool:
        """Whether ``classifier`` (an existing model given to ``lever.wrap``) is of this family."""
        return False

    # -- lever train: building -------------------------------------------------------------------
    def build(self, ctx: BuildContext) -> torch.nn.Module:
        raise NotImplementedError(f"backbone {self.name!r} does not build models (lever.wrap only)")

    def param_groups(self, module: torch.nn.Module) -> list[ParamGroup]:
        raise NotImplementedError(f"backbone {self.name!r} defines no parameter groups")

    def batch_inputs(self, row_ids: np.ndarray) -> Any:
        raise NotImplementedError(f"backbone {self.name!r} defines no training inputs")

    def test_inputs(self, row_ids: np.ndarray) -> Any:
        raise NotImplementedError(f"backbone {self.name!r} defines no test inputs")

    # -- the training step (both entry points) ---------------------------------------------------
    def training_levels(
        self, module: torch.nn.Module, inputs: Any, targets: SparseTargets, hooks: ScopedHooks
    ) -> list[Level]:
        """The scores of one batch, one :class:`lever.loss.Level` per level (dense one-vs-all:
        one level with all label ids). ``targets`` (label targets) and ``hooks`` are there for
        shortlisting backbones, which project targets (:meth:`level_targets`) and call
        ``hooks.lever_shortlist`` before keeping candidates."""
        raise NotImplementedError(
            f"backbone {self.name!r} implements neither training_levels nor training_loss"
        )

    def cluster_map(self, module: torch.nn.Module, level: int) -> tuple[torch.Tensor, int]:
        """``(label_to_cluster [L], num_clusters)`` of tree level ``level``, for projecting targets."""
        raise NotImplementedError(f"backbone {self.name!r} has no cluster level {level}")

    def level_targets(
        self,
        module: torch.nn.Module,
        level: Level,
        targets: SparseTargets,
        hooks: ScopedHooks,
    ) -> SparseTargets:
        """The label ``targets`` in ``level``'s id space (``lever_level_targets`` for clusters)."""
        if level.is_labels:
            return targets
        mapping, num_clusters = self.cluster_map(module, int(level.space))
        return hooks.lever_level_targets(
            targets=targets, level=int(level.space), label_to_cluster=mapping,
            num_clusters=num_clusters,
        )

    def training_loss(
        self,
        module: torch.nn.Module,
        inputs: Any,
        targets: SparseTargets,
        params: LeverLossParams,
        hooks: ScopedHooks,
    ) -> torch.Tensor:
        """The LEVER loss of one batch: levels, targets per level, then ``hooks.lever_loss``."""
        levels = self.training_levels(module, inputs, targets, hooks)
        per_level = [self.level_targets(module, lv, targets, hooks) for lv in levels]
        loss = hooks.lever_loss(levels=levels, targets=per_level, params=params)
        if loss is None:
            raise RuntimeError(f"backbone {self.name!r}: no lever_loss implementation returned a loss")
        return loss

    def forward_backward(self, module: torch.nn.Module, batch, amp: AmpContext) -> float:
        """One micro-batch of ``lever train``: the summed loss × ``batch.loss_scale``, gradients
        accumulated into ``.grad``; returns the scaled loss for logging. Backbones with a
        hand-written backward (Renée) override this and must still honour ``lever_loss``."""
        with amp.autocast():
            loss = self.training_loss(
                module, batch.inputs, batch.targets, self.loss_params, self.hooks
            )
            loss = loss * batch.loss_scale
        amp.backward(loss)
        return float(loss.detach())

    # -- prediction and state --------------------------------------------------------------------
    def predict_scores(self, module: torch.nn.Module, inputs: Any, labels: slice) -> torch.Tensor:
        """Scores ``[b, len(labels)]`` of a label block, for the default :meth:`predict_topk`;
        a shortlisting backbone overrides ``predict_topk`` instead."""
        raise NotImplementedError(
            f"backbone {self.name!r} implements neither predict_scores nor predict_topk"
        )

    def export_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The complete weights saved as ``model.safetensors`` and loaded by ``lever predict`` into
        a module built by one process. Called on every rank (collectives allowed); backbones with
        model-parallel parts gather them here."""
        return module.state_dict()

    # -- stages, callbacks and state the loop keeps -----------------------------------------------
    def stages(self, module: torch.nn.Module) -> list[Stage]:
        """The stages of training, in order; default: one stage of every parameter group."""
        return [Stage("train", self.param_groups(module))]

    def on_stage_start(self, module: torch.nn.Module, stage: Stage) -> None:
        """Work when a stage begins, before its optimizers are built (e.g. freeze a part, build
        clusters). Not repeated when a run resumes inside the stage: keep what it computes in
        :meth:`extra_state`."""

    def on_epoch_start(self, module: torch.nn.Module, epoch: int) -> None:
        """Work before each epoch (e.g. ELIAS refreshes its cluster parents, the teacher draws and
        clusters its batches). Not repeated when a run resumes inside the epoch (a mid-epoch
        checkpoint): keep what it computes in :meth:`extra_state`."""

    def on_epoch_end(self, module: torch.nn.Module, epoch: int, record: dict[str, Any]) -> None:
        """Work after each epoch, before it is logged and checkpointed; may add fields to the
        epoch's ``metrics.jsonl`` ``record`` (epoch, global_step, loss, lr, seconds, test)."""

    def on_step_end(self, module: torch.nn.Module, global_step: int) -> None:
        """Work after each optimizer step (``global_step`` counts steps taken, from 1)."""

    def shortlist_shares(self) -> list[dict[str, Any]] | None:
        """Optional, for shortlist backbones: per scored level, the share of positive and of
        teacher-only targets that reached its training candidates so far (``level``, ``positives``,
        ``positives_reached``, ``teacher``, ``teacher_reached``). The loop writes it to
        ``RUN/<name>_shortlists.json`` at every checkpoint (rank 0); None: nothing to write."""
        return None

    def extra_state(self, module: torch.nn.Module) -> dict[str, Any]:
        """Training state outside the module's weights (cluster assignments, a learned adjacency,
        counters) saved in every checkpoint, so a resumed run equals an uninterrupted one. Tensors
        and plain Python values only (loaded with ``torch.load(weights_only=True)``)."""
        return {}

    def load_extra_state(self, module: torch.nn.Module, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned, when a run resumes."""

    def predict_topk(
        self,
        module: torch.nn.Module,
        inputs: Any,
        k: int,
        num_labels: int,
        exclude: sp.csr_matrix | None = None,
        label_block: int = 65536,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ``(label ids, scores)`` per row, each ``[b, k]``, best first (the
        ``lever.metrics.ranking.topk`` convention); pairs in ``exclude`` (batch rows × labels, e.g. the
        test filter) are never returned. Scores are the backbone's raw scores (logits for a
        one-vs-all head: sigmoid probabilities would tie once they round to 1.0 in float32, and
        ``lever eval`` re-ranks stored scores); a row with fewer than k admissible labels is
        padded with id -1 and score -inf."""
        from lever.metrics.ranking import blockwise_topk

        return blockwise_topk(
            lambda labels: self.predict_scores(module, inputs, labels),
            k,
            num_labels,
            exclude,
            label_block,
        )


def to_device(obj: Any, device: torch.device) -> Any:
    """Move tensors (also inside dicts, lists, tuples and dataclasses) to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj,
            **{
                f.name: to_device(getattr(obj, f.name), device)
                for f in dataclasses.fields(obj)
                if f.init
            },
        )
    return obj
