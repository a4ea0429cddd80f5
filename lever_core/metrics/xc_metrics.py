"""Streaming XC metrics: small classes that accumulate over batches (napkinXC style), the
``XCMetrics`` bundle that feeds them all from one top-k per batch, and function wrappers.

Conventions (pyxclib's, which the published tables use; formulas in docs/metrics.md):

- Ground truth is binarised (any non-zero entry is a positive).
- Points with no positive label count as 0 in the P, nDCG, R means and add 0 to both sides of
  the PSP / PSnDCG ratios; they still count in ``n``.
- P@k divides by k even when a row has fewer than k predictions.
- PSP@k and PSnDCG@k are ratios of dataset means: the propensity-weighted score divided by the
  same score of the ideal ranking (true labels sorted by inverse propensity).
- C@k: labels hit in some top-k over labels present in the test ground truth.
- Macro P/R/F1@k: per-label TP/FP/FN over the top-k lists, averaged over all labels; a label
  with a zero denominator contributes 0.

Class ``summary()`` and the function wrappers return fractions for k = 1..K (numpy arrays);
``XCMetrics.summary()`` and ``evaluate`` return a flat dict in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever.metrics.ranking import PAD_INDEX, canonical_binary, member, topk

ALL_METRICS = ("P", "nDCG", "PSP", "PSnDCG", "R", "C", "MacroP", "MacroR", "MacroF1")
PS_METRICS = ("PSP", "PSnDCG")
MACRO_METRICS = ("MacroP", "MacroR", "MacroF1")


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


class RankedBatch:
    """One batch of top-k lists with the ground truth of the same points."""

    def __init__(self, indices: np.ndarray, truth: sp.csr_matrix):
        self.indices = indices  # [b, k] int64, PAD_INDEX padded
        self.truth = truth  # [b, L] canonical binary CSR
        self.num_true = np.diff(truth.indptr)
        b, self.k = indices.shape
        L = truth.shape[1]
        keys = np.arange(b, dtype=np.int64)[:, None] * L + indices
        truth_keys = np.repeat(np.arange(b, dtype=np.int64), self.num_true) * L + truth.indices
        self.hits = member(keys, truth_keys) & (indices != PAD_INDEX)
        self._ideal: np.ndarray | None = None

    def ideal_gains(self, inv_prop: np.ndarray) -> np.ndarray:
        """Inverse propensities of each point's true labels, largest first, 0-padded to k."""
        if self._ideal is None:
            t = self.truth
            weighted = sp.csr_matrix((inv_prop[t.indices], t.indices, t.indptr), shape=t.shape)
            best, _ = topk(weighted, self.k)
            self._ideal = np.where(best >= 0, inv_prop[np.maximum(best, 0)], 0.0)
        return self._ideal

    def position_norm(self) -> tuple[np.ndarray, np.ndarray]:
        """nDCG normaliser per row and cut-off, and the mask of rows that have positives."""
        cum = np.cumsum(_discounts(self.k))
        valid = self.num_true > 0
        at = np.minimum(np.arange(self.k)[None, :], self.num_true[:, None] - 1)
        return cum[np.maximum(at, 0)], valid


class MetricAtK:
    """Accumulates one metric for cut-offs 1..k over batches of :class:`RankedBatch`."""

    name = ""

    def __init__(self, k: int = 5):
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k = int(k)
        self.reset()

    def reset(self) -> None:
        self.sum = np.zeros(self.k)
        self.count = 0

    def update(self, batch: RankedBatch) -> None:
        self.sum += self._batch_sum(batch)
        self.count += batch.indices.shape[0]

    def _batch_sum(self, batch: RankedBatch) -> np.ndarray:
        raise NotImplementedError

    def summary(self) -> np.ndarray:
        return self.sum / self.count if self.count else np.zeros(self.k)


class PrecisionAtK(MetricAtK):
    """P@k = mean_i (1/k) sum_{j<=k} y_{i, r_i(j)}."""

    name = "P"

    def _batch_sum(self, batch):
        return (np.cumsum(batch.hits, axis=1) / np.arange(1, self.k + 1)).sum(axis=0)


class RecallAtK(MetricAtK):
    """R@k = mean_i |top-k(i) ∩ y_i| / max(|y_i|, 1)."""

    name = "R"

    def _batch_sum(self, batch):
        denom = np.maximum(batch.num_true, 1)[:, None]
        return (np.cumsum(batch.hits, axis=1) / denom).sum(axis=0)


