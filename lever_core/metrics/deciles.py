"""Per-label-frequency decile report: how much of PSP@k and P@k comes from head vs tail labels,
and the recall@k within each frequency bin.

Binning follows the decile plots of the XC papers (NGAME, Renée, LEVER): labels are sorted by
training frequency (most frequent first) and cut into bins holding roughly equal numbers of
*training positives*, so bin 1 has a few head labels and the last bin a great many tail labels.
A label goes to the bin where its cumulative mass starts; a label holding more than one bin's
worth of mass can leave the next bin empty. Labels never seen in training fall in the last bin.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lever.metrics.xc_metrics import XCMetrics
from lever.utils.figures import pyplot, save_png


def frequency_bins(train_counts: np.ndarray, num_bins: int = 10) -> np.ndarray:
    """Bin id (0 = head) of every label, equal training-positive mass per bin."""
    counts = np.asarray(train_counts, dtype=np.float64)
    total = counts.sum()
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if total <= 0:
        raise ValueError("train label counts are all zero; cannot bin labels by frequency")
    order = np.argsort(-counts, kind="stable")
    start_mass = np.cumsum(counts[order]) - counts[order]
    bins = np.empty(counts.size, dtype=np.int64)
    bins[order] = np.minimum(np.floor(num_bins * start_mass / total), num_bins - 1).astype(np.int64)
    return bins


def decile_report(
    metrics: XCMetrics, train_counts: np.ndarray, k: int | None = None, num_bins: int = 10
) -> list[dict[str, Any]]:
    """One dict per bin (head first) from an ``XCMetrics`` that has seen the whole test set.

    Fields: ``bin`` (1-based), ``num_labels``, ``train_positives``, ``test_positives``,
    ``max_train_freq``/``min_train_freq``, ``pred_share`` (% of top-k slots spent on the bin),
    ``P_contrib`` and ``PSP_contrib`` (the bin's share of P@k / PSP@k, in points; they sum to
    P@k / PSP@k) and ``R`` (recall@k of the bin's test positives, %).
    """
    if metrics.confusion is None:
        raise ValueError("decile_report needs an XCMetrics built with the macro metrics (the default)")
    k = metrics.k if k is None else int(k)
    if not 1 <= k <= metrics.k:
        raise ValueError(f"k must be in 1..{metrics.k}, got {k}")
    counts = np.asarray(train_counts, dtype=np.float64).ravel()
    if counts.size != metrics.num_labels:
        raise ValueError(f"train counts cover {counts.size} labels but the metrics have {metrics.num_labels}")
    bins = frequency_bins(counts, num_bins)
    conf = metrics.confusion
    n = max(conf.count, 1)
    tp = conf.true_positives(k).astype(np.float64)
    pred = conf.predicted(k).astype(np.float64)
    pos = conf.positives.astype(np.float64)
    psp = metrics.metrics.get("PSP")
    psp_den = psp.best_sum[k - 1] / n if psp is not None else 0.0
    total_pred = max(pred.sum(), 1.0)
    report = []
    for b in range(num_bins):
        m = bins == b
        tp_b, pos_b = tp[m].sum(), pos[m].sum()
        row = {
            "bin": b + 1,
            "num_labels": int(m.sum()),
            "train_positives": int(counts[m].sum()),
            "test_positives": int(pos_b),
            "max_train_freq": int(counts[m].max()) if m.any() else 0,
            "min_train_freq": int(counts[m].min()) if m.any() else 0,
            "pred_share": float(100.0 * pred[m].sum() / total_pred),
            "P_contrib": float(100.0 * tp_b / (k * n)),
            "R": float(100.0 * tp_b / pos_b) if pos_b else 0.0,
        }
        if psp is not None:
            gain = float((psp.inv_prop[m] * tp[m]).sum()) / (k * n)
            row["PSP_contrib"] = float(100.0 * gain / psp_den) if psp_den > 0 else 0.0
        report.append(row)
    return report


def format_deciles(report: list[dict[str, Any]], k: int) -> str:
    cols = [
        ("bin", "bin", "{}"),
        ("num_labels", "labels", "{}"),
        ("min_train_freq", "min_freq", "{}"),
        ("max_train_freq", "max_freq", "{}"),
        ("train_positives", "trn_pos", "{}"),
        ("test_positives", "tst_pos", "{}"),
        ("pred_share", f"pred%@{k}", "{:.2f}"),
        ("P_contrib", f"P@{k}", "{:.2f}"),
        ("PSP_contrib", f"PSP@{k}", "{:.2f}"),
        ("R", f"R@{k}", "{:.2f}"),
    ]
    cols = [c for c in cols if report and c[0] in report[0]]
    rows = [[c[1] for c in cols]] + [[c[2].format(r[c[0]]) for c in cols] for r in report]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows)


def plot_deciles(
    report: list[dict[str, Any]] | dict[str, list[dict[str, Any]]],
    k: int,
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Save a PNG: PSP@k contribution and recall@k per frequency bin, head to tail.

    ``report`` is one run's :func:`decile_report`, or ``{run name: report}`` of several runs on the
    same dataset (e.g. a backbone without and with LEVER): their bars then stand side by side in
    each bin, so the lift per bin shows at a glance."""
    plt = pyplot()

    reports = report if isinstance(report, dict) else {"": report}
    first = next(iter(reports.values()))
    x = np.array([r["bin"] for r in first])
    width = 0.8 / len(reports)
    fig, axes = plt.subplots(1, 2, figsize=(11 if len(reports) == 1 else 13, 4))
    panels = [("PSP_contrib", f"PSP@{k} contribution (points)"), ("R", f"Recall@{k} within bin (%)")]
    if not all("PSP_contrib" in r[0] for r in reports.values()):
        panels[0] = ("P_contrib", f"P@{k} contribution (points)")
    for ax, (key, label) in zip(axes, panels):
        for i, (name, rep) in enumerate(reports.items()):
            offset = (i - (len(reports) - 1) / 2) * width
            color = None if len(reports) > 1 else ("tab:blue" if key != "R" else "tab:orange")
            bars = ax.bar(x + offset, [r[key] for r in rep], width, label=name or None, color=color)
            ax.bar_label(bars, fmt="%.1f", fontsize=6 if len(reports) > 1 else 7)
        ax.set_xticks(x, [f"{b}\n({r['num_labels']})" for b, r in zip(x, first)], fontsize=7)
        ax.set_xlabel("label-frequency bin, head → tail (labels per bin)")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        if len(reports) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title or f"Per-decile analysis at k={k} (bins of equal training-positive mass)")
    fig.tight_layout()
    save_png(fig, path)
