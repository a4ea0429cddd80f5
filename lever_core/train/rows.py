"""Training rows, the sampler that deals them to processes, and the batches that carry them.

A training row is a document, or (with label rows) a label used as a data point: rows
``0 .. N-1`` are documents, row ``N + l`` is label ``l``. A batch carries the row ids and the sparse
LEVER targets of those rows, so soft labels travel with the data and every process trains on
exactly its own rows.

Sampling is by *global step*: each epoch draws one seeded permutation of all rows, cuts it into
global batches of ``batch_size × world_size × grad_accum`` rows, and hands micro-batch ``m`` of
process ``r`` the slice ``m * world_size + r`` of that global batch. Any (epoch, step) can be
regenerated from the seed alone, which is what makes resuming exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch


@dataclasses.dataclass
class TrainRows:
    """What the loop trains on: ``Y`` (rows × L, binary CSR) and optional ``soft`` (same shape)."""

    Y: sp.csr_matrix
    num_docs: int
    soft: sp.csr_matrix | None = None

    @property
    def num_rows(self) -> int:
        return int(self.Y.shape[0])

    @property
    def num_labels(self) -> int:
        return int(self.Y.shape[1])


@dataclasses.dataclass
class Batch:
    """One process's micro-batch.

    ``row_ids``: training-row ids (LongTensor [b]); ``targets``: ``lever.loss.SparseTargets`` with
    batch-local rows; ``inputs``: whatever the backbone's ``batch_inputs`` returned for these rows;
    ``loss_scale``: 1 / rows in the global batch; multiply the summed loss by it.
    """

    row_ids: torch.Tensor
    targets: Any
    inputs: Any
    loss_scale: float

    def __len__(self) -> int:
        return int(self.row_ids.numel())


class GlobalBatchSampler:
    """Yields, per optimizer step, this process's ``grad_accum`` micro-batches of row ids."""

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        grad_accum: int = 1,
        seed: int = 0,
    ):
        self.num_rows, self.batch_size = int(num_rows), int(batch_size)
        self.world_size, self.rank, self.grad_accum = int(world_size), int(rank), int(grad_accum)
        self.seed = int(seed)
        self.global_batch = self.batch_size * self.world_size * self.grad_accum

    def steps_per_epoch(self) -> int:
        return -(-self.num_rows // self.global_batch)

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def step_rows(
        self, epoch: int, step: int, perm: np.ndarray | None = None
    ) -> tuple[list[np.ndarray], int]:
        """This process's micro-batches for ``(epoch, step)`` and the global batch's row count.

        A short last global batch is split as evenly as possible; a slice may be empty."""
        perm = self.permutation(epoch) if perm is None else perm
        rows = perm[step * self.global_batch : (step + 1) * self.global_batch]
        slices = np.array_split(rows, self.grad_accum * self.world_size)
        mine = [slices[m * self.world_size + self.rank] for m in range(self.grad_accum)]
        return mine, int(rows.size)

    def epoch(self, epoch: int, start_step: int = 0):
        perm = self.permutation(epoch)
        for step in range(start_step, self.steps_per_epoch()):
            yield step, *self.step_rows(epoch, step, perm)


class BatchBuilder:
    """Turns row ids into a ``Batch``: the targets of the rows (``lever_teacher_rows`` and
    ``lever_targets`` hooks) and the backbone's inputs. Plain data and picklable callables, so it
    can run inside DataLoader workers.

    ``loss_params`` are the run's validated LEVER settings (``LeverParams.loss_params``). With
    ``kappa`` the targets use one λ per label, ``λ_l = n_l / (n_l + κ)``, ``n_l`` counted once
    over the documents' rows and handed to every ``lever_targets`` call. When no plugin implements
    either target hook, the defaults' targets of every row are built once
    (:class:`lever.loss.TargetTable`) and a batch only slices its rows: the same values, without
    sparse arithmetic per batch. Otherwise the hooks run per batch."""

    def __init__(
        self,
        rows: TrainRows,
        batch_inputs: Callable[[np.ndarray], Any],
        loss_params: Any,  # lever.loss.LeverLossParams
        hooks: Any = None,
    ):
        from lever.hooks.manager import default_targets_only, scoped_hooks
        from lever.loss import TargetTable, label_counts, label_lambda

        # ``hooks``: the backbone's ScopedHooks (a bare PluginManager is used unscoped).
        self.rows, self.batch_inputs = rows, batch_inputs
        self.hooks = scoped_hooks(hooks, None)
        lp = self.loss_params = loss_params
        self.label_lam = None
        if lp.kappa is not None:  # label-as-datapoint rows say nothing about n_l: documents only
            self.label_lam = label_lambda(label_counts(rows.Y[: rows.num_docs]), lp.kappa)
        self.table = None
        if default_targets_only(self.hooks):
            self.table = TargetTable.build(rows.Y, rows.soft, lp.lam, lp.mode, self.label_lam)

    def targets(self, row_ids: np.ndarray):
        if self.table is not None:
            return self.table.batch(row_ids)
        return self._hook_targets(row_ids)

    def _hook_targets(self, row_ids: np.ndarray):
        from lever.loss import batch_targets

        y_rows = self.rows.Y[row_ids]
        soft_rows = None
        if self.rows.soft is not None:
            soft_rows = self.hooks.lever_teacher_rows(row_ids=row_ids, soft_labels=self.rows.soft)
            if soft_rows is None:
                soft_rows = self.rows.soft[row_ids]
        lp, label_lam = self.loss_params, self.label_lam
        targets = self.hooks.lever_targets(
            row_ids=row_ids,
            y_rows=y_rows,
            soft_rows=soft_rows,
            params=lp,
            label_lam=label_lam,
        )
        if targets is None:  # no plugin answered: the library default
            targets = batch_targets(row_ids, y_rows, soft_rows, lp, label_lam)
        return targets

    def __call__(self, row_ids: np.ndarray, global_rows: int) -> Batch:
        row_ids = np.asarray(row_ids, dtype=np.int64)
        return Batch(
            row_ids=torch.from_numpy(row_ids),
            targets=self.targets(row_ids),
            inputs=self.batch_inputs(row_ids),
            loss_scale=1.0 / max(1, global_rows),
        )