class NDCGAtK(MetricAtK):
    """nDCG@k = mean_i DCG@k(i) / sum_{j<=min(k,|y_i|)} 1/log2(j+1), DCG gains y/log2(j+1)."""

    name = "nDCG"

    def _batch_sum(self, batch):
        norm, valid = batch.position_norm()
        dcg = np.cumsum(batch.hits * _discounts(self.k), axis=1)
        return (dcg[valid] / norm[valid]).sum(axis=0)


class PSMetricAtK(MetricAtK):
    """Propensity-scored metric: accumulated score over the same score of the ideal ranking."""

    def __init__(self, inv_prop: np.ndarray, k: int = 5):
        self.inv_prop = np.asarray(inv_prop, dtype=np.float64)
        super().__init__(k)

    def reset(self) -> None:
        super().reset()
        self.best_sum = np.zeros(self.k)

    def update(self, batch: RankedBatch) -> None:
        gains = np.where(batch.hits, self.inv_prop[np.maximum(batch.indices, 0)], 0.0)
        self.sum += self._score(gains, batch)
        self.best_sum += self._score(batch.ideal_gains(self.inv_prop), batch)
        self.count += batch.indices.shape[0]

    def _score(self, gains: np.ndarray, batch: RankedBatch) -> np.ndarray:
        raise NotImplementedError

    def summary(self) -> np.ndarray:
        out = np.zeros(self.k)
        np.divide(self.sum, self.best_sum, out=out, where=self.best_sum > 0)
        return out


class PSPrecisionAtK(PSMetricAtK):
    """PSP@k = [mean_i (1/k) sum_{j<=k} q_{r_i(j)} y_{i,r_i(j)}] / [same for the q-sorted truth]."""

    name = "PSP"

    def _score(self, gains, batch):
        return (np.cumsum(gains, axis=1) / np.arange(1, self.k + 1)).sum(axis=0)


class PSNDCGAtK(PSMetricAtK):
    """PSnDCG@k: nDCG with gains q·y (same positional normaliser), over the ideal's value."""

    name = "PSnDCG"

    def _score(self, gains, batch):
        norm, valid = batch.position_norm()
        dcg = np.cumsum(gains * _discounts(self.k), axis=1)
        return (dcg[valid] / norm[valid]).sum(axis=0)


class CoverageAtK(MetricAtK):
    """C@k = |labels hit in some top-k| / |labels with a positive in the evaluated ground truth|."""

    name = "C"

    def __init__(self, num_labels: int, k: int = 5):
        self.num_labels = int(num_labels)
        super().__init__(k)

    def reset(self) -> None:
        super().reset()
        self.first_hit = np.full(self.num_labels, self.k, dtype=np.int32)  # 0-based rank
        self.present = np.zeros(self.num_labels, dtype=bool)

    def update(self, batch: RankedBatch) -> None:
        self.present[batch.truth.indices] = True
        r, j = np.nonzero(batch.hits)
        np.minimum.at(self.first_hit, batch.indices[r, j], j.astype(np.int32))
        self.count += batch.indices.shape[0]

    def summary(self) -> np.ndarray:
        n_present = int(self.present.sum())
        if n_present == 0:
            return np.zeros(self.k)
        hit_at = np.bincount(self.first_hit, minlength=self.k + 1)[: self.k]
        return np.cumsum(hit_at) / n_present


