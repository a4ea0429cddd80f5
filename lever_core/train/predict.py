"""Top-k prediction of a trained run on a dataset's test split (``lever predict``).

Rows are scored in batches and labels in blocks (``Backbone.predict_topk``), so memory stays at
``batch × label_block`` scores; the test filter is applied before the top-k, so a filtered pair is
never predicted. The result is a CSR of the backbone's scores (logits for one-vs-all heads, so the
ranking survives float32 storage), test points × labels, k per row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lever.train.backbone import Backbone, to_device


@torch.no_grad()
def predict_topk(
    backbone: Backbone,
    module: torch.nn.Module,
    num_rows: int,
    num_labels: int,
    k: int,
    device: torch.device,
    exclude: sp.csr_matrix | None = None,
    batch_size: int = 512,
    progress: bool = True,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, scores)`` ``[num_rows, k]`` of test rows ``0 .. num_rows-1``."""
    module.eval()
    k_eff = min(k, num_labels)
    indices = np.full((num_rows, k_eff), -1, dtype=np.int64)
    scores = np.full((num_rows, k_eff), -np.inf, dtype=np.float32)
    for lo in tqdm(range(0, num_rows, batch_size), desc=desc, disable=not progress, leave=False):
        rows = np.arange(lo, min(num_rows, lo + batch_size))
        inputs = to_device(backbone.test_inputs(rows), device)
        ex = None if exclude is None else exclude[rows]
        idx, sc = backbone.predict_topk(module, inputs, k_eff, num_labels, ex)
        indices[rows, : idx.shape[1]], scores[rows, : sc.shape[1]] = idx, sc
    return indices, scores


def topk_to_csr(indices: np.ndarray, scores: np.ndarray, num_labels: int) -> sp.csr_matrix:
    """Pack padded top-k arrays into a CSR (padding dropped; stored 0.0 scores kept)."""
    keep = indices >= 0
    counts = keep.sum(1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return sp.csr_matrix(
        (scores[keep].astype(np.float32), indices[keep].astype(np.int32), indptr),
        shape=(indices.shape[0], num_labels),
    )


def save_predictions(path: str | Path, csr: sp.csr_matrix) -> None:
    from lever.utils.atomic import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        sp.save_npz(tmp, csr)
