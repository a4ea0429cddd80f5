"""A third party's two-level model (clusters of labels, then labels), trained in two stages, with
state outside its weights, installed as a real ``lever.adapters`` entry point: ``lever train``
trains it, a run stopped mid-stage resumes to the same weights, ``lever predict`` uses its own
top-k, and ``lever.wrap`` trains an existing model of it — with no line of lever for it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from lever.cli import main

TWO_LEVEL = '''
"""Two levels: 4 clusters of labels (assignment outside the weights), then the labels of the
2 best clusters. Stage "clusters" trains the cluster head alone; stage "labels" re-assigns labels
to clusters from the steps taken so far, then trains the label head on both levels."""
import zlib

import numpy as np
import torch
from torch import nn

from lever.hooks import Level, hookimpl
from lever.metrics.ranking import topk
from lever.train.backbone import Backbone, ParamGroup, Stage

DIM, CLUSTERS, KEEP = 32, 4, 2


def featurize(texts):
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, zlib.crc32(word.encode()) % DIM] += 1.0
    return out


class TwoLevel(nn.Module):
    def __init__(self, num_labels):
        super().__init__()
        self.clusters = nn.Linear(DIM, CLUSTERS)
        self.labels = nn.Linear(DIM, num_labels)

    def forward(self, x):
        return self.labels(x)


class TwoLevelBackbone(Backbone):
    name = "two-level"

    def __init__(self, params=None):
        super().__init__(params)
        self.stage, self.steps_seen, self.assign = None, 0, None

    @classmethod
    def accepts(cls, classifier):
        return isinstance(classifier, TwoLevel)

    def build(self, ctx):
        ds = ctx.dataset
        self.trn = featurize(list(ds.trn_texts) + list(ds.lbl_texts))
        self.tst = featurize(list(ds.tst_texts))
        return TwoLevel(ds.num_labels)

    def stages(self, module):
        def group(part):
            return [ParamGroup(part, list(getattr(module, part).parameters()), "adam", 0.05)]
        return [Stage("clusters", group("clusters"), epochs=2), Stage("labels", group("labels"))]

    def on_stage_start(self, module, stage):
        self.stage = stage.name
        if stage.name == "labels":
            self.assign = (torch.arange(module.labels.out_features) + self.steps_seen) % CLUSTERS

    def on_step_end(self, module, global_step):
        self.steps_seen += 1

    def extra_state(self, module):
        return {"stage": self.stage, "steps_seen": self.steps_seen, "assign": self.cluster_map(module, 0)[0]}

    def load_extra_state(self, module, state):
        self.stage, self.steps_seen, self.assign = state["stage"], state["steps_seen"], state["assign"]

    def cluster_map(self, module, level):
        if self.assign is None:
            self.assign = torch.arange(module.labels.out_features) % CLUSTERS
        return self.assign, CLUSTERS

    def batch_inputs(self, row_ids):
        return torch.from_numpy(self.trn[row_ids])

    def test_inputs(self, row_ids):
        return torch.from_numpy(self.tst[row_ids])

    def training_levels(self, module, x, targets, hooks):
        z_c = module.clusters(x)
        clusters = Level(z_c, space=0)
        if self.stage == "clusters":
            return [clusters]
        # keep the KEEP best clusters, true and teacher clusters forced in (lever_shortlist, in
        # the cluster id space with the cluster-level targets), then score their labels
        t_c = self.level_targets(module, clusters, targets, hooks)
        cand = torch.arange(CLUSTERS).expand(x.shape[0], CLUSTERS)
        keys = hooks.lever_shortlist(cand_ids=cand, cand_scores=z_c, targets=t_c, level=0)
        kept = cand.gather(1, keys.topk(KEEP, dim=1).indices)
        in_kept = (self.assign[None, None, :] == kept[:, :, None]).any(1)  # [B, L]
        ids = torch.where(in_kept, torch.arange(in_kept.shape[1]), -1)
        z_l = module.labels(x)
        return [clusters, Level(torch.where(in_kept, z_l, 0.0), ids)]

    @torch.no_grad()
    def predict_topk(self, module, inputs, k, num_labels, exclude=None, label_block=65536):
        assign = self.cluster_map(module, 0)[0]
        scores = module.labels(inputs) + nn.functional.logsigmoid(module.clusters(inputs))[:, assign]
        return topk(scores.numpy(), k, filter=exclude, num_labels=num_labels)


@hookimpl
def lever_register_backbones():
    return {TwoLevelBackbone.name: TwoLevelBackbone}


@hookimpl
def lever_adapter(classifier):
    return TwoLevelBackbone() if TwoLevelBackbone.accepts(classifier) else None
'''


def _train(data, out, *extra) -> None:
    args = ["train", "--data", str(data), "--backbone", "two-level", "--out", str(out),
            "--epochs", "3", "--batch-size", "50", "--seed", "1", "--warmup-steps", "1",
            "--no-label-rows", "--no-progress", *extra]
    assert main(args) == 0


@pytest.fixture
def two_level(install_plugin):
    install_plugin("lever_two_level", TWO_LEVEL, dist="lever-two-level", version="1.0")
    import lever_two_level

    return lever_two_level


def test_two_level_plugin_trains_resumes_mid_stage_and_predicts(two_level, tiny_xc_dir, tmp_path):
    from lever import XCDataset

    _train(tiny_xc_dir, tmp_path / "whole")
    # stopped after epoch 1 of the 2-epoch "clusters" stage, then rerun to the end
    _train(tiny_xc_dir, tmp_path / "parts", "--stop-after-epochs", "1")
    assert not (tmp_path / "parts" / "model.safetensors").exists()
    saved = torch.load(
        next((tmp_path / "parts" / "checkpoints").glob("step-*")) / "state.rank0.pt",
        weights_only=True,
    )
    assert saved["stage"] == 0 and saved["backbone"]["stage"] == "clusters"
    _train(tiny_xc_dir, tmp_path / "parts")

    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    parts = load_file(str(tmp_path / "parts" / "model.safetensors"))
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key
    assert (tmp_path / "whole" / "metrics.json").read_text() == (
        tmp_path / "parts" / "metrics.json"
    ).read_text()
    log = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    # each stage steps its own optimizer group only, on its own schedule
    assert [sorted(r["lr"]) for r in log] == [["clusters"], ["clusters"], ["labels"]]

    # lever predict goes through the plugin's own top-k (it has no label-block scorer)
    pred = tmp_path / "pred.npz"
    assert main(["predict", "--run", str(tmp_path / "whole"), "--out", str(pred), "--k", "5",
                 "--no-progress"]) == 0
    csr = sp.load_npz(pred)
    ds = XCDataset.load(tiny_xc_dir)
    assert csr.shape == (ds.num_test, ds.num_labels) and (csr.getnnz(axis=1) == 5).all()
    assert ds.tst_filter.multiply(csr).nnz == 0  # the filter reached its top-k


def test_two_level_stage_plan_misfit_is_a_clear_error(two_level, tiny_xc_dir, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_xc_dir), "--backbone", "two-level", "--out",
                 str(tmp_path / "r"), "--epochs", "1", "--no-progress"]) == 2
    assert "stages (clusters: 2, labels: rest) do not fit TrainParams.optim.epochs=1" in capsys.readouterr().err


def test_lever_wrap_trains_an_existing_two_level_model(two_level):
    import lever
    from lever.loss import levels_bce, project_targets, soft_targets

    torch.manual_seed(0)
    model = two_level.TwoLevel(6)
    wrapped = lever.wrap(model, reduction="sum")
    assert isinstance(wrapped.adapter, two_level.TwoLevelBackbone)
    x = torch.randn(3, two_level.DIM)
    y = sp.csr_matrix(np.eye(3, 6, k=1, dtype=np.float32))
    loss = wrapped.loss(x, [0, 1, 2], y)
    # both levels (no stage: the wrapped model trains like the "labels" stage), cluster targets
    # projected through the label -> cluster map
    t = soft_targets([0, 1, 2], y)
    assign = torch.arange(6) % 4
    levels = two_level.TwoLevelBackbone().training_levels(model, x, t, wrapped.hooks)
    assert [lv.space for lv in levels] == [0, "labels"] and levels[1].is_shortlist
    expect = levels_bce(levels, [project_targets(t, assign, 4), t], "sum")
    torch.testing.assert_close(loss, expect)
    loss.backward()
    assert model.labels.weight.grad.abs().sum() > 0 and model.clusters.weight.grad.abs().sum() > 0
    assert torch.equal(wrapped(x), model(x))  # predicting is the model, unchanged
