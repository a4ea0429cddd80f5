"""λ per label, ``λ_l = n_l / (n_l + κ)``: the formula, the targets entry by entry, every loss
form (dense, shortlist, fused, Renée's hand-written step) against an independent two-term
autograd reference, the batch builder's once-per-run targets, plugins, ``lever.wrap`` and
``lever train --kappa``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import lever
from lever.hooks import get_plugin_manager, hookimpl
from lever.loss import (
    LeverBCELoss,
    LeverFusedBCE,
    LeverShortlistBCELoss,
    SparseTargets,
    label_counts,
    label_lambda,
    soft_targets,
)
from lever.train.params import LeverParams
from lever.train.rows import BatchBuilder, TrainRows
from lever.utils.params import ParamsError

B, L = 9, 31
KAPPAS = [0.0, 1.0, 5.0, 1e9]


def _reference_lambda(counts: np.ndarray, kappa: float) -> np.ndarray:
    """n / (n + κ) in float64 with 0/0 := 1, written out independently of lever."""
    n = counts.astype(np.float64)
    out = np.ones_like(n)
    nonzero = (n + kappa) > 0
    out[nonzero] = n[nonzero] / (n[nonzero] + kappa)
    return out


def _problem(seed: int = 0):
    """Ground truth, teacher scores (overlapping it partly) and skewed label counts (some 0)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((B, L)) < 0.12).astype(np.float32)
    y[:, 0] = 1.0
    p = np.where(rng.random((B, L)) < 0.2, rng.random((B, L)), 0.0).astype(np.float32)
    p[0, 0] = 0.0  # a positive the teacher did not score
    counts = rng.integers(0, 40, size=L)
    counts[[3, 7]] = 0  # unseen labels
    counts[1] = 5000  # a head label
    return y, p, counts


def _two_term_per_label(z, y, p, lam_l):
    """Σ_bl λ_l·BCE(y, z) + (1−λ_l)·BCE(p̂, z), per entry, with torch autograd."""
    lam = torch.as_tensor(lam_l, dtype=torch.float32).reshape(1, -1)
    hard = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    soft = F.binary_cross_entropy_with_logits(z, p, reduction="none")
    return (lam * hard + (1 - lam) * soft).sum()


def _logits(shape=(B, L), seed=1):
    return (3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))).requires_grad_()


# -- the formula -------------------------------------------------------------------------------
@pytest.mark.parametrize("kappa", KAPPAS)
def test_label_lambda_is_n_over_n_plus_kappa(kappa):
    counts = np.array([0, 1, 2, 5, 100, 10**6])
    lam = label_lambda(counts, kappa)
    assert lam.dtype == np.float32 and lam.shape == counts.shape
    np.testing.assert_allclose(lam, _reference_lambda(counts, kappa), rtol=1e-6, atol=0)


def test_label_lambda_limits_and_errors():
    counts = np.array([0, 3, 50])
    np.testing.assert_array_equal(label_lambda(counts, 0), [1, 1, 1])  # plain BCE, 0/0 := 1
    np.testing.assert_array_equal(label_lambda(counts, float("inf")), [0, 0, 0])  # teacher alone
    assert label_lambda(counts, 5.0)[1] == pytest.approx(3 / 8)
    for bad in (-1.0, float("nan"), "4", True):
        with pytest.raises(ValueError, match="kappa"):
            label_lambda(counts, bad)
    with pytest.raises(ValueError, match="counts"):
        label_lambda(np.array([-1, 2]), 1.0)


def test_label_counts_count_positive_documents():
    y = sp.csr_matrix(np.array([[1, 0, 2], [1, 0, 0], [0, 0, 1]], dtype=np.float32))
    np.testing.assert_array_equal(label_counts(y), [2, 0, 2])
    with pytest.raises(TypeError, match="scipy sparse"):
        label_counts(np.eye(3))


def _lp(lam, mode, kappa=None):
    """The loss settings of a validated LeverParams, as lever train hands them to the hooks."""
    return LeverParams(lam=lam, mode=mode, kappa=kappa).validate().loss_params("sum")


