"""Teacher losses against hand-computed values, and the co-positive masking."""

from __future__ import annotations

import math

import pytest
import torch

from lever.teacher.losses import (
    PairwiseLogisticLoss,
    SoftplusHingeLoss,
    TripletHingeLoss,
    build_loss,
    hardest_negatives,
)

# Rows are inputs, columns the sampled positives; (0, 1) is a co-positive of row 0.
SCORES = torch.tensor([[0.9, 0.5, 0.2], [0.3, 0.8, 0.6], [0.1, 0.7, 0.4]])
TARGET = torch.tensor([[True, True, False], [False, True, False], [False, False, True]])
# With k = 2, margin 0.3, s_neg − s_pos + 0.3 for the valid negatives of each row:
# row 0: only column 2 (column 1 is a true positive) -> 0.2 − 0.9 + 0.3 = −0.4
# row 1: columns 2, 0 -> 0.6 − 0.8 + 0.3 = 0.1, 0.3 − 0.8 + 0.3 = −0.2
# row 2: columns 1, 0 -> 0.7 − 0.4 + 0.3 = 0.6, 0.1 − 0.4 + 0.3 = 0.0
DIFFS = [-0.4, 0.1, -0.2, 0.6, 0.0]


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_hardest_negatives_mask_true_positives():
    neg, valid = hardest_negatives(SCORES, TARGET, k=2)
    assert valid.tolist() == [[True, False], [True, True], [True, True]]
    assert torch.allclose(neg[valid], torch.tensor([0.2, 0.6, 0.3, 0.7, 0.1]))


def test_pairwise_logistic_matches_eq9():
    expected = sum(_softplus(d) for d in DIFFS) / len(DIFFS)
    got = PairwiseLogisticLoss(margin=0.3, num_negatives=2)(SCORES, TARGET)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_triplet_hinge():
    expected = sum(max(0.0, d) for d in DIFFS) / len(DIFFS)  # (0.1 + 0.6) / 5
    got = TripletHingeLoss(margin=0.3, num_negatives=2)(SCORES, TARGET)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.14)


def test_softplus_hinge_has_log2_floor():
    expected = sum(_softplus(5 * max(0.0, d)) for d in DIFFS) / len(DIFFS)
    loss = SoftplusHingeLoss(margin=0.3, num_negatives=2)
    assert loss(SCORES, TARGET).item() == pytest.approx(expected, abs=1e-6)
    easy = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # margin met everywhere
    eye = torch.eye(2, dtype=torch.bool)
    assert loss(easy, eye).item() == pytest.approx(math.log(2))
    assert TripletHingeLoss(0.3, 2)(easy, eye).item() == 0.0
    assert PairwiseLogisticLoss(0.3, 2)(easy, eye).item() == pytest.approx(
        _softplus(-1.7), abs=1e-6
    )


def test_co_positive_never_used_as_negative():
    """Row 0's co-positive (0.95) would be its hardest "negative" if it were not masked; the
    released code's min(s, 1 − T) would still rank it (capped at 0) above true negatives < 0."""
    scores = torch.tensor([[0.5, 0.95, -0.3], [0.2, 0.9, 0.0], [0.0, 0.1, 0.9]], requires_grad=True)
    target = torch.eye(3, dtype=torch.bool)
    target[0, 1] = True
    logistic = PairwiseLogisticLoss(margin=0.3, num_negatives=1)(scores, target)
    # row 0: −0.3 − 0.5 + 0.3 = −0.5; row 1: 0.2 − 0.9 + 0.3 = −0.4; row 2: 0.1 − 0.9 + 0.3 = −0.5
    expected = (_softplus(-0.5) + _softplus(-0.4) + _softplus(-0.5)) / 3
    assert logistic.item() == pytest.approx(expected, abs=1e-6)
    logistic.backward()
    assert scores.grad[0, 1].item() == 0.0  # no push on the true pair
    assert TripletHingeLoss(margin=0.3, num_negatives=1)(scores, target).item() == 0.0


def test_gradient_direction_and_build():
    scores = SCORES.clone().requires_grad_(True)
    build_loss("pairwise-logistic", 0.3, 2)(scores, TARGET).backward()
    assert (scores.grad.diagonal() < 0).all()  # positives pulled up
    assert scores.grad[0, 1].item() == 0.0  # co-positive untouched
    assert scores.grad[1, 2].item() > 0  # hardest negative pushed down
    with pytest.raises(ValueError, match="expected one of"):
        build_loss("hinge", 0.3, 2)


def test_all_positive_batch_gives_zero_loss_with_grad():
    scores = torch.rand(3, 3, requires_grad=True)
    loss = PairwiseLogisticLoss()(scores, torch.ones(3, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and scores.grad is not None
