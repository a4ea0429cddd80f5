"""The LEVER loss: every form equals λ·BCE(y) + (1−λ)·BCE(p̂) in value and gradient."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lever.loss import (
    LeverBCELoss,
    LeverFusedBCE,
    LeverShortlistBCELoss,
    SparseTargets,
    soft_targets,
)
from lever.train.params import LeverParams

B, L = 7, 53


def _batch(seed: int = 0):
    """Binary ground truth and teacher scores that overlap it only partly, as CSR."""
    rng = np.random.default_rng(seed)
    y = (rng.random((B, L)) < 0.08).astype(np.float32)
    y[:, 0] = 1.0  # every row has a positive
    p = np.where(rng.random((B, L)) < 0.15, rng.random((B, L)), 0.0).astype(np.float32)
    p[0, 0] = 0.0  # a positive the teacher did not score
    return sp.csr_matrix(y), sp.csr_matrix(p), torch.from_numpy(y), torch.from_numpy(p)


def _two_term(z: torch.Tensor, y: torch.Tensor, p: torch.Tensor, lam: float, reduction: str) -> torch.Tensor:
    return lam * F.binary_cross_entropy_with_logits(z, y, reduction=reduction) + (
        1 - lam
    ) * F.binary_cross_entropy_with_logits(z, p, reduction=reduction)


def _logits(seed: int = 1) -> torch.Tensor:
    return (3 * torch.randn(B, L, generator=torch.Generator().manual_seed(seed))).requires_grad_()


@pytest.mark.parametrize("lam", [0.5, 0.3, 1.0, 0.0])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_dense_form_equals_two_term_bce(lam, reduction):
    y_csr, p_csr, y, p = _batch()
    t = soft_targets(np.arange(100, 100 + B), y_csr, p_csr, lam=lam, mode="mix")
    z = _logits()
    ref = _two_term(z, y, p, lam, reduction)
    (g_ref,) = torch.autograd.grad(ref, z)
    loss = LeverBCELoss(reduction)(z, t)
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_shortlist_form_equals_two_term_bce_on_the_shortlist(reduction):
    y_csr, p_csr, y, p = _batch()
    t = soft_targets(np.arange(B), y_csr, p_csr, lam=0.5)
    z_full = _logits().detach()
    gen = torch.Generator().manual_seed(3)
    K = 11
    ids = torch.stack([torch.randperm(L, generator=gen)[:K] for _ in range(B)])
    ids[0, :3] = torch.tensor([0, 1, 2])  # keep row 0's unscored positive in its shortlist
    z = z_full.gather(1, ids).requires_grad_()
    ref = _two_term(z, y.gather(1, ids), p.gather(1, ids), 0.5, reduction)
    (g_ref,) = torch.autograd.grad(ref, z)
    loss = LeverShortlistBCELoss(reduction)(z, ids, t)
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)


def test_shortlist_of_every_label_equals_dense_form_and_padding_is_ignored():
    y_csr, p_csr, _, _ = _batch()
    t = soft_targets(np.arange(B), y_csr, p_csr)
    z = _logits().detach()
    gen = torch.Generator().manual_seed(5)
    ids = torch.stack([torch.randperm(L, generator=gen) for _ in range(B)])
    dense = LeverBCELoss("sum")(z, t)
    short = LeverShortlistBCELoss("sum")(z.gather(1, ids), ids, t)
    torch.testing.assert_close(short, dense, rtol=1e-5, atol=1e-4)
    # padding (-1 and L) adds nothing and does not count in the mean
    pad_ids = torch.cat([ids, torch.full((B, 2), -1), torch.full((B, 1), L)], 1)
    pad_z = torch.cat([z.gather(1, ids), 100 * torch.ones(B, 3)], 1)
    torch.testing.assert_close(LeverShortlistBCELoss("sum")(pad_z, pad_ids, t), dense, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        LeverShortlistBCELoss("mean")(pad_z, pad_ids, t), dense / (B * L), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_fused_form_gives_the_autograd_gradient_and_loss_in_place(reduction):
    y_csr, p_csr, y, p = _batch()
    t = soft_targets(np.arange(B), y_csr, p_csr, lam=0.5)
    z = _logits()
    ref = _two_term(z, y, p, 0.5, reduction)
    (g_ref,) = torch.autograd.grad(ref, z)
    probs = torch.sigmoid(z.detach())
    buf = probs.data_ptr()
    loss = LeverFusedBCE(reduction)(probs, t)
    assert probs.data_ptr() == buf  # rewritten in place, no new [B, L] tensor handed back
    torch.testing.assert_close(probs, g_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-4, atol=1e-5)


def test_fused_form_in_half_precision():
    y_csr, p_csr, y, p = _batch()
    t = soft_targets(np.arange(B), y_csr, p_csr)
    z = _logits().detach() / 3  # |z| small enough that fp16 sigmoid does not saturate
    probs = torch.sigmoid(z).half()
    LeverFusedBCE("sum").grad_(probs, t)
    torch.testing.assert_close(probs.float(), torch.sigmoid(z) - (0.5 * y + 0.5 * p), atol=2e-3, rtol=0)


def test_augment_mode_is_bce_on_positives_at_one_and_teacher_entries_at_their_score():
    y_csr, p_csr, y, p = _batch()
    t = soft_targets(np.arange(B), y_csr, p_csr, lam=0.5, mode="augment")
    dense_t = torch.maximum(y, p)
    torch.testing.assert_close(t.to_dense(), dense_t)
    z = _logits()
    ref = F.binary_cross_entropy_with_logits(z, dense_t, reduction="sum")
    torch.testing.assert_close(LeverBCELoss("sum")(z, t), ref, rtol=1e-5, atol=1e-4)


def test_soft_targets_values_support_and_positive_marks():
    y = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 1, 0, 0]], dtype=np.float32))
    p = sp.csr_matrix(np.array([[0.8, 0.3, 0, 0], [0, 0.9, 0.2, 0]], dtype=np.float32))
    t = soft_targets([10, 11], y, p, lam=0.5, mode="mix")
    expect = torch.tensor([[0.9, 0.15, 0, 0.5], [0, 0.95, 0.1, 0]])
    torch.testing.assert_close(t.to_dense(), expect)
    assert t.nnz == 5 and t.coalesced  # union of positives and teacher entries, nothing else
    pos = {(int(r), int(c)) for r, c, m in zip(t.rows, t.cols, t.positive) if m}
    assert pos == {(0, 0), (0, 3), (1, 1)}
    # no teacher: plain BCE targets in either mode
    for mode in ("mix", "augment"):
        torch.testing.assert_close(soft_targets([10, 11], y, None, 0.5, mode).to_dense(), torch.from_numpy(y.toarray()))


def test_soft_targets_reject_bad_input_clearly():
    y = sp.csr_matrix(np.eye(2, 4, dtype=np.float32))
    bad = sp.csr_matrix(np.array([[0, 0.5, 0, 0], [0, 0, 1.5, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"dataset row 42, label 2 is 1.5"):
        soft_targets([41, 42], y, bad)
    with pytest.raises(ValueError, match="shape"):
        soft_targets([0, 1], y, sp.csr_matrix((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="3 ids"):
        soft_targets([0, 1, 2], y)
    with pytest.raises(ValueError, match="mode"):
        soft_targets([0, 1], y, mode="blend")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        soft_targets([0, 1], y, lam=1.5)
    with pytest.raises(TypeError, match="scipy sparse"):
        soft_targets([0, 1], np.eye(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        LeverParams().validate().loss_params("avg")


def _duplicated() -> tuple[SparseTargets, SparseTargets]:
    """The same targets with (0, 3) split into three entries and (2, 1) into two."""
    rows = torch.tensor([0, 2, 0, 1, 0, 2])
    cols = torch.tensor([3, 1, 3, 4, 3, 1])
    vals = torch.tensor([0.25, 0.5, 0.125, 0.75, 0.5, 0.25])
    dup = SparseTargets(rows, cols, vals, (3, 6))
    ref = SparseTargets(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 1]), torch.tensor([0.875, 0.75, 0.75]), (3, 6))
    return dup, ref


def test_duplicate_entries_accumulate_in_every_form():
    dup, ref = _duplicated()
    torch.testing.assert_close(dup.coalesce().to_dense(), ref.to_dense())
    z = torch.randn(3, 6, generator=torch.Generator().manual_seed(0)).requires_grad_()
    dense_t = ref.to_dense()
    expect = F.binary_cross_entropy_with_logits(z, dense_t, reduction="sum")
    (g_expect,) = torch.autograd.grad(expect, z)
    # dense
    loss = LeverBCELoss("sum")(z, dup)
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(loss, expect)
    torch.testing.assert_close(g, g_expect)
    # shortlist
    ids = torch.tensor([[3, 0], [4, 5], [1, 2]])
    torch.testing.assert_close(dup.lookup(ids), torch.tensor([[0.875, 0], [0.75, 0], [0.75, 0]]))
    # fused: index_put_(accumulate=True) applies all three parts of (0, 3) ...
    probs = torch.sigmoid(z.detach())
    torch.testing.assert_close(LeverFusedBCE("sum")(probs, dup), expect.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs, g_expect)
    # ... where plain advanced-index subtraction keeps only one of them (why accumulate is needed)
    naive = torch.sigmoid(z.detach())
    naive[dup.rows, dup.cols] -= dup.vals
    assert not torch.allclose(naive, g_expect)


def test_row_and_column_slices_rebase_indices():
    y_csr, p_csr, _, _ = _batch()
    t = soft_targets(np.arange(B), y_csr, p_csr)
    dense = t.to_dense()
    torch.testing.assert_close(t.row_slice(2, 5).to_dense(), dense[2:5])
    torch.testing.assert_close(t.col_slice(10, 30).to_dense(), dense[:, 10:30])
    assert t.col_slice(10, 30).positive.dtype == torch.bool


def test_targets_follow_logits_to_their_device_and_dtype():
    y_csr, p_csr, y, p = _batch()
    t = soft_targets(np.arange(B), y_csr, p_csr)
    z = _logits().detach().double()
    loss = LeverBCELoss("mean")(z, t)
    assert loss.dtype == torch.float32  # computed in float32 whatever the logits' precision
    torch.testing.assert_close(loss, _two_term(z.float(), y, p, 0.5, "mean"))
