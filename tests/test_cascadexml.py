"""CascadeXML: the balanced label tree, teacher forcing through the beam, per-level targets equal
to the projection of the label targets, ``lever train`` / ``predict`` / resume, and ``lever.wrap``
leaving inference and weights untouched. Tiny random 2-layer BERT, 40-label synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from lever.cli import main
from lever.data import XCDataset
from lever.loss import LABELS, Level, levels_bce, soft_targets
from lever.train.backbone import BuildContext
from lever.train.distributed import DistEnv
from lever.train.params import TrainParams
from lever.train.rows import TrainRows
from lever.utils.balanced_tree import balanced_tree_codes
from lever.utils.params import ParamsError
from lever_adapters.cascadexml.model import CascadeModule, auto_depths
from lever_adapters.cascadexml.params import resolve_params
from lever_adapters.cascadexml.train import STATS_FILE, CascadeXMLBackbone


def _bp(bert, **extra) -> dict:
    params = {
        "encoder": {"model": str(bert), "tfidf_min_df": 1, "bag_dim": 8},
        "tree": {"leaf_size": 2, "branch_bits": 1},  # 40 labels: 8, 16, 32 clusters, then labels
        "beam": [3, 5, 6],
        "predict_beam": [],  # inference walks the training beam unless a test widens it
        "dropouts": [0.0],
    }
    params.update(extra)
    return params


def _built(data, bert, tmp_path, soft=None, **extra):
    ds = XCDataset.load(data)
    backbone = CascadeXMLBackbone(_bp(bert, **extra))
    rows = TrainRows(ds.trn_Y.tocsr(), ds.num_train, soft)
    params = TrainParams(data=str(data), out="")
    ctx = BuildContext(ds, rows, params, torch.device("cpu"), DistEnv(), tmp_path / "cache", backbone.hooks)
    torch.manual_seed(0)
    module = backbone.build(ctx)
    return ds, backbone, module


# -- the tree ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_tree_is_balanced_nested_and_every_label_in_one_leaf(sparse):
    rng = np.random.default_rng(0)
    n, depth = 203, 5
    x = rng.standard_normal((n, 12)).astype(np.float32)
    feats = sp.csr_matrix(np.where(x > 0.8, x, 0)) if sparse else x
    codes = balanced_tree_codes(feats, depth, seed=3)
    assert np.array_equal(codes, balanced_tree_codes(feats, depth, seed=3))  # deterministic
    for b in range(1, depth + 1):
        sizes = np.bincount(codes >> (depth - b), minlength=2**b)
        assert sizes.min() >= n // 2**b and sizes.max() - sizes.min() <= 1, b
    module = CascadeModule(n, [2, 4, 5], [[1]] * 4, [1], 4, [2, 2, 2], [0.0] * 4, codes=codes)
    leaves = module.leaf_labels.numpy()
    real = leaves[leaves < n]
    assert np.array_equal(np.sort(real), np.arange(n))  # every label in exactly one leaf
    for c, row in enumerate(leaves):
        assert (codes[row[row < n]] == c).all()
    # every label's path: its cluster at each level is a child of its cluster one level up
    for level in range(module.num_levels - 2):
        parent = module.cluster_of(level)
        child = module.cluster_of(level + 1)
        kids = module.expand(level, parent[:, None])
        assert (kids == child[:, None]).sum(1).eq(1).all()
    with pytest.raises(ValueError, match="2\\*\\*depth"):
        balanced_tree_codes(x[:10], 4)


def test_tree_depths_scale_with_the_labels():
    assert auto_depths(670_091, 3, 3, 8) == [11, 14, 17]
    assert auto_depths(8019, 3, 3, 8) == [4, 7, 10]
    assert auto_depths(40, 3, 3, 8) == [3]
    assert auto_depths(40, 3, 1, 2) == [3, 4, 5]


def test_params_presets_and_errors():
    paper = resolve_params({"preset": "paper", "beam": [4, 4], "encoder.max_len": 64})
    assert not paper.encoder.frozen and paper.encoder.pooling == "cls" and paper.encoder.max_len == 64
    assert paper.beam == [4, 4] and paper.dropouts == [0.2, 0.25, 0.35, 0.5]
    assert paper.tree.features == "centroids" and paper.tree.walk_len == 400  # graph-smoothed centroids
    with pytest.raises(ParamsError, match="walk_restart"):
        resolve_params({"tree.walk_restart": 2.0})
    assert resolve_params({}).encoder.frozen  # cpu
    # the saved (resolved) params resolve to themselves, so a run resumes with the same settings
    assert resolve_params(paper.to_dict()) == paper
    with pytest.raises(ParamsError, match="tree.features"):
        resolve_params({"tree.features": "words"})
    with pytest.raises(ParamsError, match="unknown field"):
        resolve_params({"beams": [3]})


# -- one training step -----------------------------------------------------------------------------
def _batch(backbone, ds, rows, soft=None, lam=0.5):
    inputs = backbone.batch_inputs(rows)
    y = ds.trn_Y.tocsr()[rows]
    return inputs, soft_targets(rows, y, None if soft is None else soft[rows], lam)


def test_teacher_forcing_keeps_every_positive(tiny_xc_dir, tiny_bert_dir, tmp_path):
    ds, backbone, module = _built(tiny_xc_dir, tiny_bert_dir, tmp_path, beam=[3, 4, 4])
    module.train()
    y = ds.trn_Y.tocsr()
    # rows whose positives fit the beam at every level (the condition upstream states too)
    rows = []
    for r in range(ds.num_train):
        labels = y[r].indices
        if len(labels) and all(len(np.unique(module.cluster_of(i)[labels])) <= 3 for i in range(3)):
            rows.append(r)
    rows = np.array(rows[:48])
    inputs, t = _batch(backbone, ds, rows)
    levels = backbone.training_levels(module, inputs, t, backbone.hooks)
    assert [lv.space for lv in levels] == [0, 1, 2, LABELS]
    for i, level in enumerate(levels[1:], start=1):
        space = LABELS if i == 3 else i
        for b, r in enumerate(rows):
            want = y[r].indices if space == LABELS else np.unique(module.cluster_of(i)[y[r].indices])
            assert set(want.tolist()) <= set(level.ids[b].tolist()), (i, r)
    # ... which the plain beam of inference (random weights) does not do
    module.eval()
    ids, _ = module(inputs)
    missed = sum(len(set(y[r].indices) - set(ids[b].tolist())) for b, r in enumerate(rows))
    assert missed > 0
    shares = backbone.shortlist_shares()
    assert [s["positives_reached"] for s in shares] == [1.0, 1.0, 1.0]


def test_encoder_layers_resolve_per_level(tiny_bert_dir):
    """Default: the last layer at every level; ``[]``: the paper's recipe (what the configs of
    runs made before the default changed hold, so they rebuild the same features); negative
    numbers count from the last layer; the last list repeats."""
    def layers(given=None):
        params = {} if given is None else {"encoder.layers": given}
        return CascadeXMLBackbone(params).level_layers(str(tiny_bert_dir), 4)[0]

    assert layers() == [[2], [2], [2], [2]]  # the tiny BERT has 2 layers
    assert layers([]) == [[1], [1], [1], [2]]  # the recipe scaled to depth 2
    assert layers([[1, -1], [-2]]) == [[1, 2], [1], [1], [1]]
    with pytest.raises(ValueError, match="outside 1..2"):
        layers([[3]])
    with pytest.raises(ParamsError, match="encoder.layers"):
        resolve_params({"encoder.layers": [[0]]})
    assert resolve_params({"preset": "paper"}).encoder.layers == []


def test_predict_beam_widens_inference_only(tiny_xc_dir, tiny_bert_dir, tmp_path):
    """``predict_beam`` changes the candidates of inference, not those of training."""
    ds, backbone, module = _built(tiny_xc_dir, tiny_bert_dir, tmp_path, beam=[2, 2, 2])
    _, wide_backbone, wide = _built(tiny_xc_dir, tiny_bert_dir, tmp_path, beam=[2, 2, 2], predict_beam=[8, 16, 32])
    wide.load_state_dict(module.state_dict())
    rows = np.arange(16)
    inputs, t = _batch(backbone, ds, rows)
    module.eval(), wide.eval()
    narrow_ids, narrow_scores = module(inputs)
    wide_ids, wide_scores = wide(inputs)
    assert narrow_ids.shape[1] < wide_ids.shape[1] == 32 * 2  # every label of 32 finest clusters
    for b in range(len(rows)):  # the narrow beam's labels and scores are among the wide one's
        got = dict(zip(wide_ids[b].tolist(), wide_scores[b].tolist()))
        for i, s in zip(narrow_ids[b].tolist(), narrow_scores[b].tolist()):
            if i >= 0:
                assert got[i] == pytest.approx(s)
    wide.train(), module.train()
    torch.manual_seed(1)
    a = backbone.training_levels(module, inputs, t, backbone.hooks)
    torch.manual_seed(1)
    b = wide_backbone.training_levels(wide, inputs, t, wide_backbone.hooks)
    assert all(torch.equal(x.ids, y.ids) if x.ids is not None else y.ids is None for x, y in zip(a, b))
    with pytest.raises(ParamsError, match="predict_beam"):
        resolve_params({"predict_beam": [0]})


def test_teacher_labels_enter_the_beam_after_the_positives(tiny_xc_dir, tiny_bert_dir, tmp_path):
    ds, backbone, module = _built(tiny_xc_dir, tiny_bert_dir, tmp_path, beam=[2, 2, 2])
    module.train()
    rows = np.arange(40)
    rng = np.random.default_rng(1)
    teacher = sp.csr_matrix((rng.random((40, 40)) > 0.9) * 0.8, dtype=np.float32)
    soft = sp.vstack([teacher, sp.csr_matrix((ds.num_train - 40, 40), dtype=np.float32)]).tocsr()
    inputs, t = _batch(backbone, ds, rows, soft)
    _, bare = _batch(backbone, ds, rows)
    with_teacher = backbone.training_levels(module, inputs, t, backbone.hooks)
    backbone.counts.zero_()
    without = backbone.training_levels(module, inputs, bare, backbone.hooks)
    for i in (1, 2, 3):
        space = LABELS if i == 3 else i
        lv_t, lv_b = with_teacher[i], without[i]
        pos = backbone.level_targets(module, Level(lv_b.logits, lv_b.ids, space), bare, backbone.hooks)
        tt = backbone.level_targets(module, Level(lv_t.logits, lv_t.ids, space), t, backbone.hooks)
        # positives kept as without a teacher (where they fit), teacher nodes more often than before
        assert pos.lookup(lv_t.ids).gt(0).sum() >= pos.lookup(lv_b.ids).gt(0).sum()
        teacher_only = tt.lookup(lv_t.ids).gt(0).sum() - pos.lookup(lv_t.ids).gt(0).sum()
        teacher_before = tt.lookup(lv_b.ids).gt(0).sum() - pos.lookup(lv_b.ids).gt(0).sum()
        assert teacher_only > teacher_before, i


def test_level_targets_are_the_projection_of_the_label_targets(tiny_xc_dir, tiny_bert_dir, tmp_path):
    from test_train_cli import _soft_labels

    from lever.soft_labels import SoftLabels

    soft = SoftLabels.load(_soft_labels(tiny_xc_dir, tmp_path / "soft.npz")).csr
    ds, backbone, module = _built(tiny_xc_dir, tiny_bert_dir, tmp_path, soft=soft[: 200])
    module.train()
    rows = np.arange(0, 200, 7)
    inputs, t = _batch(backbone, ds, rows, soft, lam=0.3)
    dense = t.to_dense()
    levels = backbone.training_levels(module, inputs, t, backbone.hooks)
    per_level = []
    for level in levels:
        got = backbone.level_targets(module, level, t, backbone.hooks)
        if level.is_labels:
            expect = dense
        else:  # brute force: a cluster's target is the max over its labels
            assign = module.cluster_of(level.space)
            expect = torch.zeros(len(rows), module.num_nodes(level.space))
            for c in range(expect.shape[1]):
                members = (assign == c).nonzero().flatten()
                if len(members):
                    expect[:, c] = dense[:, members].max(1).values
        torch.testing.assert_close(got.to_dense(), expect)
        per_level.append(got)
    # the loss the loop back-propagates is the BCE of every level against exactly these targets
    torch.manual_seed(5)
    loss = backbone.training_loss(module, inputs, t, backbone.loss_params, backbone.hooks)
    torch.testing.assert_close(loss, levels_bce(levels, per_level, "sum"))
    loss.backward()
    assert all(w.grad.abs().sum() > 0 for w in module.weights)


def test_teacher_aware_tree_moves_labels_the_teacher_relates_together(tiny_xc_dir, tiny_bert_dir, tmp_path):
    ds = XCDataset.load(tiny_xc_dir)
    # the teacher relates label pairs (2k, 2k+1) on every document of either label
    y = ds.trn_Y.tocsr()
    partner = np.arange(40) ^ 1
    soft = sp.csr_matrix((y.toarray()[:, partner] > 0).astype(np.float32))
    tree = {"leaf_size": 2, "branch_bits": 1, "features": "centroids"}

    def together(weight):
        _, _, module = _built(tiny_xc_dir, tiny_bert_dir, tmp_path, soft=soft,
                              tree={**tree, "teacher_weight": weight})
        leaf = module.cluster_of(2).numpy()
        return int((leaf == leaf[partner]).sum())

    assert together(50.0) > together(0.0)


def test_graph_smoothed_centroid_tree_builds_balanced(tiny_xc_dir, tiny_bert_dir, tmp_path):
    tree = {"leaf_size": 2, "branch_bits": 1, "features": "centroids", "walk_len": 30}
    _, _, module = _built(tiny_xc_dir, tiny_bert_dir, tmp_path, tree=tree)
    _, _, plain = _built(tiny_xc_dir, tiny_bert_dir, tmp_path, tree={**tree, "walk_len": 0})
    leaves = module.cluster_of(module.num_levels - 2).numpy()
    assert np.bincount(leaves).max() - np.bincount(leaves).min() <= 1
    assert not np.array_equal(leaves, plain.cluster_of(plain.num_levels - 2).numpy())  # the graph moved labels


# -- lever train, predict, resume, wrap ----------------------------------------------------------------
def _train(data, out, bert, cache, *extra) -> int:
    args = ["train", "--data", str(data), "--backbone", "cascadexml", "--out", str(out),
            "--cache-dir", str(cache), "--epochs", "2", "--batch-size", "32", "--seed", "3",
            "--warmup-steps", "2", "--no-progress"]
    for key, value in _bp(bert).items():
        if isinstance(value, dict):
            args += [x for k, v in value.items() for x in ("--bp", f"{key}.{k}={json.dumps(v)}")]
        else:
            args += ["--bp", f"{key}={json.dumps(value)}"]
    return main(args + list(extra))


def test_train_resume_predict_and_eval(tiny_xc_dir, tiny_bert_dir, tmp_path, capsys):
    from test_train_cli import _soft_labels

    soft = _soft_labels(tiny_xc_dir, tmp_path / "soft.npz")
    cache = tmp_path / "cache"
    lever = ("--soft-labels", str(soft), "--lam", "0.5")
    assert _train(tiny_xc_dir, tmp_path / "whole", tiny_bert_dir, cache, *lever) == 0
    assert _train(tiny_xc_dir, tmp_path / "parts", tiny_bert_dir, cache, *lever, "--stop-after-epochs", "1") == 0
    assert not (tmp_path / "parts" / "model.safetensors").exists()
    assert _train(tiny_xc_dir, tmp_path / "parts", tiny_bert_dir, cache, *lever) == 0
    whole, parts = (load_file(tmp_path / r / "model.safetensors") for r in ("whole", "parts"))
    assert whole.keys() == parts.keys() and {"codes", "leaf_labels"} <= whole.keys()  # tree saved
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key
    for name in ("metrics.json", STATS_FILE):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "parts" / name).read_text()
    shares = json.loads((tmp_path / "whole" / STATS_FILE).read_text())["levels"]
    assert len(shares) == 3 and all(s["teacher"] > 0 for s in shares)
    log = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]

    pred = tmp_path / "pred.npz"
    assert main(["predict", "--run", str(tmp_path / "whole"), "--out", str(pred), "--k", "5", "--no-progress"]) == 0
    ds = XCDataset.load(tiny_xc_dir)
    csr = sp.load_npz(pred).tocsr()
    assert csr.shape == (ds.num_test, ds.num_labels) and ds.tst_filter.multiply(csr).nnz == 0
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_xc_dir), "--pred", str(pred), "--k", "5", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    for key in ("P@1", "P@5", "PSP@5", "C@5"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_wrap_leaves_inference_and_weights_identical(tiny_xc_dir, tiny_bert_dir, tmp_path):
    import lever

    ds, _, module = _built(tiny_xc_dir, tiny_bert_dir, tmp_path, dropouts=[0.3])
    backbone = CascadeXMLBackbone(_bp(tiny_bert_dir))
    backbone.train_rows = None
    soft = sp.random(ds.num_train, ds.num_labels, density=0.05, random_state=0, format="csr", dtype=np.float32)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    wrapped = lever.wrap(module, soft, lam=0.5, reduction="sum")
    assert isinstance(wrapped.adapter, CascadeXMLBackbone)
    _, b2, _ = _built(tiny_xc_dir, tiny_bert_dir, tmp_path)
    inputs = b2.test_inputs(np.arange(20))
    for mode in ("eval", "train"):
        getattr(wrapped, mode)()
        torch.manual_seed(1)  # the same dropout masks in train mode
        got = wrapped(inputs)
        torch.manual_seed(1)
        want = module(inputs)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), mode
    assert wrapped.state_dict().keys() == module.state_dict().keys()
    rows = np.arange(16)
    loss = wrapped.loss(b2.batch_inputs(rows), rows, ds.trn_Y.tocsr()[rows])
    loss.backward()
    assert module.weights[-1].grad.abs().sum() > 0
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key  # training a step's loss changed no weight


def test_fine_tuned_encoder_feeds_each_level_from_its_own_layer(tiny_xc_dir, tiny_bert_dir, tmp_path):
    ds, backbone, module = _built(
        tiny_xc_dir, tiny_bert_dir, tmp_path,
        encoder={"model": str(tiny_bert_dir), "frozen": False, "pooling": "cls", "tfidf": False, "layers": []},
    )
    assert module.encoder is not None and module.encoder.layers == [1, 2]
    rows = np.arange(8)
    inputs, t = _batch(backbone, ds, rows)
    module.train()
    loss = backbone.training_loss(module, inputs, t, backbone.loss_params, backbone.hooks)
    loss.backward()
    groups = {g.name: g for g in backbone.param_groups(module)}
    assert {"classifier", "classifier_bias", "encoder", "encoder_no_decay"} == set(groups)
    assert all(p.grad is not None for p in groups["encoder"].params)


@pytest.mark.distributed
def test_two_processes_under_torchrun_equal_one(tiny_xc_dir, tiny_bert_dir, tmp_path):
    """``lever train`` on 2 gloo processes (batch 2 × 16) trains, evaluates and exports what one
    process does with batch 32 (dropout 0: ranks draw other masks than one process would)."""
    import os
    import subprocess
    import sys

    from test_train_cli import _soft_labels

    soft = _soft_labels(tiny_xc_dir, tmp_path / "soft.npz")
    cache = tmp_path / "cache"
    lever = ("--soft-labels", str(soft), "--lam", "0.5")
    assert _train(tiny_xc_dir, tmp_path / "one", tiny_bert_dir, cache, *lever) == 0
    args = ["--data", str(tiny_xc_dir), "--backbone", "cascadexml", "--out", str(tmp_path / "two"),
            "--cache-dir", str(cache), "--epochs", "2", "--batch-size", "16", "--seed", "3",
            "--warmup-steps", "2", "--no-progress", *lever]
    for key, value in _bp(tiny_bert_dir).items():
        if isinstance(value, dict):
            args += [x for k, v in value.items() for x in ("--bp", f"{key}.{k}={json.dumps(v)}")]
        else:
            args += ["--bp", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "lever", "train", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    one, two = (load_file(tmp_path / r / "model.safetensors") for r in ("one", "two"))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=2e-5, msg=key)
    m1, m2 = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    for key in m1:
        assert m2[key] == pytest.approx(m1[key], abs=1e-6), key


def test_candidate_scores_are_the_same_by_either_path(tiny_xc_dir, tiny_bert_dir, tmp_path, monkeypatch):
    from lever_adapters.cascadexml import model

    ds, backbone, module = _built(tiny_xc_dir, tiny_bert_dir, tmp_path)
    module.eval()
    feats = module.level_features(backbone.test_inputs(np.arange(30)))
    ids = torch.randint(0, ds.num_labels + 1, (30, 12))  # labels and the padding id
    shared = module.scores(3, feats[3], ids)
    monkeypatch.setattr(model, "UNIQUE_FACTOR", 0)  # every row gathers its own weight rows
    torch.testing.assert_close(module.scores(3, feats[3], ids), shared)


def test_random_walk_graph_stays_in_components_and_smoothing_normalises():
    from lever_adapters.cascadexml.label_graph import (
        keep_row_topk,
        random_walk_graph,
        smooth_label_features,
    )

    rng = np.random.default_rng(0)
    y = np.zeros((40, 12), dtype=np.float32)
    y[:20, :6] = rng.random((20, 6)) < 0.5  # labels 0-5 and 6-10 never share a document
    y[20:, 6:11] = rng.random((20, 5)) < 0.5
    y[0, :6] = y[20, 6:11] = 1.0  # every label but 11 has a document
    g = random_walk_graph(sp.csr_matrix(y), walk_len=50, restart=0.8, top_k=3, seed=1)
    again = random_walk_graph(sp.csr_matrix(y), walk_len=50, restart=0.8, top_k=3, seed=1)
    assert (g != again).nnz == 0  # seeded
    dense = g.toarray()
    assert np.all(np.diag(dense) >= 1) and dense[:6, 6:].sum() == 0 and dense[6:11, :6].sum() == 0
    assert dense[11].sum() == 1.0 and dense[11, 11] == 1.0  # no documents: itself only
    assert np.diff(g.indptr).max() <= 4  # top 3 + the diagonal
    feats = sp.csr_matrix(rng.random((12, 30)).astype(np.float32))
    smoothed = smooth_label_features(feats, g, keep=5)
    assert sp.issparse(smoothed) and np.diff(smoothed.indptr).max() == 5
    d = dense.sum(1)
    expected = (dense / np.sqrt(d)[:, None] / np.sqrt(dense.sum(0))[None, :]) @ feats.toarray()
    full = smooth_label_features(feats.toarray(), g)
    np.testing.assert_allclose(full, expected, rtol=1e-5)
    kept = keep_row_topk(sp.csr_matrix(expected), 5).toarray()
    np.testing.assert_allclose(smoothed.toarray(), kept, rtol=1e-5)
    with pytest.raises(ValueError, match="restart"):
        random_walk_graph(sp.csr_matrix(y), restart=1.5)