def test_params_validate_kappa():
    assert LeverParams(kappa=2.0).validate().loss_params("sum").kappa == 2.0
    with pytest.raises(ParamsError, match=r"TrainParams\.lever\.kappa=-1\.0: expected None or a number >= 0"):
        LeverParams(kappa=-1.0).validate()
    with pytest.raises(ParamsError, match="mode 'mix'"):
        LeverParams(kappa=1.0, mode="augment").validate()


# -- the targets -------------------------------------------------------------------------------
@pytest.mark.parametrize("kappa", KAPPAS)
def test_targets_are_lambda_l_y_plus_one_minus_lambda_l_p_entry_by_entry(kappa):
    y, p, counts = _problem()
    lam_l = _reference_lambda(counts, kappa)
    expect = lam_l[None, :] * y + (1 - lam_l[None, :]) * p
    t = soft_targets(np.arange(B), sp.csr_matrix(y), sp.csr_matrix(p), lam=0.123, mode="mix",
                     label_lam=label_lambda(counts, kappa))
    np.testing.assert_allclose(t.to_dense().numpy(), expect, rtol=1e-6, atol=1e-7)
    # support: the union of positives and teacher entries, minus exact zeros; positives marked
    dense_pos = np.zeros((B, L), dtype=bool)
    dense_pos[t.rows.numpy(), t.cols.numpy()] = t.positive.numpy()
    np.testing.assert_array_equal(dense_pos, (y > 0) & (expect != 0))
    assert t.nnz == int(np.count_nonzero(expect)) and t.coalesced


