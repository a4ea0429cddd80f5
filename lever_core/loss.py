"""The LEVER loss: binary cross-entropy against sparse soft targets.

BCE-with-logits is affine in its target, ``BCE(t, z) = softplus(z) − t·z``, so the paper's two-term
objective (Eq. 6) is one BCE against a mixed target::

    λ·BCE(y, z) + (1−λ)·BCE(p̂, z) = BCE(t, z),   t = λ·y + (1−λ)·p̂,   ∂/∂z = σ(z) − t

``y`` is the ground truth, ``p̂`` the teacher's calibrated score on the pairs the soft labels store
(0 elsewhere). ``t`` is non-zero only on the union of positives and teacher entries, so it is kept
sparse (:class:`SparseTargets`) and the loss is written as ``Σ softplus(z) − Σ_S t·z`` over its
support ``S``: no dense target is ever built.

Target modes (:func:`soft_targets`):

* ``mix`` (default; Eq. 6): ``t = λ·y + (1−λ)·p̂``; a positive the teacher did not score gets λ.
  λ is one number (the paper's) or one per label, ``λ_l = n_l / (n_l + κ)`` (:func:`label_lambda`):
  head labels, whose ground truth is well estimated, lean on it; tail labels lean on the teacher.
* ``augment`` (the released LEVER code's recipe, which feeds an augmented label matrix to an
  unchanged backbone): the union of positives at 1 and teacher entries at their score,
  ``t = max(y, p̂)``; λ is not used.

Three forms give the same numbers:

* :class:`LeverBCELoss`: dense logits ``[B, L]`` (autograd);
* :class:`LeverShortlistBCELoss`: shortlisted logits ``[B, K]`` with their label ids; targets are
  looked up for the shortlist, target entries outside it are ignored;
* :class:`LeverFusedBCE`: for backbones with a hand-written classifier backward (Renée): turns
  ``σ(z)`` into ``∂L/∂z`` in place, and gives the loss value from the probabilities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

MODES = ("mix", "augment")
REDUCTIONS = ("sum", "mean")


@dataclasses.dataclass
class SparseTargets:
    """Soft targets of one batch as COO triplets; every entry not listed is 0.

    ``rows`` are batch-local (0 .. B−1), ``cols`` label ids (0 .. L−1), ``vals`` the targets;
    ``shape`` is ``(B, L)``. Duplicate (row, col) entries are allowed and mean their sum (the
    loss forms accumulate them); ``coalesced`` records that there are none and entries are sorted
    by (row, col). ``positive`` (bool, optional) marks ground-truth entries, so code that must keep
    hard and soft labels apart (forcing positives into a shortlist before teacher labels) can.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    shape: tuple[int, int]
    coalesced: bool = False
    positive: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        n = self.rows.numel()
        shapes = [self.rows.shape, self.cols.shape, self.vals.shape]
        if self.positive is not None:
            shapes.append(self.positive.shape)
        if self.rows.dim() != 1 or any(s != self.rows.shape for s in shapes):
            raise ValueError(
                f"SparseTargets: rows, cols, vals (and positive) must be 1-d of one length; got "
                f"shapes {[tuple(s) for s in shapes]}"
            )
        if n and self.rows.device.type == "cpu":  # checked where it is built; a GPU check would sync
            if int(self.rows.min()) < 0 or int(self.rows.max()) >= self.shape[0]:
                raise ValueError(f"SparseTargets: row index outside [0, {self.shape[0]})")
            if int(self.cols.min()) < 0 or int(self.cols.max()) >= self.shape[1]:
                raise ValueError(f"SparseTargets: column index outside [0, {self.shape[1]})")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_csr(cls, csr: sp.spmatrix, positives: sp.spmatrix | None = None) -> SparseTargets:
        """Targets from a batch × labels scipy matrix (duplicates are summed); ``positives``
        (same shape) marks which entries are ground truth."""
        csr = sp.csr_matrix(csr, dtype=np.float32)
        csr.sum_duplicates()
        coo = csr.tocoo()
        positive = None
        if positives is not None:
            pos = sp.csr_matrix(positives, dtype=np.float32).tocoo()
            nz = pos.data != 0
            pos_keys = pos.row[nz].astype(np.int64) * csr.shape[1] + pos.col[nz]
            keys = coo.row.astype(np.int64) * csr.shape[1] + coo.col
            positive = torch.from_numpy(np.isin(keys, pos_keys))
        return cls(
            rows=torch.from_numpy(coo.row.astype(np.int64)),
            cols=torch.from_numpy(coo.col.astype(np.int64)),
            vals=torch.from_numpy(np.ascontiguousarray(coo.data, dtype=np.float32)),
            shape=csr.shape,
            coalesced=True,
            positive=positive,
        )

    @property
    def nnz(self) -> int:
        return int(self.rows.numel())

    def to(self, device: torch.device | str) -> SparseTargets:
        if self.rows.device == torch.device(device):
            return self
        return self._map(lambda x: x.to(device, non_blocking=True))

    def _map(self, fn) -> SparseTargets:
        return dataclasses.replace(
            self, rows=fn(self.rows), cols=fn(self.cols), vals=fn(self.vals),
            positive=None if self.positive is None else fn(self.positive),
        )

    # -- transforms -----------------------------------------------------------------------------
    def coalesce(self) -> SparseTargets:
        """Sum duplicate (row, col) entries and sort by (row, col)."""
        if self.coalesced:
            return self
        keys = self.rows * self.shape[1] + self.cols
        uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        vals = torch.zeros(uniq.numel(), dtype=self.vals.dtype, device=self.vals.device)
        vals.index_add_(0, inverse, self.vals)
        positive = None
        if self.positive is not None:  # a pair is positive if any of its duplicates is
            positive = torch.zeros(uniq.numel(), dtype=torch.bool, device=self.vals.device)
            positive[inverse[self.positive]] = True
        return SparseTargets(uniq // self.shape[1], uniq % self.shape[1], vals, self.shape, True, positive)

    def row_slice(self, start: int, stop: int) -> SparseTargets:
        """Rows ``start .. stop−1`` re-based to 0 (micro-batches of one batch)."""
        keep = (self.rows >= start) & (self.rows < stop)
        return SparseTargets(
            self.rows[keep] - start, self.cols[keep], self.vals[keep], (stop - start, self.shape[1]),
            self.coalesced, None if self.positive is None else self.positive[keep],
        )

    def col_slice(self, start: int, stop: int) -> SparseTargets:
        """Labels ``start .. stop−1`` re-based to 0 (a process's shard of the label columns)."""
        if (start, stop) == (0, self.shape[1]):  # every label: an unsharded step, nothing to copy
            return self
        keep = (self.cols >= start) & (self.cols < stop)
        return SparseTargets(
            self.rows[keep], self.cols[keep] - start, self.vals[keep], (self.shape[0], stop - start),
            self.coalesced, None if self.positive is None else self.positive[keep],
        )

    def to_dense(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense ``[B, L]`` target (tests and small L only; the losses never build it)."""
        out = torch.zeros(self.shape, dtype=dtype, device=self.vals.device)
        out.index_put_((self.rows, self.cols), self.vals.to(dtype), accumulate=True)
        return out

    def lookup(self, label_ids: torch.Tensor) -> torch.Tensor:
        """Targets at ``(b, label_ids[b, k])``: a ``[B, K]`` tensor, 0 where no entry exists and
        for padding ids (``< 0`` or ``>= L``)."""
        if label_ids.dim() != 2 or label_ids.shape[0] != self.shape[0]:
            raise ValueError(
                f"label ids must be [B={self.shape[0]}, K]; got shape {tuple(label_ids.shape)}"
            )
        t = self.to(label_ids.device).coalesce()
        num_labels = self.shape[1]
        out = torch.zeros(label_ids.shape, dtype=t.vals.dtype, device=label_ids.device)
        if t.nnz == 0:
            return out
        valid = (label_ids >= 0) & (label_ids < num_labels)
        batch = torch.arange(label_ids.shape[0], device=label_ids.device).unsqueeze(1)
        query = batch * num_labels + label_ids.clamp(0, num_labels - 1)
        keys = t.rows * num_labels + t.cols  # sorted, since coalesced
        pos = torch.searchsorted(keys, query.reshape(-1)).clamp_(max=t.nnz - 1).view_as(query)
        hit = valid & (keys[pos] == query)
        return torch.where(hit, t.vals[pos], out)


def _binary(csr: sp.csr_matrix) -> sp.csr_matrix:
    out = csr.copy()
    out.data = (out.data > 0).astype(np.float32)
    out.eliminate_zeros()
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool)


def lever_settings_error(lam: Any, kappa: Any, mode: Any) -> tuple[str, str] | None:
    """The rules of the LEVER settings, stated once: ``(field, what was expected)`` for the first
    of λ, κ and the mode that breaks them, or ``None``. :class:`lever.train.params.LeverParams`
    raises it naming the field (``TrainParams.lever.lam``); functions called directly with
    settings (:func:`soft_targets`, :func:`label_lambda`) raise it too, once per call."""
    if mode not in MODES:
        return "mode", f"one of {MODES}"
    if not (_is_number(lam) and 0.0 <= float(lam) <= 1.0):  # also rejects NaN
        return "lam", "a number in [0, 1]"
    if kappa is not None:
        if not (_is_number(kappa) and float(kappa) >= 0.0):
            return "kappa", "None or a number >= 0"
        if mode != "mix":
            return "kappa", "None with mode 'augment' (per-label λ weighs y against p̂ in mode 'mix' only)"
    return None


def _check_settings(lam: Any, kappa: Any, mode: Any) -> None:
    error = lever_settings_error(lam, kappa, mode)
    if error is not None:
        name, expected = error
        value = {"lam": lam, "kappa": kappa, "mode": mode}[name]
        raise ValueError(f"LEVER {name} = {value!r}: expected {expected}")


# ---------------------------------------------------------------------------------------------
# λ per label
# ---------------------------------------------------------------------------------------------
def label_counts(y: sp.spmatrix) -> np.ndarray:
    """``n_l``: how many rows of ``y`` (documents × L; stored values > 0 are positives) are
    positive for each label. Pass the documents' rows only: a label-as-datapoint row says nothing
    about how well the label's ground truth is estimated."""
    if not sp.issparse(y):
        raise TypeError(f"label counts: expected a scipy sparse matrix (documents × L), got {type(y).__name__}")
    csr = sp.csr_matrix(y)
    csr.sum_duplicates()
    return np.bincount(csr.indices[csr.data > 0], minlength=csr.shape[1]).astype(np.int64)


def label_lambda(label_counts: np.ndarray, kappa: float) -> np.ndarray:
    """Per-label weight of the ground truth, ``λ_l = n_l / (n_l + κ)`` (float32, length L).

    Lemma 1 of the LEVER paper: the variance of a label's empirical ground truth falls as
    ``1/n_l``, so a head label (large ``n_l``) is estimated well from its own positives and needs
    the teacher least, while a tail label's few positives are noisy and the teacher's smoothed
    scores help most. ``λ_l`` moves from the teacher to the ground truth as ``n_l`` grows past
    ``κ`` (the number of positives at which both count equally). ``κ = 0`` is plain BCE for every
    label (``0/0 := 1``, so unseen labels get λ = 1 too); ``κ → ∞`` trains on the teacher alone.
    """
    _check_settings(0.0, kappa, "mix")
    n = np.asarray(label_counts, dtype=np.float64)
    if n.ndim != 1 or (n.size and n.min() < 0):
        raise ValueError(f"label counts: expected a 1-d array of counts >= 0, got shape {n.shape}")
    k = float(kappa)
    if k == 0.0:
        return np.ones(n.shape, dtype=np.float32)
    if np.isinf(k):
        return np.zeros(n.shape, dtype=np.float32)
    return (n / (n + k)).astype(np.float32)


def _check_label_lam(label_lam: np.ndarray | None, mode: str, num_labels: int) -> np.ndarray | None:
    if label_lam is None:
        return None
    if mode != "mix":
        raise ValueError(f"label_lam (per-label λ) with mode {mode!r}: λ is used in mode 'mix' only")
    lam = np.asarray(label_lam, dtype=np.float32)
    if lam.shape != (num_labels,):
        raise ValueError(f"label_lam has shape {lam.shape}; expected ({num_labels},), one λ per label")
    if not (np.all(lam >= 0) and np.all(lam <= 1)):  # also rejects NaN
        raise ValueError("label_lam: every per-label λ must be in [0, 1]")
    return lam


def soft_targets(
    row_ids: Sequence[int] | np.ndarray | torch.Tensor,
    y_rows: sp.spmatrix,
    soft_rows: sp.spmatrix | None = None,
    lam: float = 0.5,
    mode: str = "mix",
    label_lam: np.ndarray | None = None,
) -> SparseTargets:
    """The LEVER targets of a batch.

    ``row_ids``: the batch's dataset row ids (used to name rows in errors); ``y_rows``: their
    ground truth (CSR, B × L; stored values > 0 count as positives); ``soft_rows``: their teacher
    scores (CSR, B × L, values in [0, 1], e.g. ``SoftLabels.rows(row_ids)``), or ``None`` for no
    teacher, in which case the targets are ``y`` (plain BCE) in either mode.

    ``mix``: ``t = λ·y + (1−λ)·p̂``; ``augment``: ``t = max(y, p̂)`` (positives at 1, teacher-only
    entries at their score). ``label_lam`` (float32, length L, e.g. :func:`label_lambda`) replaces
    the constant ``lam`` with one λ per label column, ``t = λ_l·y + (1−λ_l)·p̂``; it is an error in
    ``augment`` mode, which uses no λ. Entries that come out 0 are dropped.
    """
    _check_settings(lam, None, mode)
    return _batch_targets(row_ids, y_rows, soft_rows, lam, mode, label_lam)


def batch_targets(
    row_ids: Sequence[int] | np.ndarray | torch.Tensor,
    y_rows: sp.spmatrix,
    soft_rows: sp.spmatrix | None,
    params: LeverLossParams,
    label_lam: np.ndarray | None = None,
) -> SparseTargets:
    """:func:`soft_targets` for settings validated once per run (``params`` comes from
    ``LeverParams.loss_params``): the default ``lever_targets`` hook, per batch, checks the
    batch's data but not λ and the mode again."""
    return _batch_targets(row_ids, y_rows, soft_rows, params.lam, params.mode, label_lam)


def _batch_targets(row_ids, y_rows, soft_rows, lam, mode, label_lam) -> SparseTargets:
    ids = np.asarray(row_ids.cpu() if isinstance(row_ids, torch.Tensor) else row_ids).reshape(-1)
    table = TargetTable.build(y_rows, soft_rows, lam, mode, label_lam, row_names=ids)
    return table.batch(np.arange(ids.size))


def _checked_inputs(
    y_rows: sp.spmatrix, soft_rows: sp.spmatrix | None, row_names: np.ndarray
) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """``y`` as a canonical binary float32 CSR and ``p̂`` as a canonical float32 CSR, validated."""
    if not sp.issparse(y_rows):
        raise TypeError(f"y_rows: expected a scipy sparse matrix (B × L), got {type(y_rows).__name__}")
    y = sp.csr_matrix(y_rows, dtype=np.float32)
    if y.shape[0] != row_names.size:
        raise ValueError(f"y_rows has {y.shape[0]} rows but row_ids has {row_names.size} ids")
    y.sum_duplicates()
    y = _binary(y)
    if soft_rows is None:
        return y, None
    if not sp.issparse(soft_rows):
        raise TypeError(
            f"soft_rows: expected a scipy sparse matrix (B × L) or None, got {type(soft_rows).__name__}"
        )
    p = sp.csr_matrix(soft_rows, dtype=np.float32)
    if p.shape != y.shape:
        raise ValueError(
            f"soft_rows shape {p.shape} differs from y_rows shape {y.shape}; both must be the "
            "batch's rows × all labels"
        )
    p.sum_duplicates()
    if p.nnz:
        bad = ~np.isfinite(p.data) | (p.data < 0) | (p.data > 1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            r = int(np.searchsorted(p.indptr, k, side="right") - 1)
            raise ValueError(
                f"soft label of dataset row {int(row_names[r])}, label {int(p.indices[k])} is {p.data[k]}; "
                "expected a teacher score in [0, 1]"
            )
    return y, p


def _entry_keys(csr: sp.csr_matrix) -> np.ndarray:
    """``row·L + col`` of every stored entry: sorted for a canonical CSR."""
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    return rows * csr.shape[1] + csr.indices


def _union(y: sp.csr_matrix, p: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of the entries of two canonical CSRs: sorted keys, and each matrix's value there
    (0 where it has no entry). A stable sort of the two sorted runs is a linear merge."""
    keys = np.concatenate([_entry_keys(y), _entry_keys(p)])
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    first = np.ones(keys.size, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    slot = np.cumsum(first) - 1
    from_y = order < y.nnz
    y_val = np.zeros(int(first.sum()), dtype=np.float32)
    p_val = np.zeros_like(y_val)
    y_val[slot[from_y]] = y.data[order[from_y]]
    p_val[slot[~from_y]] = p.data[order[~from_y] - y.nnz]
    return keys[first], y_val, p_val


@dataclasses.dataclass
class TargetTable:
    """The LEVER targets of many rows at once, as a canonical CSR (``indptr``, ``cols``, ``vals``)
    with ``positive`` marking ground-truth entries: built once, then :meth:`batch` gathers any
    rows' targets by slicing, with no sparse arithmetic per batch."""

    indptr: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    positive: np.ndarray
    num_labels: int

    @classmethod
    def build(
        cls,
        y: sp.spmatrix,
        soft: sp.spmatrix | None = None,
        lam: float = 0.5,
        mode: str = "mix",
        label_lam: np.ndarray | None = None,
        row_names: np.ndarray | None = None,
    ) -> TargetTable:
        """Targets of every row of ``y`` (rows × L) and ``soft`` (same shape or ``None``); the
        rules are those of :func:`soft_targets`, whose settings (``lam``, ``mode``) are checked
        by the caller (``LeverParams.validate`` or :func:`soft_targets`). ``row_names`` name the
        rows in errors (default ``0 .. rows−1``)."""
        if row_names is None:
            row_names = np.arange(y.shape[0] if sp.issparse(y) else 0)
        y, p = _checked_inputs(y, soft, np.asarray(row_names).reshape(-1))
        label_lam = _check_label_lam(label_lam, mode, y.shape[1])
        if p is None:  # no teacher: plain BCE whatever λ
            keys, y_val = _entry_keys(y), y.data
            vals = y_val
        else:
            keys, y_val, p_val = _union(y, p)
            vals = _blend(keys % y.shape[1], y_val, p_val, lam, mode, label_lam)
        keep = vals != 0
        keys, vals, positive = keys[keep], vals[keep], y_val[keep] > 0
        rows = keys // y.shape[1]
        indptr = np.zeros(y.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=y.shape[0]), out=indptr[1:])
        cols = (keys % y.shape[1]).astype(np.int32 if y.shape[1] < 2**31 else np.int64)
        return cls(indptr, cols, np.ascontiguousarray(vals, dtype=np.float32), positive, int(y.shape[1]))

    @property
    def num_rows(self) -> int:
        return int(self.indptr.size - 1)

    def batch(self, row_ids: np.ndarray) -> SparseTargets:
        """The targets of rows ``row_ids`` (batch-local rows in that order), coalesced."""
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        starts = self.indptr[ids]
        lens = self.indptr[ids + 1] - starts
        # index of every gathered entry: its row's start plus its position within the row
        shift = np.repeat(starts - (np.cumsum(lens) - lens), lens)
        take = np.arange(int(lens.sum()), dtype=np.int64) + shift
        return SparseTargets(
            rows=torch.from_numpy(np.repeat(np.arange(ids.size, dtype=np.int64), lens)),
            cols=torch.from_numpy(self.cols[take].astype(np.int64)),
            vals=torch.from_numpy(self.vals[take]),
            shape=(ids.size, self.num_labels),
            coalesced=True,
            positive=torch.from_numpy(self.positive[take]),
        )


def _blend(
    cols: np.ndarray,
    y_val: np.ndarray,
    p_val: np.ndarray,
    lam: float,
    mode: str,
    label_lam: np.ndarray | None,
) -> np.ndarray:
    """Target values on the union of positives and teacher entries (float32)."""
    if mode == "augment":
        return np.maximum(y_val, p_val)
    if label_lam is None:  # float32 arithmetic with one λ: the values scipy's λ·y + (1−λ)·p̂ gave
        w_y, w_p = np.float32(lam), np.float32(1.0 - float(lam))
    else:
        w_y, w_p = label_lam[cols], (np.float32(1.0) - label_lam)[cols]
    return w_y * y_val + w_p * p_val


# ---------------------------------------------------------------------------------------------
# Functional forms
# ---------------------------------------------------------------------------------------------
def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r}: expected one of {REDUCTIONS}")


def lever_bce(logits: torch.Tensor, targets: SparseTargets, reduction: str = "mean") -> torch.Tensor:
    """``Σ_{b,l} softplus(z_bl) − Σ_{(b,l)∈S} t_bl·z_bl`` over dense logits ``[B, L]``;
    ``mean`` divides by ``B·L`` (as ``BCEWithLogitsLoss``), ``sum`` does not."""
    _check_reduction(reduction)
    if tuple(logits.shape) != targets.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} differs from targets shape {targets.shape}")
    z = logits.float()
    t = targets.to(z.device)
    total = F.softplus(z).sum() - torch.dot(t.vals, z[t.rows, t.cols])
    return total / z.numel() if reduction == "mean" else total


def lever_bce_shortlist(
    logits: torch.Tensor,
    label_ids: torch.Tensor,
    targets: SparseTargets,
    reduction: str = "mean",
    weight: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """BCE over a shortlist: logits ``[B, K]`` scored for ``label_ids [B, K]``. Target entries
    outside the shortlist are ignored; padding ids (``< 0`` or ``>= L``) contribute nothing and
    ``mean`` divides by the number of non-padding entries. ``weight`` (a number or a tensor
    broadcastable to ``[B, K]``) multiplies each entry's term."""
    _check_reduction(reduction)
    z, t, valid = _shortlist_terms(logits, label_ids, targets)
    per_entry = torch.where(valid, (F.softplus(z) - t * z) * weight, torch.zeros((), device=z.device))
    total = per_entry.sum()
    return total / valid.sum().clamp(min=1) if reduction == "mean" else total


def lever_recall_shortlist(
    logits: torch.Tensor,
    label_ids: torch.Tensor,
    targets: SparseTargets,
    reduction: str = "mean",
    weight: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """The positive-only recall term over a shortlist, ``Σ_{(b,k): t>0} −t·log σ(z_bk)`` (ELIAS's
    shortlist loss ``−Σ_{l∈y⁺∩Ĉ} log ŝ_l`` when ``z = logit(ŝ)`` and ``t = y``; with LEVER targets
    teacher labels pull with their blended weight). Candidates without a target add nothing;
    ``mean`` divides by the number of rows. ``weight`` as in :func:`lever_bce_shortlist`."""
    _check_reduction(reduction)
    z, t, valid = _shortlist_terms(logits, label_ids, targets)
    per_entry = torch.where(valid & (t > 0), t * F.softplus(-z) * weight, torch.zeros((), device=z.device))
    total = per_entry.sum()
    return total / max(1, z.shape[0]) if reduction == "mean" else total


def _shortlist_terms(
    logits: torch.Tensor, label_ids: torch.Tensor, targets: SparseTargets
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float logits, the targets looked up at ``label_ids`` and the mask of non-padding ids."""
    if logits.shape != label_ids.shape:
        raise ValueError(
            f"shortlist logits {tuple(logits.shape)} and label ids {tuple(label_ids.shape)} differ in shape"
        )
    z = logits.float()
    t = targets.lookup(label_ids.to(z.device))
    valid = (label_ids >= 0) & (label_ids < targets.shape[1])
    return z, t, valid


# ---------------------------------------------------------------------------------------------
# Levels: a training step's scores, one entry per level of a label tree
# ---------------------------------------------------------------------------------------------
LABELS = "labels"


LEVEL_LOSSES = ("bce", "recall")


@dataclasses.dataclass
class Level:
    """One level of a training step's scores.

    ``logits [B, K]``; ``ids [B, K]`` the candidate id of each logit (padding ``< 0`` or ``>= the
    size of the id space``), or ``None`` when the logits are dense over every id ``0 .. K−1``;
    ``space`` is :data:`LABELS` or the int ``i`` for the clusters of tree level ``i`` (ELIAS:
    clusters then labels; CascadeXML: 3–4 levels). A one-vs-all head returns one dense level.

    ``loss`` is the term the default loss (:func:`levels_bce`) takes over the level: ``bce``
    (every entry) or ``recall`` (``−t·log σ(z)`` on the target entries only: a positive-only
    recall term such as ELIAS's shortlist loss, which never pushes candidates down). ``weight``
    multiplies the level's terms: a number, or a tensor broadcastable to ``[B, K]`` (e.g. one
    weight per row) for shortlist levels."""

    logits: torch.Tensor
    ids: torch.Tensor | None = None
    space: str | int = LABELS
    loss: str = "bce"
    weight: float | torch.Tensor = 1.0

    def __post_init__(self) -> None:
        if self.loss not in LEVEL_LOSSES:
            raise ValueError(f"Level.loss={self.loss!r}: expected one of {LEVEL_LOSSES}")

    @property
    def is_shortlist(self) -> bool:
        return self.ids is not None

    @property
    def is_labels(self) -> bool:
        return self.space == LABELS


def project_targets(
    targets: SparseTargets, label_to_cluster: torch.Tensor, num_clusters: int
) -> SparseTargets:
    """Label targets projected to clusters: a cluster's target is the max of its member labels'
    targets, and it is a positive when any member is. ``label_to_cluster [L]`` maps label ids to
    cluster ids (``< 0``: the label is in no cluster and is dropped)."""
    t = targets.coalesce()
    mapping = label_to_cluster.to(t.cols.device, torch.long)
    if mapping.numel() != t.shape[1]:
        raise ValueError(
            f"label_to_cluster has {mapping.numel()} entries for targets over {t.shape[1]} labels"
        )
    cols = mapping[t.cols]
    keep = cols >= 0
    keys = t.rows[keep] * num_clusters + cols[keep]
    uniq, inverse = torch.unique(keys, return_inverse=True)  # sorted: coalesced by (row, col)

    def cluster_max(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(uniq.numel(), dtype=values.dtype, device=values.device)
        return out.scatter_reduce(0, inverse, values, reduce="amax", include_self=False)

    positive = None if t.positive is None else cluster_max(t.positive[keep].float()) > 0
    return SparseTargets(
        uniq // num_clusters, uniq % num_clusters, cluster_max(t.vals[keep]),
        (t.shape[0], int(num_clusters)), coalesced=True, positive=positive,
    )


def levels_bce(levels: Sequence[Level], targets: Sequence[SparseTargets], reduction: str) -> torch.Tensor:
    """The default LEVER loss of a training step: every level's term (``Level.loss``: BCE, or the
    positive-only recall term) against its own targets, times ``Level.weight``, summed over
    levels."""
    if len(levels) != len(targets) or not levels:
        raise ValueError(f"{len(levels)} levels but {len(targets)} target sets; expected one per level")
    total = None
    for level, t in zip(levels, targets):
        weight = level.weight
        if isinstance(weight, torch.Tensor) and not level.is_shortlist:
            raise ValueError("Level.weight as a tensor needs a shortlist level (ids given)")
        if level.loss == "recall":
            ids = level.ids
            if ids is None:
                ids = torch.arange(level.logits.shape[1], device=level.logits.device).expand_as(level.logits)
            loss = lever_recall_shortlist(level.logits, ids, t, reduction, weight)
        elif level.is_shortlist:
            loss = lever_bce_shortlist(level.logits, level.ids, t, reduction, weight)
        else:
            loss = lever_bce(level.logits, t, reduction) * weight
        total = loss if total is None else total + loss
    return total


def fused_grad_(probs: torch.Tensor, targets: SparseTargets, scale: float = 1.0) -> torch.Tensor:
    """Turn ``probs = σ(z)`` (``[B, L]``, any float dtype) into ``scale·(σ(z) − t)`` in place.

    Duplicate (row, col) target entries accumulate (``index_put_(accumulate=True)``; a plain
    advanced-index ``-=`` would apply only one of them)."""
    if tuple(probs.shape) != targets.shape:
        raise ValueError(f"probs shape {tuple(probs.shape)} differs from targets shape {targets.shape}")
    t = targets.to(probs.device)
    probs.index_put_((t.rows, t.cols), t.vals.neg().to(probs.dtype), accumulate=True)
    if scale != 1.0:
        probs.mul_(scale)
    return probs


@torch.no_grad()
def loss_from_probs(
    probs: torch.Tensor, targets: SparseTargets, reduction: str = "mean", chunk_rows: int = 64
) -> torch.Tensor:
    """The loss value from ``p = σ(z)`` without logits or a dense target:
    ``Σ −log(1−p) − Σ_S t·logit(p)``. Works in float32 over ``chunk_rows`` rows at a time so
    half-precision probabilities never get a full float32 copy. Exact up to the precision of
    ``p`` (a saturated ``p`` is clamped one ulp away from 0 and 1)."""
    _check_reduction(reduction)
    if tuple(probs.shape) != targets.shape:
        raise ValueError(f"probs shape {tuple(probs.shape)} differs from targets shape {targets.shape}")
    eps = float(torch.finfo(probs.dtype).eps)
    total = torch.zeros((), dtype=torch.float64, device=probs.device)
    for start in range(0, probs.shape[0], chunk_rows):
        # clamp (not clamp_): for float32 input .float() is the caller's tensor, not a copy
        p = probs[start : start + chunk_rows].float().clamp(eps, 1.0 - eps)
        total -= torch.log1p(p.neg_()).sum(dtype=torch.float64)  # softplus(z) = −log(1 − p)
    t = targets.to(probs.device)
    z_s = torch.logit(probs[t.rows, t.cols].float().clamp(eps, 1.0 - eps))
    total -= torch.dot(t.vals.double(), z_s.double())
    return (total / probs.numel() if reduction == "mean" else total).float()


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------
class LeverBCELoss(nn.Module):
    """LEVER loss over dense logits ``z [B, L]`` and sparse soft targets ``t``::

        loss = Σ_{b,l} softplus(z_bl) − Σ_{(b,l)∈S} t_bl·z_bl        (= Σ BCE(t, z))
             = λ·Σ BCE(y, z) + (1−λ)·Σ BCE(p̂, z)                    (mix targets)

    ``reduction='mean'`` divides by ``B·L`` like ``BCEWithLogitsLoss``; ``'sum'`` does not.
    Autograd's gradient is ``σ(z) − t`` (divided by ``B·L`` for the mean).
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: SparseTargets) -> torch.Tensor:
        return lever_bce(logits, targets, self.reduction)


class LeverShortlistBCELoss(nn.Module):
    """LEVER loss over a shortlist: logits ``z [B, K]`` scored for ``label_ids [B, K]``::

        loss = Σ_{b,k valid} softplus(z_bk) − t(b, label_ids_bk)·z_bk

    ``t(b, l)`` is looked up in the sparse targets (0 if absent); target entries for labels not in
    the shortlist are ignored. Padding ids (``< 0`` or ``>= L``) are not valid entries;
    ``'mean'`` divides by the number of valid entries.
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, label_ids: torch.Tensor, targets: SparseTargets) -> torch.Tensor:
        return lever_bce_shortlist(logits, label_ids, targets, self.reduction)


class LeverFusedBCE(nn.Module):
    """LEVER loss for a hand-written classifier backward: given ``p = σ(z) [B, L]``, ``forward``
    returns the loss value (no autograd) and overwrites ``p`` with ``∂loss/∂z``::

        loss = Σ −log(1 − p) − Σ_{(b,l)∈S} t_bl·logit(p_bl)
        p   ←  (p − t) · s,     s = 1 (sum) or 1/(B·L) (mean)

    The gradient is written with one ``index_put_(accumulate=True)`` over the target entries;
    no dense target is built. Use :meth:`grad_` alone on steps where the loss is not logged.
    """

    def __init__(self, reduction: str = "sum"):
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def grad_(self, probs: torch.Tensor, targets: SparseTargets) -> torch.Tensor:
        scale = 1.0 / probs.numel() if self.reduction == "mean" else 1.0
        return fused_grad_(probs, targets, scale)

    def loss_value(self, probs: torch.Tensor, targets: SparseTargets) -> torch.Tensor:
        return loss_from_probs(probs, targets, self.reduction)

    def forward(self, probs: torch.Tensor, targets: SparseTargets) -> torch.Tensor:
        loss = self.loss_value(probs, targets)
        self.grad_(probs, targets)
        return loss


@dataclasses.dataclass(frozen=True)
class LeverLossParams:
    """The LEVER settings as the target and loss hooks see them: a validated
    :class:`lever.train.params.LeverParams` (the one definition of λ, κ and the mode, λ a number
    here) and the ``reduction`` of the per-entry BCE (``sum`` in ``lever train``, whose loop scales
    by 1/rows of the global batch; the user's in ``lever.wrap``). Made by
    ``LeverParams.loss_params``, not configured on its own.

    ``lam``: weight λ of the ground truth in ``t = λ·y + (1−λ)·p̂`` (the paper uses 0.5);
    ``kappa``: ``None`` for the constant ``lam``, or κ >= 0 for one λ per label,
    ``λ_l = n_l / (n_l + κ)`` (:func:`label_lambda`; ``lam`` is then unused; mode ``mix`` only);
    ``mode``: ``mix`` (Eq. 6) or ``augment`` (positives at 1 ∪ teacher entries at their score).
    """

    lever: Any  # lever.train.params.LeverParams, validated
    reduction: str = "mean"

    def __post_init__(self) -> None:
        _check_reduction(self.reduction)

    @property
    def lam(self) -> float:
        return self.lever.lam

    @property
    def kappa(self) -> float | None:
        return self.lever.kappa

    @property
    def mode(self) -> str:
        return self.lever.mode


def as_csr_rows(matrix: Any, row_ids: np.ndarray) -> sp.csr_matrix | None:
    """Rows of a soft-label source: a ``SoftLabels`` (``.rows``), a scipy matrix, or ``None``."""
    if matrix is None:
        return None
    if hasattr(matrix, "rows") and callable(matrix.rows):
        return matrix.rows(row_ids)
    if sp.issparse(matrix):
        return sp.csr_matrix(matrix)[np.asarray(row_ids, dtype=np.int64)]
    raise TypeError(
        f"soft labels: expected lever.SoftLabels, a scipy sparse matrix or None, got {type(matrix).__name__}"
    )
