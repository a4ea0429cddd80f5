"""Maps from teacher cosine to a relevance probability p̂(l | x), and how to check them.

* ``linear``: p̂ = (1 + cos) / 2, the paper's default and what the released code stores
  (paper §3.3 and D.7.1: "works equally well" as a sigmoid with offset 0). Not fitted.
* ``platt``: p̂ = σ(a·cos + b), fitted by maximum likelihood on held-out labelled pairs
  (``calibration_pairs``). This is the principled one: it estimates P(relevant | cos) on the
  population of pairs the soft labels are drawn from.

Calibration is judged by the expected calibration error over equal-width bins,
ECE = Σ_b (n_b / n) · |mean(y in b) − mean(p̂ in b)|, and a reliability diagram.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from lever.utils.figures import pyplot, save_png

CALIBRATIONS = ("linear", "platt")


@dataclasses.dataclass(frozen=True)
class Calibrator:
    """A monotone map from cosine similarity to a probability in [0, 1]."""

    method: str = "linear"
    a: float = 1.0
    b: float = 0.0

    def __post_init__(self):
        if self.method not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.method!r}")
        if self.method == "platt" and not self.a > 0:
            # A non-increasing map would invert the neighbour order the τ selection relies on.
            raise ValueError(f"platt calibration needs a > 0 (higher cosine, higher probability); got a={self.a}")

    def __call__(self, cos: np.ndarray | float) -> np.ndarray:
        cos = np.asarray(cos, dtype=np.float64)
        if self.method == "linear":
            p = (1.0 + cos) / 2.0
        else:
            p = _sigmoid(self.a * cos + self.b)
        return np.clip(p, 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        if self.method == "linear":
            return {"method": "linear", "formula": "(1 + cos) / 2"}
        return {"method": "platt", "formula": "sigmoid(a * cos + b)", "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(method=d["method"], a=float(d.get("a", 1.0)), b=float(d.get("b", 0.0)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def fit_platt(cos: np.ndarray, y: np.ndarray, l2: float = 1e-6, max_iter: int = 100) -> Calibrator:
    """Maximum-likelihood σ(a·cos + b) by Newton's method with step halving (2 parameters)."""
    x = np.asarray(cos, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size == 0 or y.min() == y.max():
        raise ValueError("platt calibration needs both positive and negative pairs to fit on")
    X = np.stack([x, np.ones_like(x)], axis=1)
    w = np.zeros(2)

    def nll(w):
        z = X @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)

    f = nll(w)
    for _ in range(max_iter):
        p = _sigmoid(X @ w)
        grad = X.T @ (p - y) + l2 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-10:
            f_new = nll(w - t * step)
            if f_new <= f:
                break
            t *= 0.5
        w, f_old, f = w - t * step, f, f_new
        if abs(f_old - f) <= 1e-10 * max(1.0, abs(f)) or np.abs(t * step).max() < 1e-10:
            break
    return Calibrator("platt", a=float(w[0]), b=float(w[1]))


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE over ``bins`` equal-width probability bins (weights = fraction of pairs in the bin)."""
    table = reliability_table(p, y, bins)
    n = table["count"].sum()
    if n == 0:
        return 0.0
    filled = table["count"] > 0
    gap = np.abs(table["accuracy"][filled] - table["confidence"][filled])
    return float(np.sum(table["count"][filled] / n * gap))


def brier_score(p: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of the probabilities (calibration and sharpness together)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    return float(np.mean((p - y) ** 2)) if p.size else 0.0


def roc_auc(score: np.ndarray, y: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half): how well the teacher's cosine
    ranks relevant above irrelevant pairs. Identical for every monotone calibration, so it separates
    'the teacher does not discriminate' from 'the map is miscalibrated'."""
    from scipy.stats import rankdata

    score = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(y).ravel().astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reliability_table(p: np.ndarray, y: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width bin: edges, count, mean predicted probability and observed positive rate."""
    p = np.asarray(p, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=p, minlength=bins) / count
        acc = np.bincount(idx, weights=y, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": conf, "accuracy": acc}


def calibration_pairs(
    trn_Y,
    doc_emb: np.ndarray,
    lbl_emb: np.ndarray,
    doc_ids: np.ndarray,
    *,
    hard_negatives: int = 10,
    random_negatives: int = 10,
    index: str = "exact",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled (cos, y) pairs for the documents ``doc_ids``.

    Per document: every ground-truth label (y = 1); its ``hard_negatives`` nearest labels under
    the teacher that are not positives (y = 0, the kind of pair the kNN step turns into soft
    labels); and ``random_negatives`` uniformly drawn non-positive labels (y = 0, anchoring the
    low end). The positive share of this population is therefore higher than in the full
    documents × labels matrix, by design: the soft labels are only ever stored on such pairs.
    """
    from lever.soft_labels.knn import knn

    rng = np.random.default_rng(seed)
    n_labels = lbl_emb.shape[0]
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    Y = trn_Y[doc_ids].tocsr()
    Y.sort_indices()
    docs = np.ascontiguousarray(doc_emb[np.sort(doc_ids)], dtype=np.float32)
    docs = docs[np.argsort(np.argsort(doc_ids))]  # back to doc_ids' order after a sorted (memmap) read
    rows, cols, ys = [], [], []
    pos_r, pos_c = Y.nonzero()
    rows.append(pos_r)
    cols.append(pos_c)
    ys.append(np.ones(pos_r.size))
    pos_keys = pos_r.astype(np.int64) * n_labels + pos_c
    if hard_negatives > 0:
        kk = min(n_labels, hard_negatives + int(np.diff(Y.indptr).max(initial=0)))
        _, ids = knn(docs, lbl_emb, kk, index=index)
        r = np.repeat(np.arange(len(doc_ids)), kk)
        c = ids.ravel()
        keep = (c >= 0) & ~np.isin(r * n_labels + c, pos_keys)
        r, c = r[keep], c[keep]
        # first `hard_negatives` non-positive neighbours of each row (ids are best-first per row)
        rank = np.arange(r.size) - np.searchsorted(r, r)
        keep = rank < hard_negatives
        rows.append(r[keep])
        cols.append(c[keep])
        ys.append(np.zeros(int(keep.sum())))
    if random_negatives > 0:
        r = np.repeat(np.arange(len(doc_ids)), random_negatives)
        c = rng.integers(0, n_labels, size=r.size)
        keep = ~np.isin(r * n_labels + c, pos_keys)
        rows.append(r[keep])
        cols.append(c[keep])
        ys.append(np.zeros(int(keep.sum())))
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    y = np.concatenate(ys)
    # hard and random negatives may coincide; a pair counts once
    _keys, first = np.unique(r * n_labels + c, return_index=True)
    r, c, y = r[first], c[first], y[first]
    cos = pair_scores(docs, lbl_emb, r, c)
    return cos, y


def pair_scores(
    a: np.ndarray, b: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int = 1 << 18
) -> np.ndarray:
    """Inner products ⟨a[rows[i]], b[cols[i]]⟩ for each pair, computed exactly in chunks."""
    out = np.empty(len(rows), dtype=np.float32)
    for s in range(0, len(rows), chunk):
        r = rows[s : s + chunk]
        c = cols[s : s + chunk]
        out[s : s + chunk] = np.einsum("ij,ij->i", np.asarray(a[r], np.float32), np.asarray(b[c], np.float32))
    return out


def fit_calibrator(method: str, cos_fit: np.ndarray | None = None, y_fit: np.ndarray | None = None) -> Calibrator:
    """``linear`` needs no data; ``platt`` is fitted on (cos, y) pairs."""
    if method == "linear":
        return Calibrator("linear")
    if method == "platt":
        if cos_fit is None or y_fit is None:
            raise ValueError("platt calibration needs held-out (cos, y) pairs to fit on")
        return fit_platt(cos_fit, y_fit)
    raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")


def save_reliability_diagram(
    path: str | os.PathLike,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    bins: int = 15,
    title: str = "Teacher calibration",
) -> Path:
    """One PNG: reliability curves (observed positive rate vs mean p̂ per bin) and p̂ histograms."""
    plt = pyplot()


    fig, (ax, axh) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    for name, (p, y) in curves.items():
        t = reliability_table(p, y, bins)
        ece = expected_calibration_error(p, y, bins)
        filled = t["count"] > 0
        ax.plot(t["confidence"][filled], t["accuracy"][filled], marker="o", label=f"{name} (ECE {ece:.3f})")
        centers = (t["edges"][:-1] + t["edges"][1:]) / 2
        axh.step(centers, t["count"] / max(t["count"].sum(), 1), where="mid", label=name)
    ax.set_ylabel("observed fraction relevant")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    axh.set_xlabel("predicted p̂ (bin mean)")
    axh.set_ylabel("share of pairs")
    axh.set_yscale("log")
    fig.tight_layout()
    return save_png(fig, path)
