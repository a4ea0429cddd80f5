"""``lever.wrap``: trains with the LEVER loss; predictions and weights stay the classifier's."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import lever
from lever.hooks import NoAdapterError
from lever.wrapper import LeverWrapped

N, L, D = 40, 12, 8


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((N + L, D)).astype(np.float32))
    y = (rng.random((N + L, L)) < 0.15).astype(np.float32)
    y[N:, :] = np.eye(L, dtype=np.float32)  # label-as-datapoint rows
    p = np.where(rng.random((N + L, L)) < 0.2, rng.random((N + L, L)), 0).astype(np.float32)
    p = np.where(y > 0, rng.uniform(0.5, 1.0, (N + L, L)), p).astype(np.float32)
    return x, sp.csr_matrix(y), lever.SoftLabels.from_csr(sp.csr_matrix(p), {"num_docs": N})


def _classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, L))


def test_wrapped_model_predicts_and_saves_exactly_as_the_classifier(tmp_path):
    x, _, soft = _data()
    clf = _classifier()
    model = lever.wrap(clf, soft, lam=0.5, mode="mix")
    assert isinstance(model, LeverWrapped) and model.adapter.name == "generic"
    model.eval()
    assert not clf.training  # eval() reaches the classifier (dropout off)
    with torch.no_grad():
        assert torch.equal(model(x), clf(x))
    sd, bare = model.state_dict(), clf.state_dict()
    assert list(sd) == list(bare)
    assert all(sd[k] is bare[k] or torch.equal(sd[k], bare[k]) for k in bare)
    # weights saved from the wrapped model load into a bare classifier, and back
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    fresh = _classifier(seed=1)
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), clf(x))
    other = lever.wrap(_classifier(seed=2), soft)
    other.load_state_dict(clf.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.parameters(), clf.parameters()))
    # inside a bigger module, keys nest without an extra "classifier." level and load back
    outer = nn.ModuleDict({"student": model})
    assert set(outer.state_dict()) == {f"student.{k}" for k in bare}
    outer.load_state_dict(outer.state_dict())


@pytest.mark.parametrize("mode", ["mix", "augment"])
def test_wrapped_loss_is_the_lever_loss(mode):
    x, y, soft = _data()
    clf = _classifier().eval()  # no dropout, so two forward passes agree
    model = lever.wrap(clf, soft, lam=0.3, mode=mode, reduction="mean")
    rows = np.array([3, 17, N + 2, N + 7, 0])
    loss = model.loss(x[rows], rows, y[rows])
    (g,) = torch.autograd.grad(loss, clf[-1].weight)
    z = clf(x[rows])
    yy = torch.from_numpy(y[rows].toarray())
    pp = torch.from_numpy(soft.csr[rows].toarray())
    if mode == "mix":
        ref = 0.3 * F.binary_cross_entropy_with_logits(z, yy) + 0.7 * F.binary_cross_entropy_with_logits(z, pp)
    else:
        ref = F.binary_cross_entropy_with_logits(z, torch.maximum(yy, pp))
    (g_ref,) = torch.autograd.grad(ref, clf[-1].weight)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(g, g_ref)
    # prebuilt targets (e.g. from a DataLoader worker) give the same loss
    torch.testing.assert_close(model.loss(x[rows], targets=model.targets(rows, y[rows])), loss)


def test_three_line_training_loop_lowers_the_loss():
    x, y, soft = _data()
    model = lever.wrap(_classifier(), soft)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rows = np.arange(N + L)
    first = model.loss(x[rows], rows, y[rows]).item()
    for _ in range(60):
        loss = model.loss(x[rows], rows, y[rows])
        loss.backward(), opt.step(), opt.zero_grad()
    assert loss.item() < 0.8 * first


class Shortlister(nn.Module):
    """Scores only a fixed candidate list per row (like a tree or an ANN shortlist)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(D, L)

    def forward(self, inputs):
        z = self.w(inputs["x"])
        return z.gather(1, inputs["ids"]), inputs["ids"]


def test_shortlisting_classifier_trains_on_its_shortlist():
    x, y, soft = _data()
    clf = Shortlister()
    model = lever.wrap(clf, soft, reduction="sum")
    rows = np.arange(6)
    ids = torch.tensor([[0, 1, 2, 3]] * 6)
    loss = model.loss({"x": x[rows], "ids": ids}, rows, y[rows])
    z = clf.w(x[rows])[:, :4]
    t = 0.5 * torch.from_numpy(y[rows].toarray()) + 0.5 * torch.from_numpy(soft.csr[rows].toarray())
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(z, t[:, :4], reduction="sum"))


def test_unknown_classifier_gets_a_clear_error():
    with pytest.raises(NoAdapterError, match=r"no lever adapter accepts a builtins.function.*installed adapters:.*generic"):
        lever.wrap(lambda v: v)
    with pytest.raises(TypeError, match="soft_labels"):
        lever.wrap(_classifier(), soft_labels=np.zeros((3, 3)))
    with pytest.raises(Exception, match="mode"):
        lever.wrap(_classifier(), mode="blend")
    model = lever.wrap(_classifier())
    with pytest.raises(TypeError, match="row_ids and y_rows"):
        model.loss(torch.zeros(2, D), np.arange(2))


def test_loss_goes_through_forward_so_ddp_synchronises(tmp_path):
    import torch.distributed as dist

    x, y, soft = _data()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = lever.wrap(_classifier().eval(), soft)
        ddp = nn.parallel.DistributedDataParallel(model)
        rows = np.arange(8)
        loss = ddp(x[rows], row_ids=rows, y_rows=y[rows])
        loss.backward()
        plain = lever.wrap(_classifier().eval(), soft)
        plain.loss(x[rows], rows, y[rows]).backward()
        for a, b in zip(model.parameters(), plain.parameters()):
            torch.testing.assert_close(a.grad, b.grad)
    finally:
        dist.destroy_process_group()
