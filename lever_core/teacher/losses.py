"""Teacher losses over an in-batch cosine-score matrix, in the sentence-transformers style.

Every loss takes ``scores`` (B×B, row i = input item i against the positives of all items, so the
diagonal holds each row's positive) and ``target`` (B×B bool, True where column j is a true
positive of row i; the diagonal is always True) and returns the mean over the k hardest in-batch
negatives of every row.

Negatives are chosen with the true positives *masked out* (their score set to −inf before top-k).
The released LEVER code instead takes top-k of ``min(s, 1 − T)``, which caps co-positives at 0:
when a row has fewer than k true negatives scoring above 0, a co-positive (capped at 0) is still
picked as a "negative", so the loss pushes a true pair apart, and a row whose negatives are all
below 0 gets co-positives ranked as its hardest negatives. Masking has neither failure; rows with
fewer than k true negatives simply contribute fewer terms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def hardest_negatives(
    scores: torch.Tensor, target: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k negative scores per row with true positives excluded, and a validity mask
    (False where a row has fewer than k negatives)."""
    k = min(k, scores.shape[1] - 1)
    masked = scores.masked_fill(target, float("-inf"))
    neg, _ = masked.topk(k, dim=1)
    valid = torch.isfinite(neg)
    return neg.masked_fill(~valid, 0.0), valid


class _InBatchLoss(nn.Module):
    def __init__(self, margin: float = 0.3, num_negatives: int = 10):
        super().__init__()
        self.margin = float(margin)
        self.num_negatives = int(num_negatives)

    def term(self, diff: torch.Tensor) -> torch.Tensor:  # diff = s_neg − s_pos + margin
        raise NotImplementedError

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        scores = scores.float()  # the loss is computed in fp32 even under autocast
        pos = scores.diagonal().unsqueeze(1)
        neg, valid = hardest_negatives(scores, target.bool(), self.num_negatives)
        terms = self.term(neg - pos + self.margin)
        n = valid.sum()
        if n == 0:  # every column is a positive of every row: nothing to contrast
            return scores.sum() * 0.0
        return (terms * valid).sum() / n

    def extra_repr(self) -> str:
        return f"margin={self.margin}, num_negatives={self.num_negatives}"


class PairwiseLogisticLoss(_InBatchLoss):
    """The paper's Eq. 9: ℓ = log(1 + exp(s_neg − s_pos + Δ)), averaged over the k hardest in-batch
    negatives of every row. No hinge inside: the gradient never vanishes, so the scores keep
    being pushed apart in a logistic (calibration-friendly) way — the reason LEVER argues for it
    (paper §3.3, Theorem 3). Our default."""

    def term(self, diff: torch.Tensor) -> torch.Tensor:
        return F.softplus(diff)


class TripletHingeLoss(_InBatchLoss):
    """Triplet margin loss with online hard negatives (the released README setting, ``ohnm``):
    ℓ = max(0, s_neg − s_pos + m) over the k hardest in-batch negatives."""

    def term(self, diff: torch.Tensor) -> torch.Tensor:
        return F.relu(diff)


class SoftplusHingeLoss(_InBatchLoss):
    """The released code's ``logistic-ohnm`` variant (not the paper's Eq. 9):
    ℓ = log(1 + exp(5 · max(0, s_neg − s_pos + m))). Because of the hinge inside, every term is at
    least log 2 and has zero gradient once the margin is met. Kept for reproducing that code."""

    scale = 5.0
    floor = math.log(2.0)

    def term(self, diff: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.scale * F.relu(diff))


class InBatchSoftmaxLoss(nn.Module):
    """InfoNCE over the batch: cross-entropy of each row's positive against *all* its in-batch
    negatives at temperature τ, co-positives masked out. Not in the paper; an option for the
    frozen-feature teacher, where every negative of a large batch costs almost nothing."""

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
        logits = scores.masked_fill(target.bool() & ~eye, float("-inf")) / self.temperature
        labels = torch.arange(scores.shape[0], device=scores.device)
        return F.cross_entropy(logits, labels)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


LOSS_CLASSES = {
    "pairwise-logistic": PairwiseLogisticLoss,
    "triplet": TripletHingeLoss,
    "softplus-hinge": SoftplusHingeLoss,
    "softmax": InBatchSoftmaxLoss,
}


def build_loss(
    name: str, margin: float, num_negatives: int, temperature: float = 0.05
) -> nn.Module:
    if name not in LOSS_CLASSES:
        raise ValueError(f"teacher loss {name!r}: expected one of {sorted(LOSS_CLASSES)}")
    if name == "softmax":
        return InBatchSoftmaxLoss(temperature=temperature)
    return LOSS_CLASSES[name](margin=margin, num_negatives=num_negatives)
