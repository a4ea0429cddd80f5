"""Renée end to end: plugin discovery through the entry point, the TF-IDF featuriser, exact
blockwise top-k with filters, and ``lever train`` / prediction of a Renée run (with LEVER soft
labels) on a small synthetic dataset."""

from __future__ import annotations

import importlib.metadata as md
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lever.data import XCDataset, synthetic_dataset, write_dataset
from lever_adapters.renee.params import ReneeParams


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("renee_syn")
    write_dataset(d, **synthetic_dataset(num_train=150, num_test=40, num_labels=24))
    return d


def test_plugin_is_found_through_the_entry_point():
    from lever.hooks import get_plugin_manager
    from lever.hooks.registry import get_backbone_class

    eps = {ep.name: ep.value for ep in md.entry_points(group="lever.adapters")}
    assert eps.get("renee") == "lever_adapters.renee.plugin"
    cls = get_backbone_class("renee", get_plugin_manager())
    assert cls.__module__ == "lever_adapters.renee.train" and cls.name == "renee"
    with pytest.raises(ValueError, match=r"backbone 'renee': not registered; available: \[\]"):
        get_backbone_class("renee", get_plugin_manager(load_entry_points=False))


def test_tfidf_featuriser_is_deterministic_and_round_trips(tmp_path):
    from lever_adapters.renee.features import TfidfFeaturizer

    texts = ["red apple pie", "green apple", "apple tree in the garden", "garden party", "red wine"]
    a = TfidfFeaturizer(max_features=6, min_df=1).fit(texts)
    b = TfidfFeaturizer(max_features=6, min_df=1).fit(list(texts))
    assert a.vocab_size == 6
    assert (a.transform(texts) != b.transform(texts)).nnz == 0
    a.save(tmp_path / "tfidf.json")
    c = TfidfFeaturizer.load(tmp_path / "tfidf.json")
    np.testing.assert_allclose(
        c.transform(["apple garden unseen"]).toarray(),
        a.transform(["apple garden unseen"]).toarray(),
    )
    (tmp_path / "bad.json").write_text(
        '{"vocabulary": ["a"], "idf": [1, 2], "max_features": 1, "ngram_max": 1, "min_df": 1}'
    )
    with pytest.raises(ValueError, match="bad.json"):
        TfidfFeaturizer.load(tmp_path / "bad.json")


def test_blockwise_topk_with_filter_equals_brute_force(syn_dir):
    from lever.train.backbone import BuildContext
    from lever.train.distributed import DistEnv
    from lever_adapters.renee.train import ReneeBackbone

    ds = XCDataset.load(syn_dir)
    bb = ReneeBackbone({"encoder": {"kind": "tfidf", "tfidf_min_df": 1}, "predict_label_block": 5})
    module = bb.build(BuildContext(ds, None, None, torch.device("cpu"), DistEnv(), syn_dir)).eval()
    rows = np.arange(ds.num_test)
    inputs = bb.test_inputs(rows)
    exclude = ds.tst_filter
    assert exclude is not None and exclude.nnz > 0
    idx, scores = bb.predict_topk(module, inputs, 7, ds.num_labels, exclude)
    with torch.no_grad():
        z = module(inputs).double()
    z[
        torch.from_numpy(exclude.tocoo().row).long(), torch.from_numpy(exclude.tocoo().col).long()
    ] = -np.inf
    ref = torch.topk(z, 7, dim=1)
    np.testing.assert_array_equal(idx, ref.indices.numpy())
    np.testing.assert_allclose(scores, ref.values.numpy(), rtol=1e-5, atol=1e-6)  # logits
    assert (
        not sp.csr_matrix(
            (np.ones(idx.size), (np.repeat(rows, 7), idx.ravel())), shape=exclude.shape
        )
        .multiply(exclude)
        .nnz
    )


