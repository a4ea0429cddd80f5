"""Renée's classifier: the hand-written backward against autograd's BCE, with soft targets,
duplicates, split accumulation, split loss scaling, and through the backbone's training step."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lever.loss import SparseTargets, soft_targets
from lever.train.params import LeverParams
from lever_adapters.renee.model import fused_ova_bce, ova_bce_grads


def _problem(b=9, labels=40, d=6, seed=0, duplicates=True):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, d, generator=g, dtype=torch.float64).float()
    w = torch.randn(labels, d, generator=g) * 0.5
    mask = torch.rand(b, labels, generator=g) < 0.15
    rows, cols = mask.nonzero(as_tuple=True)
    vals = torch.rand(rows.numel(), generator=g)
    if duplicates:  # a duplicate entry means the sum of both (index_put_ accumulate)
        rows, cols, vals = (
            torch.cat([rows, rows[:3]]),
            torch.cat([cols, cols[:3]]),
            torch.cat([vals, vals[:3] * 0.1]),
        )
    t = SparseTargets(rows, cols, vals, (b, labels))
    return emb, w, t


def _autograd(emb, w, t):
    e = emb.clone().requires_grad_(True)
    ww = w.clone().requires_grad_(True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        e @ ww.t(), t.to_dense(), reduction="sum"
    )
    loss.backward()
    return loss.detach(), e.grad, ww.grad


@pytest.mark.parametrize("micro_batch", [0, 4, 1])
def test_hand_written_backward_equals_autograd_bce(micro_batch):
    emb, w, t = _problem()
    ref_loss, ref_ge, ref_gw = _autograd(emb, w, t)
    loss, ge, gw = ova_bce_grads(emb, w, t, micro_batch=micro_batch, with_loss=True)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    torch.testing.assert_close(ge, ref_ge, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-5)


def test_autograd_face_and_accumulation_over_two_batches():
    emb, w, t = _problem(b=8)
    e = emb.clone().requires_grad_(True)
    ww = w.clone().requires_grad_(True)
    for half in (slice(0, 4), slice(4, 8)):  # gradients of two calls accumulate like autograd's
        fused_ova_bce(e[half], ww, t.row_slice(half.start, half.stop), micro_batch=3).backward()
    _, ref_ge, ref_gw = _autograd(emb, w, t)
    torch.testing.assert_close(e.grad, ref_ge, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ww.grad, ref_gw, rtol=1e-5, atol=1e-5)


def test_lever_soft_targets_are_what_is_subtracted():
    """t = λ·y + (1−λ)·p̂ from lever.loss: the gradient is σ(z) − t, not σ(z) − y."""
    emb, w, _ = _problem(b=5, labels=12)
    y = sp.csr_matrix(np.eye(5, 12, dtype=np.float32))
    p = sp.random(5, 12, density=0.3, random_state=1, dtype=np.float32).tocsr()
    t = soft_targets(np.arange(5), y, p, lam=0.5)
    _, ge, gw = ova_bce_grads(emb, w, t)
    z = emb @ w.t()
    g = torch.sigmoid(z) - torch.from_numpy((0.5 * y + 0.5 * p).toarray())
    torch.testing.assert_close(gw, g.t() @ emb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ge, g @ w, rtol=1e-5, atol=1e-5)
    _, _, gw_hard = ova_bce_grads(emb, w, soft_targets(np.arange(5), y, None))
    assert not torch.allclose(gw, gw_hard)


def test_split_loss_scaling_scales_only_the_embedding_gradient():
    emb, w, t = _problem()
    _, ge, gw = ova_bce_grads(emb, w, t)
    _, ge_s, gw_s = ova_bce_grads(emb, w, t, input_scale=64.0, out=torch.empty(9, 40))
    torch.testing.assert_close(ge_s, ge * 64.0)
    torch.testing.assert_close(gw_s, gw)


def test_buffer_too_small_is_an_error():
    emb, w, t = _problem()
    with pytest.raises(ValueError, match="logits buffer"):
        ova_bce_grads(emb, w, t, out=torch.empty(2, 40))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 classifier buffers need CUDA")
def test_fp16_buffers_match_fp32_within_half_precision():
    emb, w, t = _problem(b=64, labels=4096, d=64)
    emb, w, t = emb.cuda(), w.cuda() * 0.1, t.to("cuda")
    _, ge, gw = ova_bce_grads(emb, w, t)
    out = torch.empty(16, 4096, dtype=torch.float16, device="cuda")
    _, ge16, gw16 = ova_bce_grads(emb, w, t, micro_batch=16, out=out, input_scale=4096.0)
    torch.testing.assert_close(ge16 / 4096.0, ge, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw16, gw, rtol=2e-2, atol=2e-2)


def test_backbone_step_equals_autograd_through_the_encoder(tmp_path):
    """forward_backward (fused classifier + emb.backward) gives the gradients autograd gives for
    the summed BCE of the whole model, encoder parameters included."""
    from lever.data import XCDataset, synthetic_dataset, write_dataset
    from lever.train.backbone import AmpContext, BuildContext
    from lever.train.distributed import DistEnv
    from lever.train.rows import BatchBuilder, TrainRows
    from lever_adapters.renee.train import ReneeBackbone

    write_dataset(tmp_path / "d", **synthetic_dataset(num_train=60, num_test=20, num_labels=16))
    ds = XCDataset.load(tmp_path / "d")
    aug = ds.with_label_rows()
    rows = TrainRows(
        Y=aug.Y,
        num_docs=aug.num_docs,
        soft=sp.random(
            aug.Y.shape[0], 16, density=0.1, random_state=0, format="csr", dtype=np.float32
        ),
    )
    bb = ReneeBackbone(
        {
            "encoder": {
                "kind": "tfidf",
                "bag_dim": 8,
                "dropout": 0.0,
                "tfidf_min_df": 1,
                "bottleneck": 5,
            },
            "clf_micro_batch": 3,
        }
    )
    module = bb.build(BuildContext(ds, rows, None, torch.device("cpu"), DistEnv(), tmp_path))
    batch = BatchBuilder(rows, bb.batch_inputs, LeverParams(lam=0.5).validate().loss_params("sum"))(
        np.array([0, 5, 61, 70, 3, 2, 9]), 7
    )
    bb.forward_backward(module, batch, AmpContext(torch.device("cpu"), enabled=False))
    got = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    z = module(batch.inputs)
    torch.nn.functional.binary_cross_entropy_with_logits(
        z, batch.targets.to_dense(), reduction="sum"
    ).backward()
    assert set(got) == {"head.parts.bag.bag.weight", "head.bottleneck.weight", "classifier.weight"}
    for n, p in module.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)