class LabelConfusionAtK(MetricAtK):
    """Per-label true positives and prediction counts at each rank, for macro metrics and
    the per-decile report. Memory: two int32 ``[k, L]`` arrays (8·k·L bytes; leave the macro
    metrics out with ``XCMetrics(..., metrics=[...])`` for very large k·L)."""

    name = "Macro"

    def __init__(self, num_labels: int, k: int = 5):
        self.num_labels = int(num_labels)
        super().__init__(k)

    def reset(self) -> None:
        super().reset()
        self.tp_at_rank = np.zeros(self.k * self.num_labels, dtype=np.int32)
        self.pred_at_rank = np.zeros(self.k * self.num_labels, dtype=np.int32)
        self.positives = np.zeros(self.num_labels, dtype=np.int64)

    def update(self, batch: RankedBatch) -> None:
        L = self.num_labels
        np.add.at(self.positives, batch.truth.indices, 1)
        rank = np.broadcast_to(np.arange(self.k, dtype=np.int64), batch.indices.shape)
        predicted = batch.indices != PAD_INDEX
        np.add.at(self.pred_at_rank, rank[predicted] * L + batch.indices[predicted], 1)
        np.add.at(self.tp_at_rank, rank[batch.hits] * L + batch.indices[batch.hits], 1)
        self.count += batch.indices.shape[0]

    def true_positives(self, j: int) -> np.ndarray:
        """TP of each label within the top-``j`` lists."""
        return self.tp_at_rank.reshape(self.k, self.num_labels)[:j].sum(axis=0, dtype=np.int64)

    def predicted(self, j: int) -> np.ndarray:
        """How often each label appears in the top-``j`` lists (TP + FP)."""
        return self.pred_at_rank.reshape(self.k, self.num_labels)[:j].sum(axis=0, dtype=np.int64)

    def macro(self) -> dict[str, np.ndarray]:
        """Macro P/R/F1 at cut-offs 1..k (fractions); one cut-off at a time keeps memory O(L)."""
        tp_rank = self.tp_at_rank.reshape(self.k, self.num_labels)
        pred_rank = self.pred_at_rank.reshape(self.k, self.num_labels)
        pos = self.positives.astype(np.float64)
        tp = np.zeros(self.num_labels)
        pred = np.zeros(self.num_labels)
        out = {m: np.zeros(self.k) for m in MACRO_METRICS}

        def mean_ratio(num, den):
            r = np.zeros_like(num)
            np.divide(num, den, out=r, where=den > 0)
            return r.mean()

        for j in range(self.k):
            tp += tp_rank[j]
            pred += pred_rank[j]
            out["MacroP"][j] = mean_ratio(tp, pred)
            out["MacroR"][j] = mean_ratio(tp, pos)
            out["MacroF1"][j] = mean_ratio(2 * tp, pred + pos)
        return out

    def summary(self) -> np.ndarray:
        raise TypeError("LabelConfusionAtK holds several metrics; use macro()")


class MacroPrecisionAtK(LabelConfusionAtK):
    """Mean over labels of TP_l / (TP_l + FP_l) within the top-k lists (0 if never predicted)."""

    name = "MacroP"

    def summary(self) -> np.ndarray:
        return self.macro()["MacroP"]


class MacroRecallAtK(LabelConfusionAtK):
    """Mean over labels of TP_l / (TP_l + FN_l) (0 for labels absent from the ground truth)."""

    name = "MacroR"

    def summary(self) -> np.ndarray:
        return self.macro()["MacroR"]


class MacroF1AtK(LabelConfusionAtK):
    """Mean over labels of 2 TP_l / (2 TP_l + FP_l + FN_l) (0 where that is 0/0)."""

    name = "MacroF1"

    def summary(self) -> np.ndarray:
        return self.macro()["MacroF1"]


def _as_rows(row_ids: Any, n: int) -> np.ndarray | slice:
    if isinstance(row_ids, range):
        row_ids = slice(row_ids.start, row_ids.stop, row_ids.step)
    if isinstance(row_ids, slice):
        start, stop, step = row_ids.indices(n)
        return slice(start, stop) if step == 1 else np.arange(start, stop, step)
    rows = np.asarray(row_ids)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError("row_ids must be a slice, range or 1-D integer array")
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"row_ids must lie in [0, {n}) (the test points), got {rows.min()}..{rows.max()}")
    return rows.astype(np.int64)


def _num_rows(preds: Any) -> int:
    if isinstance(preds, (tuple, list)):
        return np.asarray(preds[0]).shape[0]
    return preds.shape[0]