def test_lever_train_renee_with_soft_labels_then_predict(syn_dir, tmp_path):
    from lever.soft_labels import SoftLabels
    from lever.train.loop import load_trained, train
    from lever.train.params import LeverParams, OptimParams, TrainParams
    from lever.train.predict import predict_topk

    ds = XCDataset.load(syn_dir)
    n, L = ds.num_train, ds.num_labels
    teacher = sp.random(n + L, L, density=0.05, random_state=0, format="csr", dtype=np.float32)
    soft_path = tmp_path / "soft.npz"
    SoftLabels.from_csr(teacher, meta={"dataset_fingerprint": ds.fingerprint()}).save(soft_path)
    params = TrainParams(
        data=str(syn_dir),
        backbone="renee",
        out=str(tmp_path / "run"),
        optim=OptimParams(epochs=3, batch_size=32, warmup_steps=2),
        lever=LeverParams(soft_labels=str(soft_path)),
        backbone_params={
            "encoder": {"kind": "tfidf", "tfidf_min_df": 1, "dropout": 0.3},
            "loss_every": 1,
        },
    )
    result = train(params, progress=False)
    assert result.finished
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["lever"]["label_rows"] is True  # soft labels turn label rows on
    assert cfg["backbone_params"]["lr_clf"] == ReneeParams().lr_clf  # every setting saved
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]  # it learns (loss_every=1: every step's loss)
    backbone, module, _, ds2 = load_trained(tmp_path / "run", device="cpu")
    idx, _ = predict_topk(
        backbone,
        module,
        ds2.num_test,
        ds2.num_labels,
        5,
        torch.device("cpu"),
        exclude=ds2.tst_filter,
        progress=False,
    )
    from lever.metrics import evaluate, inverse_propensity

    inv = inverse_propensity(ds2.trn_Y, ds2.meta.propensity_a, ds2.meta.propensity_b)
    again = evaluate(ds2.tst_Y, (idx, None), inv, k=5, filter=ds2.tst_filter)
    assert again["P@1"] == pytest.approx(result.metrics["P@1"])


def test_transformer_encoder_is_fine_tuned_through_the_hand_written_backward(
    syn_dir, tiny_bert_dir, tmp_path
):
    """kind=transformer: masked mean pooling + bottleneck + dropout, trained end to end; the CLI's
    flat ``encoder.*`` keys and ``--encoder PATH`` reach the nested encoder settings."""
    from safetensors.torch import load_file

    from lever.train.loop import train
    from lever.train.params import OptimParams, RunParams, TrainParams
    from lever_adapters.renee.train import ReneeBackbone

    bb = ReneeBackbone(
        {"encoder": str(tiny_bert_dir), "encoder.kind": "transformer", "encoder.bottleneck": 8}
    )
    assert (bb.params.encoder.model, bb.params.encoder.kind, bb.params.encoder.bottleneck) == (
        str(tiny_bert_dir),
        "transformer",
        8,
    )
    params = TrainParams(
        data=str(syn_dir),
        backbone="renee",
        out=str(tmp_path / "run"),
        optim=OptimParams(epochs=1, batch_size=32),
        run=RunParams(seed=1),
        backbone_params={
            "encoder": {
                "kind": "transformer",
                "model": str(tiny_bert_dir),
                "max_len": 16,
                "bottleneck": 8,
                "dropout": 0.6,
            },
            "lr_enc": 1e-3,
        },
    )
    assert train(params, progress=False).finished
    trained = load_file(tmp_path / "run" / "model.safetensors")
    from transformers import AutoModel

    start = AutoModel.from_pretrained(tiny_bert_dir).state_dict()[
        "encoder.layer.0.attention.self.query.weight"
    ]
    after = trained["head.parts.tokens.model.encoder.layer.0.attention.self.query.weight"]
    assert not torch.allclose(start, after)  # the encoder itself was updated
    assert trained["head.bottleneck.weight"].shape == (8, 32)


def test_lever_wrap_on_a_renee_module_gives_the_soft_target_gradient(syn_dir):
    """lever.wrap(renee_module, soft_labels): the Renée adapter is chosen, the loss is the fused
    summed BCE against t = λ·y + (1−λ)·p̂, and the module itself is unchanged for inference."""
    import lever
    from lever.train.backbone import BuildContext
    from lever.train.distributed import DistEnv
    from lever_adapters.renee.train import ReneeBackbone

    ds = XCDataset.load(syn_dir)
    bb = ReneeBackbone(
        {"encoder": {"kind": "tfidf", "tfidf_min_df": 1, "bag_dim": 8, "dropout": 0.0}}
    )
    module = bb.build(BuildContext(ds, None, None, torch.device("cpu"), DistEnv(), syn_dir))
    soft = sp.random(
        ds.num_train, ds.num_labels, density=0.1, random_state=2, format="csr", dtype=np.float32
    )
    wrapped = lever.wrap(module, soft, lam=0.5, reduction="sum")
    assert isinstance(wrapped.adapter, ReneeBackbone)
    rows = np.arange(10)
    inputs = bb.test_inputs(rows)
    y = ds.trn_Y[rows]
    wrapped.loss(inputs, rows, y).backward()
    got = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    t = torch.from_numpy((0.5 * (y > 0).astype(np.float32) + 0.5 * soft[rows]).toarray())
    torch.nn.functional.binary_cross_entropy_with_logits(
        module(inputs), t, reduction="sum"
    ).backward()
    for n, p in module.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(inputs), module(inputs))
