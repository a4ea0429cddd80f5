"""The ELIAS adapter: training shortlists hold every positive (and the teacher's labels), cluster
targets are the projection of the label targets, the adjacency learns and re-parents, prediction
is the exact top-k through the beam with filters, a run resumed mid-stage equals an uninterrupted
one, 2 processes equal 1, and ``lever.wrap`` leaves inference and weights untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from lever.data import XCDataset, synthetic_dataset, write_dataset
from lever.hooks import get_plugin_manager
from lever.hooks.manager import scoped_hooks
from lever.loss import project_targets, soft_targets
from lever.train import LeverParams, RunParams, TrainParams
from lever.train.backbone import BuildContext
from lever.train.distributed import DistEnv
from lever.train.rows import TrainRows
from lever.utils.balanced_tree import balanced_leaves
from lever_adapters.elias.index import label_centroids
from lever_adapters.elias.model import EliasModule
from lever_adapters.elias.train import EliasBackbone

SMALL = {  # 40 labels: 8 clusters of 5, beam 2 (+1 in training), shortlist 6
    "encoder": {"kind": "tfidf", "bag_dim": 16, "dropout": 0.0, "tfidf_min_df": 1},
    "max_leaf": 5, "beam": 2, "train_beam_extra": 1, "shortlist": 6, "kappa": 12,
    "approx_beam": 3, "warmup_epochs": 1, "stage1_epochs": 2, "beta": 8.0,
}


def _bp(params: dict) -> list[str]:
    out = []
    for key, value in params.items():
        if isinstance(value, dict):
            out += [x for k, v in value.items() for x in ("--bp", f"{key}.{k}={json.dumps(v)}")]
        else:
            out += ["--bp", f"{key}={json.dumps(value)}"]
    return out


def _soft(ds: XCDataset, docs_only: bool = True) -> sp.csr_matrix:
    """Teacher rows: the positives at 0.9 plus random other labels at up to 0.5."""
    y = ds.trn_Y.tocsr().astype(np.float32)
    noise = sp.random(y.shape[0], y.shape[1], density=0.06, random_state=3, format="csr", dtype=np.float32)
    return y.multiply(0.9).maximum(noise * 0.5).tocsr()


def _backbone(data: Path, tmp_path: Path, soft: sp.csr_matrix | None = None, **changes):
    ds = XCDataset.load(data)
    rows = TrainRows(Y=ds.trn_Y.tocsr(), num_docs=ds.num_train, soft=soft)
    backbone = EliasBackbone({**SMALL, **changes})
    backbone.attach(scoped_hooks(get_plugin_manager(), "elias"), LeverParams(lam=0.5).validate().loss_params("sum"))
    params = TrainParams(data=str(data), out=str(tmp_path / "run"), run=RunParams(seed=0))
    torch.manual_seed(0)
    module = backbone.build(BuildContext(ds, rows, params, torch.device("cpu"), DistEnv(), tmp_path, backbone.hooks))
    return ds, rows, backbone, module


def _targets(rows: TrainRows, ids: np.ndarray, lam: float = 0.5):
    soft = None if rows.soft is None else rows.soft[ids]
    return soft_targets(ids, rows.Y[ids], soft, lam)


def _enter(backbone, module, name):
    stage = next(s for s in backbone.stages(module) if s.name == name)
    backbone.on_stage_start(module, stage)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("elias") / "data"
    write_dataset(out, **synthetic_dataset(160, 40, 40, seed=1))
    return out


def test_label_centroids_concatenate_parts_for_the_balanced_tree():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 37)) < 0.2).astype(np.float32)
    y[0, :] = 1.0  # every label has a training row
    y = sp.csr_matrix(y)
    dense = rng.normal(size=(60, 5)).astype(np.float32)
    bag = sp.csr_matrix(np.where(rng.random((60, 9)) < 0.3, 1.0, 0.0).astype(np.float32))
    assert isinstance(label_centroids(y, [dense]), np.ndarray)
    cents = label_centroids(y, [dense, bag])
    assert sp.issparse(cents) and cents.shape == (37, 14)
    part_norms = [np.linalg.norm(cents.toarray()[:, cols], axis=1) for cols in (slice(0, 5), slice(5, 14))]
    assert np.allclose(part_norms, np.sqrt(0.5), atol=1e-6)  # each part weighted 1/√parts
    a = balanced_leaves(cents, 8, seed=3)
    assert sorted(np.bincount(a, minlength=8)) == [4, 4, 4, 5, 5, 5, 5, 5]
    assert np.array_equal(a, balanced_leaves(cents, 8, seed=3))


@pytest.mark.parametrize("stage", ["warmup", "adjacency"])
def test_training_shortlist_holds_every_positive_and_teacher_label(data, tmp_path, stage):
    ds, rows, backbone, module = _backbone(data, tmp_path, soft=_soft(XCDataset.load(data)))
    _enter(backbone, module, "warmup")
    if stage == "adjacency":
        _enter(backbone, module, "adjacency")
    ids = np.arange(64)
    t = _targets(rows, ids)
    levels = backbone.training_levels(module, backbone.batch_inputs(ids), t, backbone.hooks)
    label_level = next(lv for lv in levels if lv.is_labels and lv.loss == "bce")
    scored = {(b, int(x)) for b in range(len(ids)) for x in label_level.ids[b] if x < ds.num_labels}
    pos = {(int(r), int(c)) for r, c, p in zip(t.rows, t.cols, t.positive) if p}
    teacher = {(int(r), int(c)) for r, c, p in zip(t.rows, t.cols, t.positive) if not p}
    assert pos and teacher and pos <= scored and teacher <= scored
    # most rows hold only the K = 6 candidates the parameters ask for
    assert (label_level.ids < ds.num_labels).sum(1).min() == 6
    assert backbone.reach["positives"][0] == backbone.reach["positives"][1] == len(pos)
    assert backbone.reach["teacher"][0] == len(teacher)


def test_cluster_targets_are_the_projection_of_label_targets(data, tmp_path):
    _ds, rows, backbone, module = _backbone(data, tmp_path, soft=_soft(XCDataset.load(data)))
    _enter(backbone, module, "warmup")
    _enter(backbone, module, "adjacency")
    ids = np.arange(20)
    t = _targets(rows, ids)
    levels = backbone.training_levels(module, backbone.batch_inputs(ids), t, backbone.hooks)
    assert levels[0].space == 0 and levels[0].ids is None
    got = backbone.level_targets(module, levels[0], t, backbone.hooks).to_dense()
    assert torch.equal(got, project_targets(t, module.parent, module.num_clusters).to_dense())
    dense, parent = t.to_dense(), module.parent
    for c in range(module.num_clusters):  # the max of the cluster's labels' targets
        members = parent == c
        want = dense[:, members].max(1).values if members.any() else torch.zeros(len(ids))
        assert torch.equal(got[:, c], want)


def test_adjacency_pattern_learns_and_reparents(data, tmp_path):
    # upstream's U[0, 1) start: every edge unsaturated, so this batch's gradient reaches the edges
    # (with adj_init=members the saturated members pass none through the min(1, ·))
    ds, rows, backbone, module = _backbone(data, tmp_path, adj_init="uniform")
    _enter(backbone, module, "warmup")
    partition = module.parent.clone()
    _enter(backbone, module, "adjacency")
    assert bool(module.learned)
    edges = module.adj_ids
    for label in range(ds.num_labels):  # every label stays reachable through its stage-1 cluster
        assert (edges[partition[label]] == label).any()
    assert (edges < ds.num_labels).sum() > ds.num_labels  # and some labels gained clusters
    before = module.adj_logits.detach().clone()
    opt = torch.optim.SGD([module.adj_logits], lr=50.0)
    ids = np.arange(64)
    loss = backbone.training_loss(module, backbone.batch_inputs(ids), _targets(rows, ids), backbone.loss_params, backbone.hooks)
    loss.backward()
    assert module.adj_logits.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(module.adj_logits, before)
    backbone.on_epoch_start(module, 5)
    log_e = module.edge_logs()
    for label in range(ds.num_labels):  # parent = the cluster with the best edge to the label
        where = edges == label
        best = log_e.masked_fill(~where, float("-inf")).max(1).values
        assert best[module.parent[label]] == best.max()


@pytest.mark.parametrize("init", ["members", "uniform"])
def test_stage_two_starts_from_the_stage_one_edges_with_members_init(data, tmp_path, init):
    ds, _, backbone, module = _backbone(data, tmp_path, adj_init=init)
    _enter(backbone, module, "warmup")
    partition = module.parent.clone()
    _enter(backbone, module, "adjacency")
    ids, log_e = module.adj_ids, module.edge_logs()
    valid = ids < ds.num_labels
    member = valid & (partition[ids.clamp(max=ds.num_labels - 1)] == torch.arange(ids.shape[0])[:, None])
    assert bool((valid & ~member).any())
    if init == "members":  # members saturate (ŝ_cl = 1, as in stage 1); added labels start below
        assert bool((log_e[member] == 0).all()) and bool((log_e[valid & ~member] < 0).all())
        assert torch.equal(module.parent, partition)
    else:  # upstream's U[0, 1): members and added labels alike, some members below 1
        assert bool((log_e[member] < 0).any())


def test_members_init_needs_beta_above_the_cluster_size(data, tmp_path):
    _, _, backbone, module = _backbone(data, tmp_path, beta=4.0)  # clusters of 5
    _enter(backbone, module, "warmup")
    with pytest.raises(ValueError, match="beta=4.0.*adj_init=members"):
        _enter(backbone, module, "adjacency")


def test_search_is_the_exact_top_k_through_the_beam_with_filters(data, tmp_path):
    ds, _rows, backbone, module = _backbone(data, tmp_path, shortlist=2)
    _enter(backbone, module, "warmup")
    _enter(backbone, module, "adjacency")
    module.eval()
    ids = np.arange(ds.num_test)
    inputs = backbone.test_inputs(ids)
    k = 5
    got_i, got_s = backbone.predict_topk(module, inputs, k, ds.num_labels, ds.tst_filter)
    # brute force: every label of the beam's clusters scored
    with torch.no_grad():
        emb = module.head(inputs).float()
        log_c = module.cluster_logs(emb)
        beam = log_c.argsort(dim=1, descending=True, stable=True)[:, : module.beam]
        log_e = module.edge_logs()
        p = torch.full((len(ids), ds.num_labels), float("-inf"))
        z = emb @ module.label_weight.t() + module.label_bias
        for b in range(len(ids)):
            for c in beam[b]:
                for slot, label in enumerate(module.adj_ids[c]):
                    if label < ds.num_labels:
                        s = (log_c[b, c] + log_e[c, slot]).exp() * torch.sigmoid(z[b, label])
                        p[b, label] = max(p[b, label], s)
    p[torch.from_numpy(ds.tst_filter.toarray() > 0)] = float("-inf")
    from lever.metrics.ranking import topk

    want_i, want_s = topk(p.numpy(), k)
    assert np.array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5)
    assert ds.tst_filter[ids].multiply(sp.csr_matrix((np.ones(int((got_i >= 0).sum())), (np.nonzero(got_i >= 0)[0], got_i[got_i >= 0])), shape=(len(ids), ds.num_labels))).nnz == 0


def _train_args(data, out, *extra):
    return ["train", "--data", str(data), "--backbone", "elias", "--out", str(out), "--epochs", "4",
            "--seed", "2", "--warmup-steps", "2", "--no-progress", *_bp(SMALL), *extra]


def test_lever_train_resumed_mid_stage_equals_uninterrupted_then_predicts(data, tmp_path, capsys):
    from lever.cli import main

    soft = tmp_path / "soft.npz"
    from test_train_cli import _soft_labels

    _soft_labels(data, soft)
    common = ["--soft-labels", str(soft), "--batch-size", "32", "--checkpoint-every-steps", "3"]
    assert main(_train_args(data, tmp_path / "whole", *common)) == 0
    # stop inside the 2-epoch adjacency stage, then rerun to the end
    assert main(_train_args(data, tmp_path / "parts", *common, "--stop-after-epochs", "3")) == 0
    saved = torch.load(next((tmp_path / "parts" / "checkpoints").glob("step-*")) / "state.rank0.pt", weights_only=True)
    assert saved["backbone"]["stage"] in ("clusters", "adjacency")
    assert main(_train_args(data, tmp_path / "parts", *common)) == 0
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    parts = load_file(str(tmp_path / "parts" / "model.safetensors"))
    assert bool(whole["learned"]) and whole.keys() == parts.keys()
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key
    log = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [("adjacency" in r["lr"]) for r in log] == [False, False, True, True]
    m = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert m == json.loads((tmp_path / "parts" / "metrics.json").read_text())
    # every positive and teacher label reached the shortlist; the counts survive the resume
    shares = json.loads((tmp_path / "whole" / "elias_shortlists.json").read_text())
    assert shares == json.loads((tmp_path / "parts" / "elias_shortlists.json").read_text())
    (level,) = shares["levels"]
    assert level["positives"] > 0 and level["teacher"] > 0
    assert level["positives_reached"] == level["teacher_reached"] == 1.0

    pred = tmp_path / "pred.npz"
    assert main(["predict", "--run", str(tmp_path / "whole"), "--out", str(pred), "--k", "5", "--no-progress"]) == 0
    ds = XCDataset.load(data)
    csr = sp.load_npz(pred).tocsr()
    assert csr.shape == (ds.num_test, ds.num_labels) and csr.multiply(ds.tst_filter).nnz == 0
    capsys.readouterr()
    assert main(["eval", "--data", str(data), "--pred", str(pred), "--k", "5", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in ("P@1", "P@5", "PSP@5", "C@5"):
        assert evaluated[key] == pytest.approx(m[key], abs=1e-6), key


@pytest.mark.distributed
@pytest.mark.parametrize("init", ["uniform", "members"])
def test_two_processes_equal_one_with_the_same_global_batch(data, tmp_path, init):
    from lever.cli import main

    bp = ("--bp", f"adj_init={init}")
    assert main(_train_args(data, tmp_path / "one", "--batch-size", "32", *bp)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lever", *_train_args(data, tmp_path / "two", "--batch-size", "16", *bp)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert torch.equal(one["adj_ids"], two["adj_ids"]) and torch.equal(one["parent"], two["parent"])
    if init == "uniform":
        for key in one:
            torch.testing.assert_close(two[key], one[key], rtol=0, atol=2e-5, msg=key)
        return
    # members (saturated edges at ŝ_cl = 1): measured 4 of 17,040 bag weights (one document's
    # tokens) off by <= 1.5e-4, presumably one near-tie in the beam flipped by the batch-size-
    # dependent float order of the GEMMs (not traced); everything else agrees to float noise
    for key in one:
        diff = (two[key].float() - one[key].float()).abs()
        assert float(diff.max()) <= 1e-3, key
        assert int((diff > 2e-5).sum()) <= max(8, diff.numel() // 1000), key


def test_wrap_trains_and_leaves_inference_and_weights_identical(data, tmp_path):
    import lever

    ds, rows, backbone, module = _backbone(data, tmp_path)
    _enter(backbone, module, "warmup")
    _enter(backbone, module, "adjacency")
    module.eval()
    inputs = backbone.test_inputs(np.arange(ds.num_test))
    bare = module(inputs)
    soft = _soft(ds)
    wrapped = lever.wrap(module, soft, lam=0.5, reduction="sum")
    assert isinstance(wrapped.adapter, EliasBackbone)
    got = wrapped(inputs)
    assert torch.equal(got[0], bare[0]) and torch.equal(got[1], bare[1])
    assert wrapped.state_dict().keys() == module.state_dict().keys()
    for key, value in module.state_dict().items():
        assert torch.equal(wrapped.state_dict()[key], value)
    wrapped.train()
    ids = np.arange(16)
    loss = wrapped.loss(backbone.batch_inputs(ids), ids, rows.Y[ids])
    loss.backward()
    assert module.label_weight.grad.abs().sum() > 0 and module.adj_logits.grad.abs().sum() > 0
    fresh = EliasModule(module.head, ds.num_labels, module.num_clusters, module.adj_ids.shape[1],
                        module.alpha, module.beta, module.beam, module.shortlist)
    fresh.load_state_dict(wrapped.state_dict())
    fresh.eval()
    module.eval()
    out_a, out_b = fresh(inputs), module(inputs)
    assert torch.equal(out_a[0], out_b[0]) and torch.equal(out_a[1], out_b[1])


def test_bad_parameters_name_the_field(data, tmp_path):
    from lever.utils.params import ParamsError

    with pytest.raises(ParamsError, match="num_clusters"):
        EliasBackbone({"num_clusters": 6})
    with pytest.raises(ParamsError, match="beta"):
        EliasBackbone({"kappa": 100, "beta": 150.0})
    with pytest.raises(ParamsError, match="preset"):
        EliasBackbone({"preset": "gpu"})
    with pytest.raises(ParamsError, match="adj_init"):
        EliasBackbone({"adj_init": "zeros"})
    with pytest.raises(ValueError, match="kappa"):
        _backbone(data, tmp_path, kappa=2)
    paper = EliasBackbone({"preset": "paper", "beam": 7}).params
    assert (paper.kappa, paper.shortlist, paper.beam, paper.encoder.kind) == (1000, 2000, 7, "transformer")
    assert (paper.beta, paper.adj_init, paper.lr_adjacency) == (150.0, "uniform", 2e-2)