class XCMetrics:
    """All XC metrics for one test set, accumulated batch by batch.

    ``XCMetrics(tst_Y, inv_prop, k=5, filter=None)``; ``update(row_ids, preds)`` for each batch
    (``preds`` in any form :func:`lever.metrics.ranking.topk` accepts, rows aligned with
    ``row_ids``); ``summary()`` gives the ``{"P@1": ..., "PSP@5": ...}`` dict in percent.
    The top-k is taken per batch (after removing ``filter`` pairs), so a large test set never
    needs a dense score matrix. ``inv_prop=None`` leaves out the propensity-scored metrics.
    Summaries cover the rows seen so far; each row may be given once.
    """

    def __init__(
        self,
        tst_Y,
        inv_prop: np.ndarray | None = None,
        k: int = 5,
        filter=None,
        metrics: Sequence[str] | None = None,
    ):
        self.truth = canonical_binary(tst_Y, "test labels")
        n, L = self.truth.shape
        self.k = int(k)
        if inv_prop is not None:
            inv_prop = np.asarray(inv_prop, dtype=np.float64).ravel()
            if inv_prop.shape[0] != L:
                raise ValueError(
                    f"inverse propensities cover {inv_prop.shape[0]} labels but the test labels have {L}"
                )
        self.inv_prop = inv_prop
        if filter is not None:
            if not sp.issparse(filter):
                raise TypeError(f"filter must be a scipy sparse matrix, got {type(filter).__name__}")
            if filter.shape != (n, L):
                raise ValueError(
                    f"filter has shape {filter.shape} but the test labels have shape {(n, L)}"
                )
            filter = canonical_binary(filter, "filter")
        self.filter = filter
        names = list(metrics) if metrics is not None else [
            m for m in ALL_METRICS if inv_prop is not None or m not in PS_METRICS
        ]
        unknown = [m for m in names if m not in ALL_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}")
        if inv_prop is None and any(m in PS_METRICS for m in names):
            raise ValueError("PSP/PSnDCG need inverse propensities (inv_prop)")
        self.names = names
        self.metrics: dict[str, MetricAtK] = {}
        for m in names:
            if m == "P":
                self.metrics[m] = PrecisionAtK(self.k)
            elif m == "nDCG":
                self.metrics[m] = NDCGAtK(self.k)
            elif m == "PSP":
                self.metrics[m] = PSPrecisionAtK(inv_prop, self.k)
            elif m == "PSnDCG":
                self.metrics[m] = PSNDCGAtK(inv_prop, self.k)
            elif m == "R":
                self.metrics[m] = RecallAtK(self.k)
            elif m == "C":
                self.metrics[m] = CoverageAtK(L, self.k)
        # One confusion accumulator serves all three macro metrics.
        self.confusion = LabelConfusionAtK(L, self.k) if any(m in MACRO_METRICS for m in names) else None
        self._seen = np.zeros(n, dtype=bool)

    @property
    def num_labels(self) -> int:
        return self.truth.shape[1]

    @property
    def num_seen(self) -> int:
        return int(self._seen.sum())

    def update(self, row_ids, preds) -> None:
        """Add the predictions for test points ``row_ids`` (slice, range or integer array)."""
        rows = _as_rows(row_ids, self.truth.shape[0])
        nrows = rows.stop - rows.start if isinstance(rows, slice) else rows.size
        if _num_rows(preds) != nrows:
            raise ValueError(f"predictions have {_num_rows(preds)} rows but row_ids name {nrows}")
        if self._seen[rows].any() or (not isinstance(rows, slice) and np.unique(rows).size != nrows):
            raise ValueError("some test points were already given to this XCMetrics (rows must be unique)")
        self._seen[rows] = True
        filt = self.filter[rows] if self.filter is not None else None
        indices, _ = topk(preds, self.k, filter=filt, num_labels=self.num_labels)
        self.update_topk(rows, indices)

    def update_topk(self, row_ids, indices: np.ndarray) -> None:
        """Add already-extracted top-k lists (``[b, k]`` int64, -1 padded, filter applied)."""
        rows = _as_rows(row_ids, self.truth.shape[0])
        batch = RankedBatch(np.asarray(indices, dtype=np.int64), self.truth[rows])
        for metric in self.metrics.values():
            metric.update(batch)
        if self.confusion is not None:
            self.confusion.update(batch)

    def summary_arrays(self) -> dict[str, np.ndarray]:
        """Fractions for k = 1..K, keyed by metric name (``"P"``, ``"PSP"``, ...)."""
        out = {m: self.metrics[m].summary() for m in self.metrics}
        if self.confusion is not None:
            macro = self.confusion.macro()
            out.update({m: macro[m] for m in MACRO_METRICS if m in self.names})
        return {m: out[m] for m in self.names}

    def summary(self) -> dict[str, float]:
        """``{"P@1": 45.1, ..., "MacroF1@5": ...}`` in percent."""
        return {
            f"{m}@{j + 1}": float(100.0 * v[j])
            for m, v in self.summary_arrays().items()
            for j in range(self.k)
        }


