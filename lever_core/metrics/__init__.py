"""XC evaluation metrics: inverse propensities, streaming P/nDCG/PSP/PSnDCG/R/C/macro metrics,
the shared top-k helper, paper-style tables and the per-decile report.

Quick use::

    from lever.metrics import evaluate, inverse_propensity, format_table
    q = inverse_propensity(ds.trn_Y, ds.meta.propensity_a, ds.meta.propensity_b)
    res = evaluate(ds.tst_Y, scores, q, k=5, filter=ds.tst_filter)   # percent
    print(format_table(res))
"""

from __future__ import annotations

from lever.metrics.propensity import DEFAULT_A, DEFAULT_B, inverse_propensity, label_counts
from lever.metrics.ranking import topk
from lever.metrics.table import format_table
from lever.metrics.xc_metrics import (
    ALL_METRICS,
    CoverageAtK,
    LabelConfusionAtK,
    MacroF1AtK,
    MacroPrecisionAtK,
    MacroRecallAtK,
    NDCGAtK,
    PrecisionAtK,
    PSNDCGAtK,
    PSPrecisionAtK,
    RankedBatch,
    RecallAtK,
    XCMetrics,
    coverage_at_k,
    evaluate,
    macro_f1_at_k,
    macro_precision_at_k,
    macro_recall_at_k,
    ndcg_at_k,
    precision_at_k,
    psndcg_at_k,
    psprecision_at_k,
    recall_at_k,
)

__all__ = [
    "ALL_METRICS",
    "DEFAULT_A",
    "DEFAULT_B",
    "CoverageAtK",
    "LabelConfusionAtK",
    "MacroF1AtK",
    "MacroPrecisionAtK",
    "MacroRecallAtK",
    "NDCGAtK",
    "PSNDCGAtK",
    "PSPrecisionAtK",
    "PrecisionAtK",
    "RankedBatch",
    "RecallAtK",
    "XCMetrics",
    "coverage_at_k",
    "evaluate",
    "format_table",
    "inverse_propensity",
    "label_counts",
    "macro_f1_at_k",
    "macro_precision_at_k",
    "macro_recall_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "psndcg_at_k",
    "psprecision_at_k",
    "recall_at_k",
    "topk",
]
