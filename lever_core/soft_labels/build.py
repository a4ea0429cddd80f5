"""Building soft labels from teacher embeddings (paper §3, Table 22).

The (N + L) × L matrix holds calibrated teacher scores p̂ = calibrate(cos) on:

1. **every ground-truth pair** (document i, label l): cos = ⟨E(x_i), E(l)⟩ computed exactly from
   the stored embeddings, so no positive lacks a teacher estimate;
2. **every label row's self entry** (row N + l, column l): the -Aug row's ground truth is the label
   itself; its value is the calibrated score of cos = 1, i.e. ``calibrate(1.0)`` (1.0 under
   ``linear``, σ(a + b) under ``platt``), the score the teacher gives a text paired with itself;
3. **label→label neighbours** for label rows: walk label l's nearest labels best first, skip l
   itself, stop at the first whose calibrated score is below ``threshold``, keep at most τ_l − 1
   (τ_l counts the self entry, as in the paper and the released code);
4. **label→document top-ups** (τ_d > 0): labels with fewer than τ_d training documents, visited in
   ascending training frequency (number of training documents, label rows not counted), get their
   nearest training documents that are not already positives, best first, stopping below
   ``doc_threshold``, until they have τ_d positives in total.

Differences from the released ``create_teacher_distilled_dataset.py`` (ecosystem notes §1.6), on
purpose: the number of *added* entries is counted, not the candidate index (no slot overflow into
the next label); no ``break`` inside a parallel loop; one monotone calibration for documents and
labels (no sign flip of the label sigmoid); ground-truth pairs store p̂, not 1.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever.soft_labels.calibration import (
    CALIBRATIONS,
    Calibrator,
    brier_score,
    calibration_pairs,
    expected_calibration_error,
    fit_platt,
    pair_scores,
    reliability_table,
    roc_auc,
)
from lever.soft_labels.knn import INDEX_KINDS, knn
from lever.soft_labels.labels import SoftLabels
from lever.utils.params import Params, ParamsError

# Entry kinds, as counted in meta["counts"].
KINDS = ("gt_doc", "doc_topup", "label_self", "label_neighbour")


@dataclasses.dataclass
class SoftLabelParams(Params):
    """Settings of one soft-label build; saved in the output's sidecar as ``params``."""

    tau_l: int = 4  # positives per label row, self included (paper Table 22: 4..100)
    tau_d: int = 0  # tail labels are topped up to this many training documents (0: off)
    calibration: str = "linear"  # linear: (1+cos)/2 (paper) | platt: sigmoid(a*cos+b), fitted
    threshold: float = 0.8  # gate on the calibrated score of label→label neighbours
    doc_threshold: float | None = None  # gate for label→document top-ups; None: same as threshold
    index: str = "exact"  # exact | hnsw | ivf
    query_chunk: int = 16384  # queries per exact-kNN block
    db_chunk: int = 262144  # database rows per exact-kNN block (bounds memory)
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    ivf_nlist: int = 0  # 0: about 4*sqrt(n)
    ivf_nprobe: int = 0  # 0: nlist / 8
    use_gpu: str = "auto"  # auto: faiss GPU indexes when faiss sees a GPU | yes | no
    calib_docs: int = 4000  # held-out training documents: half fit Platt, half measure ECE
    calib_hard_negatives: int = 10  # teacher's top non-positive labels per held-out document
    calib_random_negatives: int = 10  # uniformly drawn non-positive labels per held-out document
    calib_bins: int = 15  # equal-width bins of the ECE and the reliability diagram
    seed: int = 0

    def validate(self, source: str = "soft-label params") -> SoftLabelParams:
        checks = [
            (self.tau_l >= 1, "tau_l", ">= 1 (1 = self only, the -Aug baseline)"),
            (self.tau_d >= 0, "tau_d", ">= 0"),
            (self.calibration in CALIBRATIONS, "calibration", f"one of {CALIBRATIONS}"),
            (0.0 <= self.threshold <= 1.0, "threshold", "in [0, 1] (a calibrated score)"),
            (
                self.doc_threshold is None or 0.0 <= self.doc_threshold <= 1.0,
                "doc_threshold",
                "in [0, 1] or null",
            ),
            (self.index in INDEX_KINDS, "index", f"one of {INDEX_KINDS}"),
            (self.use_gpu in ("auto", "yes", "no"), "use_gpu", "auto, yes or no"),
            (self.query_chunk >= 1 and self.db_chunk >= 1, "query_chunk/db_chunk", ">= 1"),
            (self.calib_docs >= 2, "calib_docs", ">= 2"),
            (self.calib_bins >= 2, "calib_bins", ">= 2"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ParamsError(f"{source}: field {name!r} = {getattr(self, name, None)!r}; expected {expected}")
        return self

    @property
    def resolved_doc_threshold(self) -> float:
        return self.threshold if self.doc_threshold is None else self.doc_threshold

    def knn_kwargs(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "query_chunk": self.query_chunk,
            "db_chunk": self.db_chunk,
            "hnsw_m": self.hnsw_m,
            "hnsw_ef_construction": self.hnsw_ef_construction,
            "hnsw_ef_search": self.hnsw_ef_search,
            "ivf_nlist": self.ivf_nlist or None,
            "ivf_nprobe": self.ivf_nprobe or None,
            "use_gpu": {"auto": None, "yes": True, "no": False}[self.use_gpu],
            "seed": self.seed,
        }


# -- selection rules (pure functions on kNN output, tested entry by entry) ----------------------


def _walk(ids: np.ndarray, cal: np.ndarray, threshold: float) -> np.ndarray:
    """Candidates still 'alive' when walking best first and stopping at the first score below
    ``threshold`` (or the first missing neighbour)."""
    stop = (ids < 0) | (cal < threshold)
    return np.cumsum(stop, axis=1) == 0


def select_label_neighbours(
    label_ids: np.ndarray, nbr_ids: np.ndarray, nbr_cal: np.ndarray, tau_l: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label, neighbour label, p̂) triples: up to τ_l − 1 neighbours per label, itself excluded.

    ``nbr_ids``/``nbr_cal`` are each query label's neighbours, best first. Only the label itself is
    a positive of its own row, so it is the only one skipped.
    """
    label_ids = np.asarray(label_ids, dtype=np.int64)
    alive = _walk(nbr_ids, nbr_cal, threshold)
    ok = alive & (nbr_ids != label_ids[:, None])
    take = ok & (np.cumsum(ok, axis=1) <= tau_l - 1)
    r, c = np.nonzero(take)
    return label_ids[r], nbr_ids[r, c], nbr_cal[r, c]


def select_doc_topups(
    label_ids: np.ndarray,
    need: np.ndarray,
    doc_ids: np.ndarray,
    doc_cal: np.ndarray,
    positive_keys: np.ndarray,
    num_labels: int,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, label, p̂) triples: per label, its best non-positive documents, at most ``need``.

    ``positive_keys`` are the ground-truth pairs as ``doc * num_labels + label`` (sorted).
    """
    label_ids = np.asarray(label_ids, dtype=np.int64)
    alive = _walk(doc_ids, doc_cal, threshold)
    keys = doc_ids * num_labels + label_ids[:, None]
    pos = np.isin(keys, positive_keys) & (doc_ids >= 0)
    ok = alive & ~pos
    take = ok & (np.cumsum(ok, axis=1) <= np.asarray(need)[:, None])
    r, c = np.nonzero(take)
    return doc_ids[r, c], label_ids[r], doc_cal[r, c]


# -- calibration --------------------------------------------------------------------------------


def calibrate(
    trn_Y: sp.csr_matrix, trn_emb: np.ndarray, lbl_emb: np.ndarray, params: SoftLabelParams
) -> tuple[Calibrator, dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Fit the chosen calibration and measure ECE of both on a held-out slice of training docs.

    The slice (``calib_docs`` documents with at least one label, drawn with ``seed``) is split in
    two: Platt's (a, b) are fitted on one half, both maps' ECE measured on the other.
    Returns the chosen calibrator, a JSON-able report and the eval curves for the diagram.
    """
    rng = np.random.default_rng(params.seed)
    candidates = np.flatnonzero(np.diff(trn_Y.indptr) > 0)
    n = min(params.calib_docs, candidates.size)
    if n < 2:
        raise ValueError("calibration needs at least two training documents with labels")
    chosen = rng.choice(candidates, size=n, replace=False)
    fit_docs, eval_docs = chosen[: n // 2], chosen[n // 2 :]
    pair_kw = {
        "hard_negatives": params.calib_hard_negatives,
        "random_negatives": params.calib_random_negatives,
        "index": "exact",
    }
    cos_fit, y_fit = calibration_pairs(trn_Y, trn_emb, lbl_emb, fit_docs, seed=params.seed, **pair_kw)
    cos_ev, y_ev = calibration_pairs(trn_Y, trn_emb, lbl_emb, eval_docs, seed=params.seed + 1, **pair_kw)
    maps: dict[str, Calibrator | None] = {"linear": Calibrator("linear")}
    try:
        maps["platt"] = fit_platt(cos_fit, y_fit)
    except ValueError as e:
        if params.calibration == "platt":
            raise ValueError(f"platt calibration could not be fitted: {e}") from None
        maps["platt"] = None
    report: dict[str, Any] = {
        "method": params.calibration,
        "holdout_docs": {"fit": int(fit_docs.size), "eval": int(eval_docs.size)},
        "pairs": {
            "fit": int(y_fit.size),
            "eval": int(y_ev.size),
            "eval_positive_share": float(y_ev.mean()) if y_ev.size else None,
        },
        "population": (
            "per held-out training document: all ground-truth labels (y=1), its "
            f"{params.calib_hard_negatives} nearest non-positive labels under the teacher and "
            f"{params.calib_random_negatives} random non-positive labels (y=0)"
        ),
        "bins": params.calib_bins,
        "teacher_auc": roc_auc(cos_ev, y_ev),
        "ece": {},
        "brier": {},
        "reliability": {},
    }
    curves = {}
    for name, cal in maps.items():
        if cal is None:
            report["ece"][name] = report["brier"][name] = None
            continue
        p = cal(cos_ev)
        curves[name] = (p, y_ev)
        report["ece"][name] = expected_calibration_error(p, y_ev, params.calib_bins)
        report["brier"][name] = brier_score(p, y_ev)
        t = reliability_table(p, y_ev, params.calib_bins)
        report["reliability"][name] = {
            "count": t["count"].tolist(),
            "confidence": [None if np.isnan(v) else float(v) for v in t["confidence"]],
            "accuracy": [None if np.isnan(v) else float(v) for v in t["accuracy"]],
        }
        report[name] = cal.to_dict()
    chosen_cal = maps[params.calibration]
    assert chosen_cal is not None
    return chosen_cal, report, curves


# -- the build ----------------------------------------------------------------------------------


def ground_truth_scores(
    trn_Y: sp.csr_matrix, trn_emb: np.ndarray, lbl_emb: np.ndarray, calibrator: Calibrator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(doc, label, p̂) for every non-zero of ``trn_Y``, cosines as exact row-wise dot products."""
    coo = trn_Y.tocoo()
    order = np.lexsort((coo.col, coo.row))  # row-major, so memmapped document rows are read in order
    rows = coo.row[order].astype(np.int64)
    cols = coo.col[order].astype(np.int64)
    cos = pair_scores(trn_emb, lbl_emb, rows, cols, chunk=1 << 16)
    return rows, cols, calibrator(cos)


def build_soft_labels(
    trn_Y: sp.csr_matrix,
    trn_emb: np.ndarray,
    lbl_emb: np.ndarray,
    params: SoftLabelParams | None = None,
    *,
    calibrator: Calibrator | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = False,
) -> tuple[SoftLabels, dict[str, Any]]:
    """Soft labels for a dataset's label-augmented training matrix.

    ``trn_Y`` is the binary N × L training matrix (label rows are implied); ``trn_emb`` and
    ``lbl_emb`` the teacher's unit-norm embeddings of the training documents and of the labels.
    Without ``calibrator`` the one named by ``params.calibration`` is fitted (``calibrate``).
    Returns the ``SoftLabels`` and a report (timings, calibration report, diagram curves under
    ``"curves"``, which is not JSON and is left out of the saved meta).
    """
    params = (params or SoftLabelParams()).validate()
    trn_Y = sp.csr_matrix(trn_Y)
    trn_Y.sum_duplicates()
    n_docs, n_labels = trn_Y.shape
    if trn_emb.shape[0] != n_docs or lbl_emb.shape[0] != n_labels:
        raise ValueError(
            f"teacher embeddings do not fit the dataset: {trn_emb.shape[0]} document and "
            f"{lbl_emb.shape[0]} label rows for a {n_docs} × {n_labels} training matrix"
        )
    if trn_emb.shape[1] != lbl_emb.shape[1]:
        raise ValueError(f"document and label embeddings differ in dimension: {trn_emb.shape[1]} vs {lbl_emb.shape[1]}")
    timings: dict[str, float] = {}
    report: dict[str, Any] = {}
    kw = params.knn_kwargs()

    t0 = time.perf_counter()
    if calibrator is None:
        calibrator, report["calibration"], report["curves"] = calibrate(trn_Y, trn_emb, lbl_emb, params)
    timings["calibration_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    gt_r, gt_c, gt_v = ground_truth_scores(trn_Y, trn_emb, lbl_emb, calibrator)
    timings["ground_truth_s"] = time.perf_counter() - t0

    labels = np.arange(n_labels, dtype=np.int64)
    self_v = np.full(n_labels, float(calibrator(1.0)), dtype=np.float32)

    t0 = time.perf_counter()
    if params.tau_l > 1:
        # k = τ_l: the self label takes one slot when it is retrieved; when ties push it out the
        # τ_l candidates still hold τ_l − 1 others.
        k = min(params.tau_l, n_labels)
        s, ids = knn(lbl_emb, lbl_emb, k, progress=progress, **kw)
        ll_r, ll_c, ll_v = select_label_neighbours(labels, ids, calibrator(s), params.tau_l, params.threshold)
    else:
        ll_r = ll_c = np.zeros(0, np.int64)
        ll_v = np.zeros(0, np.float32)
    timings["label_neighbours_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    freq = np.diff(trn_Y.tocsc().indptr)
    if params.tau_d > 0:
        tail = np.flatnonzero(freq < params.tau_d)
        tail = tail[np.argsort(freq[tail], kind="stable")]  # ascending frequency, then label id
        positive_keys = np.sort(gt_r * n_labels + gt_c)
        parts = []
        step = max(1, params.query_chunk * 4)
        for s0 in range(0, tail.size, step):
            chunk = tail[s0 : s0 + step]
            q = np.ascontiguousarray(lbl_emb[np.sort(chunk)], dtype=np.float32)
            q = q[np.argsort(np.argsort(chunk))]
            k = min(params.tau_d, n_docs)
            s, ids = knn(q, trn_emb, k, progress=progress, **kw)
            parts.append(
                select_doc_topups(
                    chunk,
                    params.tau_d - freq[chunk],
                    ids,
                    calibrator(s),
                    positive_keys,
                    n_labels,
                    params.resolved_doc_threshold,
                )
            )
        if parts:
            ld_r, ld_c, ld_v = (np.concatenate(x) for x in zip(*parts))
        else:
            ld_r = ld_c = np.zeros(0, np.int64)
            ld_v = np.zeros(0, np.float32)
        topped_up = int(tail.size)
    else:
        ld_r = ld_c = np.zeros(0, np.int64)
        ld_v = np.zeros(0, np.float32)
        topped_up = 0
    timings["doc_topups_s"] = time.perf_counter() - t0

    rows = np.concatenate([gt_r, ld_r, n_docs + labels, n_docs + ll_r])
    cols = np.concatenate([gt_c, ld_c, labels, ll_c])
    vals = np.concatenate([gt_v, ld_v, self_v, ll_v]).astype(np.float32)
    csr = sp.csr_matrix((vals, (rows, cols)), shape=(n_docs + n_labels, n_labels), dtype=np.float32)
    csr.sum_duplicates()
    if csr.nnz != vals.size:  # the selection rules exclude positives, so this is a bug guard
        raise RuntimeError(f"soft-label build produced {vals.size - csr.nnz} duplicate entries")

    per_label_nbrs = np.bincount(ll_r, minlength=n_labels)
    counts = {
        "gt_doc": int(gt_v.size),
        "doc_topup": int(ld_v.size),
        "label_self": int(n_labels),
        "label_neighbour": int(ll_v.size),
        "labels_below_tau_d": topped_up,
        "labels_reaching_tau_d": int(np.sum(freq + np.bincount(ld_c, minlength=n_labels) >= params.tau_d)),
        "label_rows_by_neighbours": np.bincount(per_label_nbrs, minlength=params.tau_l).tolist(),
    }
    full_meta = dict(meta or {})
    full_meta.update(
        num_docs=int(n_docs),
        num_labels=int(n_labels),
        calibration=calibrator.to_dict(),
        tau_l=params.tau_l,
        tau_d=params.tau_d,
        label_threshold=params.threshold,
        doc_threshold=params.resolved_doc_threshold,
        index=params.index,
        self_entry_value=float(self_v[0]) if n_labels else None,
        counts=counts,
        params=params.to_dict(),
    )
    if "calibration" in report:
        full_meta["calibration_report"] = report["calibration"]
    report["timings"] = timings
    report["counts"] = counts
    return SoftLabels.from_csr(csr, full_meta), report