def _batches(preds: Any, n: int, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(preds, (tuple, list)):
        if len(preds) != 2:
            raise ValueError("predictions given as a sequence must be an (indices, scores) pair")
        idx, sc = preds
        for s in range(0, n, batch_size):
            yield slice(s, min(n, s + batch_size)), (idx[s : s + batch_size], None if sc is None else sc[s : s + batch_size])
    else:
        if sp.issparse(preds):
            preds = sp.csr_matrix(preds)
        for s in range(0, n, batch_size):
            yield slice(s, min(n, s + batch_size)), preds[s : s + batch_size]


def _compute(tst_Y, preds, inv_prop, k, filter, names, batch_size) -> XCMetrics:
    acc = XCMetrics(tst_Y, inv_prop, k=k, filter=filter, metrics=names)
    n = acc.truth.shape[0]
    if _num_rows(preds) != n:
        raise ValueError(f"predictions have {_num_rows(preds)} rows but the test labels have {n}")
    for rows, batch in _batches(preds, n, batch_size):
        acc.update(rows, batch)
    return acc


def evaluate(
    tst_Y,
    preds,
    inv_prop: np.ndarray | None,
    k: int = 5,
    filter=None,
    batch_size: int = 8192,
    metrics: Sequence[str] | None = None,
) -> dict[str, float]:
    """All metrics for k = 1..``k`` in percent, keyed ``P@1 … MacroF1@k`` (see module doc)."""
    return _compute(tst_Y, preds, inv_prop, k, filter, metrics, batch_size).summary()


def _one(name: str, tst_Y, preds, inv_prop=None, k=5, filter=None, batch_size=8192) -> np.ndarray:
    return _compute(tst_Y, preds, inv_prop, k, filter, [name], batch_size).summary_arrays()[name]


def precision_at_k(tst_Y, preds, k=5, filter=None, batch_size=8192) -> np.ndarray:
    """P@1..k as fractions."""
    return _one("P", tst_Y, preds, None, k, filter, batch_size)


def ndcg_at_k(tst_Y, preds, k=5, filter=None, batch_size=8192) -> np.ndarray:
    """nDCG@1..k as fractions."""
    return _one("nDCG", tst_Y, preds, None, k, filter, batch_size)


def psprecision_at_k(tst_Y, preds, inv_prop, k=5, filter=None, batch_size=8192) -> np.ndarray:
    """PSP@1..k (normalised by the ideal ranking) as fractions."""
    return _one("PSP", tst_Y, preds, inv_prop, k, filter, batch_size)


def psndcg_at_k(tst_Y, preds, inv_prop, k=5, filter=None, batch_size=8192) -> np.ndarray:
    """PSnDCG@1..k (normalised by the ideal ranking) as fractions."""
    return _one("PSnDCG", tst_Y, preds, inv_prop, k, filter, batch_size)


def recall_at_k(tst_Y, preds, k=5, filter=None, batch_size=8192) -> np.ndarray:
    """R@1..k as fractions."""
    return _one("R", tst_Y, preds, None, k, filter, batch_size)


def coverage_at_k(tst_Y, preds, k=5, filter=None, batch_size=8192) -> np.ndarray:
    """C@1..k as fractions."""
    return _one("C", tst_Y, preds, None, k, filter, batch_size)


def macro_precision_at_k(tst_Y, preds, k=5, filter=None, batch_size=8192) -> np.ndarray:
    """Macro-averaged precision@1..k as fractions."""
    return _one("MacroP", tst_Y, preds, None, k, filter, batch_size)


def macro_recall_at_k(tst_Y, preds, k=5, filter=None, batch_size=8192) -> np.ndarray:
    """Macro-averaged recall@1..k as fractions."""
    return _one("MacroR", tst_Y, preds, None, k, filter, batch_size)


def macro_f1_at_k(tst_Y, preds, k=5, filter=None, batch_size=8192) -> np.ndarray:
    """Macro-averaged F1@1..k as fractions."""
    return _one("MacroF1", tst_Y, preds, None, k, filter, batch_size)