def test_per_label_lambda_errors_name_the_problem():
    y, p, counts = _problem()
    lam_l = label_lambda(counts, 2.0)
    with pytest.raises(ValueError, match="mode 'mix' only"):
        soft_targets(np.arange(B), sp.csr_matrix(y), sp.csr_matrix(p), mode="augment", label_lam=lam_l)
    with pytest.raises(ValueError, match=rf"expected \({L},\)"):
        soft_targets(np.arange(B), sp.csr_matrix(y), sp.csr_matrix(p), label_lam=lam_l[:-1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        soft_targets(np.arange(B), sp.csr_matrix(y), sp.csr_matrix(p), label_lam=lam_l + 2)


# -- every loss form -----------------------------------------------------------------------------
def _targets(kappa):
    y, p, counts = _problem()
    t = soft_targets(np.arange(B), sp.csr_matrix(y), sp.csr_matrix(p),
                     label_lam=label_lambda(counts, kappa))
    return t, torch.from_numpy(y), torch.from_numpy(p), _reference_lambda(counts, kappa)


@pytest.mark.parametrize("kappa", KAPPAS)
def test_dense_form_is_the_per_label_two_term_loss(kappa):
    t, y, p, lam_l = _targets(kappa)
    z = _logits()
    ref = _two_term_per_label(z, y, p, lam_l)
    (g_ref,) = torch.autograd.grad(ref, z)
    loss = LeverBCELoss("sum")(z, t)
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kappa", KAPPAS)
def test_shortlist_form_is_the_per_label_two_term_loss_on_the_shortlist(kappa):
    t, y, p, lam_l = _targets(kappa)
    gen = torch.Generator().manual_seed(4)
    ids = torch.stack([torch.randperm(L, generator=gen)[:12] for _ in range(B)])
    z = _logits().detach().gather(1, ids).requires_grad_()
    lam_ids = torch.from_numpy(lam_l).float()[ids]
    hard = F.binary_cross_entropy_with_logits(z, y.gather(1, ids), reduction="none")
    soft = F.binary_cross_entropy_with_logits(z, p.gather(1, ids), reduction="none")
    ref = (lam_ids * hard + (1 - lam_ids) * soft).sum()
    (g_ref,) = torch.autograd.grad(ref, z)
    loss = LeverShortlistBCELoss("sum")(z, ids, t)
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kappa", KAPPAS)
def test_fused_form_is_the_per_label_two_term_loss(kappa):
    t, y, p, lam_l = _targets(kappa)
    z = _logits()
    ref = _two_term_per_label(z, y, p, lam_l)
    (g_ref,) = torch.autograd.grad(ref, z)
    probs = torch.sigmoid(z.detach())
    loss = LeverFusedBCE("sum")(probs, t)
    torch.testing.assert_close(probs, g_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-4, atol=1e-3)


def test_renee_step_is_the_per_label_two_term_loss(tmp_path):
    """Renée's real forward_backward (fused classifier, hand-written backward, emb.backward) with
    per-label λ from the batch builder gives autograd's gradient of the per-label two-term loss."""
    from lever.data import XCDataset, synthetic_dataset, write_dataset
    from lever.train.backbone import AmpContext, BuildContext
    from lever.train.distributed import DistEnv
    from lever_adapters.renee.train import ReneeBackbone

    write_dataset(tmp_path / "d", **synthetic_dataset(num_train=60, num_test=20, num_labels=16))
    ds = XCDataset.load(tmp_path / "d")
    aug = ds.with_label_rows()
    soft = sp.random(aug.Y.shape[0], 16, density=0.2, random_state=0, format="csr", dtype=np.float32)
    rows = TrainRows(Y=aug.Y.tocsr(), num_docs=aug.num_docs, soft=soft)
    bb = ReneeBackbone({
        "encoder": {"kind": "tfidf", "bag_dim": 8, "dropout": 0.0, "tfidf_min_df": 1, "bottleneck": 5},
        "clf_micro_batch": 3,
    })
    module = bb.build(BuildContext(ds, rows, None, torch.device("cpu"), DistEnv(), tmp_path))
    kappa = 3.0
    ids = np.array([0, 5, 61, 70, 3, 2, 9])
    batch = BatchBuilder(rows, bb.batch_inputs, _lp(0.5, "mix", kappa))(ids, len(ids))
    bb.forward_backward(module, batch, AmpContext(torch.device("cpu"), enabled=False))
    got = {n: q.grad.clone() for n, q in module.named_parameters()}
    module.zero_grad(set_to_none=True)

    doc_counts = np.asarray((ds.trn_Y.tocsr() > 0).sum(0)).ravel()  # documents only
    lam_l = _reference_lambda(doc_counts, kappa)
    assert len(set(lam_l.round(6))) > 2  # λ really varies over labels
    y = torch.from_numpy(rows.Y[ids].toarray().astype(np.float32))
    p = torch.from_numpy(soft[ids].toarray())
    _two_term_per_label(module(batch.inputs), y, p, lam_l).backward()
    for n, q in module.named_parameters():
        torch.testing.assert_close(got[n], q.grad, rtol=1e-4, atol=1e-5, msg=n)


# -- the batch builder ----------------------------------------------------------------------------
def _rows(with_soft=True, seed=0):
    rng = np.random.default_rng(seed)
    n_docs, labels = 50, 13
    docs = (rng.random((n_docs, labels)) < np.linspace(0.02, 0.5, labels)).astype(np.float32)
    Y = sp.csr_matrix(np.vstack([docs, np.eye(labels, dtype=np.float32)]))
    soft = None
    if with_soft:
        soft = sp.random(Y.shape[0], labels, density=0.25, random_state=seed, format="csr", dtype=np.float32)
    return TrainRows(Y=Y, num_docs=n_docs, soft=soft)


class _Passthrough:
    """A plugin implementing both target hooks without answering: forces the per-batch hook path."""

    @hookimpl
    def lever_teacher_rows(self, row_ids, soft_labels):
        return None

    @hookimpl
    def lever_targets(self, row_ids, y_rows, soft_rows, params, label_lam):
        return None


def test_builder_counts_documents_only():
    rows = _rows()
    lam_l = BatchBuilder(rows, lambda ids: None, _lp(0.5, "mix", 2.0)).label_lam
    docs_only = _reference_lambda(np.asarray(rows.Y[: rows.num_docs].sum(0)).ravel(), 2.0)
    with_label_rows = _reference_lambda(np.asarray(rows.Y.sum(0)).ravel(), 2.0)
    np.testing.assert_allclose(lam_l, docs_only, rtol=1e-6)
    assert not np.allclose(lam_l, with_label_rows)
    assert BatchBuilder(rows, lambda ids: None, _lp(0.5, "mix")).label_lam is None


@pytest.mark.parametrize(
    "kappa,mode,with_soft", [(None, "mix", True), (None, "augment", True), (None, "mix", False), (4.0, "mix", True)]
)
def test_once_per_run_targets_equal_the_per_batch_hooks_bit_for_bit(kappa, mode, with_soft):
    rows = _rows(with_soft)
    fast = BatchBuilder(rows, lambda ids: None, _lp(0.3, mode, kappa), get_plugin_manager(False))
    pm = get_plugin_manager(False)
    pm.register(_Passthrough(), name="passthrough")
    slow = BatchBuilder(rows, lambda ids: None, _lp(0.3, mode, kappa), pm)
    assert fast.table is not None and slow.table is None
    for ids in (np.array([3, 60, 0, 51, 17, 17]), np.arange(rows.num_rows), np.array([], dtype=np.int64)):
        a, b = fast.targets(ids), slow.targets(ids)
        for field in ("rows", "cols", "vals", "positive"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        assert a.shape == b.shape and a.coalesced


def test_builder_per_label_targets_follow_the_formula():
    rows = _rows()
    kappa = 2.0
    ids = np.array([1, 4, 55, 9])
    t = BatchBuilder(rows, lambda ids: None, _lp(0.5, "mix", kappa)).targets(ids)
    lam_l = _reference_lambda(np.asarray(rows.Y[: rows.num_docs].sum(0)).ravel(), kappa)
    expect = lam_l * rows.Y[ids].toarray() + (1 - lam_l) * rows.soft[ids].toarray()
    np.testing.assert_allclose(t.to_dense().numpy(), expect, rtol=1e-6, atol=1e-7)


class _FixedTargets:
    """A plugin overriding lever_targets; records the per-label λ it was handed."""

    seen = None

    @hookimpl
    def lever_targets(self, row_ids, y_rows, soft_rows, params, label_lam):
        type(self).seen = label_lam
        n = len(row_ids)
        return SparseTargets(torch.arange(n), torch.zeros(n, dtype=torch.long), torch.full((n,), 0.25), (n, y_rows.shape[1]))


class _OldStyleTargets:
    """A plugin written before label_lam existed: its signature leaves the argument out."""

    @hookimpl
    def lever_targets(self, row_ids, y_rows, soft_rows, params):
        n = len(row_ids)
        return SparseTargets(torch.arange(n), torch.ones(n, dtype=torch.long), torch.full((n,), 0.5), (n, y_rows.shape[1]))


@pytest.mark.parametrize("plugin", [_FixedTargets, _OldStyleTargets])
def test_a_plugins_lever_targets_still_wins(plugin):
    rows = _rows()
    pm = get_plugin_manager(False)
    pm.register(plugin(), name="mine")
    builder = BatchBuilder(rows, lambda ids: None, _lp(0.5, "mix", 3.0), pm)
    t = builder.targets(np.array([2, 8, 51]))
    expect_col, expect_val = (0, 0.25) if plugin is _FixedTargets else (1, 0.5)
    assert t.cols.tolist() == [expect_col] * 3 and t.vals.tolist() == [expect_val] * 3
    if plugin is _FixedTargets:
        np.testing.assert_array_equal(_FixedTargets.seen, builder.label_lam)


def test_default_hook_takes_label_lam():
    y, p, counts = _problem()
    lam_l = label_lambda(counts, 5.0)
    pm = get_plugin_manager(False)
    t = pm.hook.lever_targets(row_ids=np.arange(B), y_rows=sp.csr_matrix(y), soft_rows=sp.csr_matrix(p),
                              params=_lp(0.5, "mix", 5.0), label_lam=lam_l, backbone=None)
    np.testing.assert_allclose(t.to_dense().numpy(), lam_l * y + (1 - lam_l) * p, rtol=1e-6, atol=1e-7)


# -- lever.wrap -----------------------------------------------------------------------------------
def test_wrap_with_kappa_trains_on_per_label_targets():
    rows = _rows()
    labels = rows.num_labels
    x = torch.randn(rows.num_rows, 6, generator=torch.Generator().manual_seed(0))
    clf = torch.nn.Linear(6, labels)
    docs = rows.Y[: rows.num_docs]
    model = lever.wrap(clf, rows.soft, kappa=2.0, label_counts=docs, reduction="sum")
    ids = np.array([0, 7, 52, 30])
    loss = model.loss(x[ids], ids, rows.Y[ids])
    lam_l = _reference_lambda(np.asarray(docs.sum(0)).ravel(), 2.0)
    y = torch.from_numpy(rows.Y[ids].toarray())
    p = torch.from_numpy(rows.soft[ids].toarray())
    torch.testing.assert_close(loss, _two_term_per_label(clf(x[ids]), y, p, lam_l), rtol=1e-5, atol=1e-4)
    # counts given as an array are the same thing
    by_counts = lever.wrap(clf, rows.soft, kappa=2.0, label_counts=label_counts(docs), reduction="sum")
    torch.testing.assert_close(by_counts.loss(x[ids], ids, rows.Y[ids]), loss)
    with pytest.raises(TypeError, match="label_counts"):
        lever.wrap(clf, rows.soft, kappa=2.0)
    with pytest.raises(TypeError, match="kappa"):
        lever.wrap(clf, rows.soft, label_counts=docs)
    with pytest.raises(ParamsError, match="kappa"):
        lever.wrap(clf, rows.soft, kappa=-2.0, label_counts=docs)


# -- lever train --kappa -------------------------------------------------------------------------
def _soft_labels_file(data_dir, path):
    from lever import XCDataset
    from lever.soft_labels import SoftLabels

    ds = XCDataset.load(data_dir)
    Y = ds.with_label_rows().Y.tocsr().astype(np.float32)
    noise = sp.random(Y.shape[0], Y.shape[1], density=0.05, random_state=2, format="csr", dtype=np.float32)
    SoftLabels.from_csr(Y.multiply(0.9).maximum(noise * 0.5).tocsr(),
                        meta={"dataset_fingerprint": ds.fingerprint()}).save(path)
    return path


def test_lever_train_kappa_end_to_end(tiny_xc_dir, tiny_bert_dir, tmp_path):
    from safetensors.torch import load_file

    from lever.cli import main

    soft = _soft_labels_file(tiny_xc_dir, tmp_path / "soft.npz")

    def run(out, *extra):
        args = ["train", "--data", str(tiny_xc_dir), "--backbone", "generic", "--bp", f"encoder={tiny_bert_dir}",
                "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--epochs", "1", "--seed", "5",
                "--soft-labels", str(soft), "--no-progress", *extra]
        assert main(args) == 0
        return load_file(str(out / "model.safetensors"))

    w_kappa = run(tmp_path / "kappa", "--kappa", "2")
    config = json.loads((tmp_path / "kappa" / "config.json").read_text())
    assert config["lever"]["kappa"] == 2.0
    metrics = json.loads((tmp_path / "kappa" / "metrics.json").read_text())
    assert metrics["P@1"] > 0
    w_lam = run(tmp_path / "lam", "--lam", "0.5")
    assert json.loads((tmp_path / "lam" / "config.json").read_text())["lever"]["kappa"] is None
    assert any(not torch.equal(w_kappa[k], w_lam[k]) for k in w_kappa)  # κ reached the loss


@pytest.mark.parametrize("lam", [0.5, 0.3, 0.0, 1.0])
def test_constant_lambda_targets_are_bit_identical_to_scipy_arithmetic(lam):
    """kappa=None keeps the values the per-batch scipy expression λ·y + (1−λ)·p̂ gave."""
    y, p, _ = _problem(seed=3)
    y_csr, p_csr = sp.csr_matrix(y), sp.csr_matrix(p)
    expect = (float(lam) * y_csr + (1.0 - float(lam)) * p_csr).tocsr()
    expect.eliminate_zeros()
    expect.sort_indices()
    t = soft_targets(np.arange(B), y_csr, p_csr, lam=lam)
    coo = expect.tocoo()
    assert torch.equal(t.rows, torch.from_numpy(coo.row.astype(np.int64)))
    assert torch.equal(t.cols, torch.from_numpy(coo.col.astype(np.int64)))
    assert torch.equal(t.vals, torch.from_numpy(coo.data.astype(np.float32)))
