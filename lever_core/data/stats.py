"""Dataset statistics in the paper's Table 3 terms, and a label-frequency plot.

"Pos-80%" is the smallest percentage of labels that holds 80% of the training positives
(ecosystem.md §3.2); tail share is the percentage of labels with at most 5 training points.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lever.data.dataset import XCDataset
from lever.utils.figures import pyplot, save_png


def label_counts(ds: XCDataset) -> np.ndarray:
    """Training points per label (ground truth is binary, so column sums are counts)."""
    return np.asarray(ds.trn_Y.sum(axis=0)).ravel().astype(np.int64)


def dataset_stats(ds: XCDataset, tail_max: int = 5) -> dict:
    counts = label_counts(ds)
    L = ds.num_labels
    sorted_counts = np.sort(counts)[::-1]
    total = int(sorted_counts.sum())
    pos80 = (
        int(np.searchsorted(np.cumsum(sorted_counts), 0.8 * total) + 1) / L * 100 if total else 0.0
    )
    tst_counts = np.asarray(ds.tst_Y.sum(axis=0)).ravel()
    return {
        "name": ds.name,
        "train_points": ds.num_train,
        "test_points": ds.num_test,
        "labels": L,
        "train_positives": total,
        "avg_labels_per_train_point": total / max(ds.num_train, 1),
        "avg_labels_per_test_point": float(ds.tst_Y.nnz) / max(ds.num_test, 1),
        "avg_train_points_per_label": total / max(L, 1),
        "median_train_points_per_label": float(np.median(counts)) if L else 0.0,
        "max_train_points_per_label": int(counts.max()) if L else 0,
        f"pct_labels_with_le{tail_max}_train_points": float((counts <= tail_max).mean() * 100),
        "pct_labels_without_train_points": float((counts == 0).mean() * 100),
        "pct_labels_in_test": float((tst_counts > 0).mean() * 100),
        "pos80_pct_labels": pos80,
        "empty_train_rows": int((np.diff(ds.trn_Y.indptr) == 0).sum()),
        "empty_test_rows": int((np.diff(ds.tst_Y.indptr) == 0).sum()),
        "test_filter_pairs": int(ds.tst_filter.nnz) if ds.tst_filter is not None else 0,
        "propensity_a": ds.meta.propensity_a,
        "propensity_b": ds.meta.propensity_b,
    }


def format_stats(stats: dict) -> str:
    width = max(len(k) for k in stats)
    lines = []
    for k, v in stats.items():
        shown = f"{v:,.2f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else v)
        lines.append(f"{k:<{width}}  {shown}")
    return "\n".join(lines)


def plot_label_frequencies(ds: XCDataset, out_png: str | os.PathLike) -> Path:
    """Two panels: histogram of training points per label (log bins) and rank-frequency."""
    plt = pyplot()


    counts = label_counts(ds)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    top = max(int(counts.max()), 1)
    bins = np.unique(np.concatenate([[0, 1], np.geomspace(1, top + 1, 40).astype(int) + 1]))
    ax1.hist(counts, bins=bins, color="#4878a8", edgecolor="white", linewidth=0.3)
    ax1.set_xscale("symlog", linthresh=1)
    ax1.set_yscale("log")
    ax1.axvline(5.5, color="#c44e52", linestyle="--", linewidth=1,
                label=f"≤5 points: {(counts <= 5).mean() * 100:.1f}% of labels")
    ax1.set_xlabel("training points per label")
    ax1.set_ylabel("number of labels")
    ax1.legend()
    ax1.set_title("Label frequency histogram")
    ranks = np.arange(1, counts.size + 1)
    ax2.loglog(ranks, np.maximum(np.sort(counts)[::-1], 0.8), color="#4878a8")
    ax2.set_xlabel("label rank")
    ax2.set_ylabel("training points")
    ax2.set_title("Rank-frequency")
    fig.suptitle(f"{ds.name}: {ds.num_train:,} train points, {ds.num_labels:,} labels")
    fig.tight_layout()
    return save_png(fig, out_png)
