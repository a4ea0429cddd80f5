"""lever's default hook implementations; registered ``trylast`` so any adapter can override them."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from lever.hooks.specs import hookimpl
from lever.loss import (
    Level,
    LeverLossParams,
    SparseTargets,
    as_csr_rows,
    batch_targets,
    levels_bce,
    project_targets,
)


@hookimpl(trylast=True)
def lever_teacher_rows(row_ids: np.ndarray, soft_labels: Any) -> sp.csr_matrix | None:
    return as_csr_rows(soft_labels, row_ids)


@hookimpl(trylast=True)
def lever_targets(
    row_ids: np.ndarray,
    y_rows: sp.csr_matrix,
    soft_rows: sp.csr_matrix | None,
    params: LeverLossParams,
    label_lam: np.ndarray | None,
) -> SparseTargets:
    return batch_targets(row_ids, y_rows, soft_rows, params, label_lam)


@hookimpl(trylast=True)
def lever_shortlist(
    cand_ids: torch.Tensor, cand_scores: torch.Tensor, targets: SparseTargets, level: int | None
) -> torch.Tensor:
    return forced_shortlist_keys(cand_ids, cand_scores, targets)


@hookimpl(trylast=True)
def lever_level_targets(
    targets: SparseTargets, label_to_cluster: torch.Tensor, num_clusters: int
) -> SparseTargets:
    return project_targets(targets, label_to_cluster, num_clusters)


@hookimpl(trylast=True)
def lever_loss(
    levels: list[Level], targets: list[SparseTargets], params: LeverLossParams
) -> torch.Tensor:
    return levels_bce(levels, targets, params.reduction)


@hookimpl(trylast=True)
def lever_label_index(y: sp.csr_matrix, soft: sp.csr_matrix | None, weight: float) -> sp.csr_matrix:
    y = sp.csr_matrix(y, dtype=np.float32)
    if soft is None or weight == 0:
        return y
    if soft.shape != y.shape:
        raise ValueError(f"lever_label_index: soft labels of shape {soft.shape} do not match y of shape {y.shape}")
    return (y + float(weight) * sp.csr_matrix(soft, dtype=np.float32)).tocsr()


def forced_shortlist_keys(
    cand_ids: torch.Tensor, cand_scores: torch.Tensor, targets: SparseTargets
) -> torch.Tensor:
    """Selection keys in three tiers: ground truth (by score), then teacher-only entries (by target
    value, then score), then every other candidate (by score). Tiers never mix: each is offset by
    more than the spread of the scores."""
    scores = cand_scores.detach().float()
    spread = float(scores.max() - scores.min()) + 1.0 if scores.numel() else 1.0
    base = scores - scores.min() if scores.numel() else scores
    t = targets.to(cand_ids.device).coalesce()
    value = t.lookup(cand_ids)
    if t.positive is not None:
        pos = SparseTargets(t.rows, t.cols, t.positive.float(), t.shape, True).lookup(cand_ids) > 0
    else:
        pos = torch.zeros_like(value, dtype=torch.bool)
    teacher = (value > 0) & ~pos
    key = base + teacher * spread * (1.0 + value) + pos * (3.0 * spread)
    return key
