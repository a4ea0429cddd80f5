"""The contract between the shared training loop and a backbone (Renée, ELIAS, CascadeXML, the
generic linear head, or a third party's model).

A backbone is a small object with six methods; the loop owns everything else (sampling, soft
targets, optimizers, schedules, AMP, accumulation, data parallelism, checkpoints, evaluation):

* ``build(ctx) -> nn.Module`` — create the trainable module for ``ctx.dataset``. Everything the
  module needs at prediction time must be in its ``state_dict`` (it is saved with safetensors).
* ``param_groups(module) -> list[ParamGroup]`` — each group gets its own optimizer (``sgd``,
  ``adam`` or ``adamw``) and learning rate, all following the run's warm-up + decay schedule;
  e.g. Renée: classifier on SGD, encoder on Adam.
* ``batch_inputs(row_ids)`` / ``test_inputs(row_ids)`` — what a batch carries besides the row
  ids and targets (token ids, cached embeddings, ...). Runs on CPU, possibly in DataLoader workers,
  so it must only read picklable or memory-mapped state.
* ``forward_backward(module, batch, amp) -> float`` — the training step of one micro-batch: compute
  the loss over ``batch.targets`` (a ``lever.loss.SparseTargets``; soft LEVER targets when soft
  labels are used), multiply it by ``batch.loss_scale`` and accumulate gradients into ``.grad``
  (``amp.backward(loss)`` handles loss scaling). Return the scaled loss for logging. The default
  does autograd on ``loss()``; backbones with a hand-written backward (Renée) override it.
* ``loss(module, batch) -> Tensor`` — the summed (not averaged) loss of the micro-batch.
* ``predict_scores(module, inputs, labels) -> Tensor [b, len(labels)]`` — scores of a label block;
  the loop handles filters and top-k blockwise. Backbones that never score all labels (shortlists)
  override ``predict_topk`` instead.

Data parallelism: parameters with ``requires_grad=True`` are replicated (broadcast from rank 0,
gradients summed over processes by the loop); ``requires_grad=False`` marks process-local state
(frozen parts, or a model-parallel shard whose gradient the backbone writes itself). Checkpoints
are per process. Model-parallel backbones also set ``collective_predict`` and override
``export_state_dict`` to gather their shards into the single-process layout.

Backbones are found by name through the plugin manager (``lever.hooks.registry``): an adapter
implements the ``lever_register_backbones`` hook and returns ``{name: BackboneClass}``.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from lever.utils.params import Params

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclasses.dataclass
class ParamGroup:
    """Parameters sharing one optimizer; ``lr`` and ``weight_decay`` are the backbone's defaults,
    overridden by ``TrainParams.lr`` / ``group_lr[name]`` / ``weight_decay``."""

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
class BuildContext:
    """What a backbone may use to build itself. ``rows`` is None at prediction time."""

    dataset: Any  # lever.data.XCDataset
    rows: Any  # lever.train.rows.TrainRows | None
    train_params: Any  # lever.train.params.TrainParams
    device: torch.device
    env: Any  # lever.train.distributed.DistEnv
    cache_dir: Path
    plugin_manager: Any = None


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


class Backbone(abc.ABC):
    """Base class of every backbone; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    params_class: ClassVar[type[Params]] = Params
    # The loop settings (epochs, batch_size, warmup_steps) this backbone trains best with on a CPU
    # when the user leaves them unset; see ``TrainParams.with_defaults``.
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Params | dict | None = None):
        if params is None or isinstance(params, dict):
            params = self.params_class.from_dict(
                params or {}, source=f"backbone_params ({self.name})"
            )
        self.params = params

    @abc.abstractmethod
    def build(self, ctx: BuildContext) -> torch.nn.Module: ...

    @abc.abstractmethod
    def param_groups(self, module: torch.nn.Module) -> list[ParamGroup]: ...

    @abc.abstractmethod
    def batch_inputs(self, row_ids: np.ndarray) -> Any: ...

    @abc.abstractmethod
    def test_inputs(self, row_ids: np.ndarray) -> Any: ...

    def loss(self, module: torch.nn.Module, batch) -> torch.Tensor:
        """The summed (not averaged) loss of the micro-batch, for the default ``forward_backward``;
        a backbone with a hand-written backward overrides ``forward_backward`` instead."""
        raise NotImplementedError(
            f"backbone {self.name!r} implements neither loss nor forward_backward"
        )

    @abc.abstractmethod
    def predict_scores(
        self, module: torch.nn.Module, inputs: Any, labels: slice
    ) -> torch.Tensor: ...

    # True when predicting needs every process (model-parallel parts): evaluation then calls
    # predict_topk on all ranks together, otherwise rank 0 predicts alone; and forward_backward is
    # called on every rank even for an empty micro-batch. May be set per instance in ``build``.
    collective_predict: bool = False

    def export_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The complete weights saved as ``model.safetensors`` and loaded by ``lever predict`` into
        a module built by one process. Called on every rank (collectives allowed); backbones with
        model-parallel parts gather them here."""
        return module.state_dict()

    def on_epoch_start(self, module: torch.nn.Module, epoch: int) -> None:
        """Work before each epoch (e.g. ELIAS refreshes its cluster parents)."""

    def forward_backward(self, module: torch.nn.Module, batch, amp: AmpContext) -> float:
        with amp.autocast():
            loss = self.loss(module, batch) * batch.loss_scale
        amp.backward(loss)
        return float(loss.detach())

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
