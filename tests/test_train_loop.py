"""The shared training loop on the tiny synthetic dataset with the generic backbone (frozen tiny
BERT embeddings): end to end, resume equality, gradient accumulation equality, soft labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from lever.train import TrainParams, train


def _params(data, out, encoder, cache, **kw) -> TrainParams:
    base = {
        "data": str(data),
        "backbone": "generic",
        "out": str(out),
        "epochs": 2,
        "batch_size": 32,
        "seed": 3,
        "cache_dir": str(cache),
        "backbone_params": {"encoder": str(encoder)},
        "eval_every": 1,
    }
    base.update(kw)
    return TrainParams.from_dict(base)  # flag names at the top level: placed into lever/optim/run


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emb_cache")


@pytest.fixture(scope="module")
def tiny_soft_labels(tiny_xc_dir, tmp_path_factory):
    """Teacher-like soft labels: every positive scored, plus random extra pairs, all in [0, 1]."""
    from lever import XCDataset
    from lever.soft_labels import SoftLabels

    ds = XCDataset.load(tiny_xc_dir)
    Y = ds.with_label_rows().Y.tocsr()
    rng = np.random.default_rng(0)
    extra = sp.random(
        Y.shape[0], Y.shape[1], density=0.05, random_state=1, format="csr", dtype=np.float32
    )
    pos = Y.copy().astype(np.float32)
    pos.data = rng.uniform(0.5, 1.0, size=pos.nnz).astype(np.float32)
    soft = pos.maximum(extra * 0.6).tocsr()
    path = tmp_path_factory.mktemp("soft") / "soft.npz"
    SoftLabels.from_csr(
        soft, meta={"dataset_fingerprint": ds.fingerprint(), "dataset": ds.name}
    ).save(path)
    return path


def test_train_end_to_end_writes_run_folder(tiny_xc_dir, tiny_bert_dir, cache_dir, tmp_path):
    from lever import XCDataset
    from lever.metrics import evaluate, inverse_propensity
    from lever.train import load_trained, predict_topk, topk_to_csr

    out = tmp_path / "run"
    res = train(_params(tiny_xc_dir, out, tiny_bert_dir, cache_dir), progress=False)
    assert res.finished and res.epochs_done == 2
    config = json.loads((out / "config.json").read_text())
    assert config["backbone"] == "generic" and config["backbone_params"]["bias"] is True  # resolved
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all("test" in r and r["loss"] > 0 for r in log)
    assert log[1]["loss"] < log[0]["loss"]  # it learns
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "model.safetensors").exists()

    # metrics.json is exactly `evaluate` (the numbers `lever eval --json` prints) of the model's
    # own filtered top-k predictions.
    backbone, module, _, ds = load_trained(out)
    idx, scores = predict_topk(
        backbone,
        module,
        ds.num_test,
        ds.num_labels,
        5,
        torch.device("cpu"),
        exclude=ds.tst_filter,
        progress=False,
    )
    ds = XCDataset.load(tiny_xc_dir)
    inv = inverse_propensity(ds.trn_Y, ds.meta.propensity_a, ds.meta.propensity_b)
    expected = evaluate(
        ds.tst_Y, topk_to_csr(idx, scores, ds.num_labels), inv, k=5, filter=ds.tst_filter
    )
    assert set(metrics) == set(expected)
    for key in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@5", "PSnDCG@5", "R@5", "C@5"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6)


@pytest.mark.parametrize("schedule", ["cosine", "one_cycle"])
def test_resume_reaches_the_same_weights(
    tiny_xc_dir, tiny_bert_dir, cache_dir, tiny_soft_labels, tmp_path, schedule
):
    kw = {"soft_labels": str(tiny_soft_labels), "warmup_steps": 3, "eval_every": 2, "schedule": schedule}
    straight = tmp_path / "straight"
    train(_params(tiny_xc_dir, straight, tiny_bert_dir, cache_dir, **kw), progress=False)

    resumed = tmp_path / "resumed"
    first = train(
        _params(tiny_xc_dir, resumed, tiny_bert_dir, cache_dir, **kw),
        stop_after_epochs=1,
        progress=False,
    )
    assert not first.finished and first.epochs_done == 1
    assert not (resumed / "model.safetensors").exists()
    # The second invocation picks up the epoch-1 checkpoint (optimizer moments, schedule, RNG).
    second = train(_params(tiny_xc_dir, resumed, tiny_bert_dir, cache_dir, **kw), progress=False)
    assert second.finished

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert json.loads((straight / "metrics.json").read_text()) == json.loads(
        (resumed / "metrics.json").read_text()
    )


def test_resume_refuses_a_changed_config(tiny_xc_dir, tiny_bert_dir, cache_dir, tmp_path):
    out = tmp_path / "run"
    train(
        _params(tiny_xc_dir, out, tiny_bert_dir, cache_dir, epochs=2, eval_every=2),
        stop_after_epochs=1,
        progress=False,
    )
    with pytest.raises(RuntimeError, match="lr"):
        train(_params(tiny_xc_dir, out, tiny_bert_dir, cache_dir, epochs=2, lr=0.5), progress=False)


def test_gradient_accumulation_equals_the_larger_batch(
    tiny_xc_dir, tiny_bert_dir, cache_dir, tmp_path
):
    kw = {"epochs": 1, "eval_every": 1, "label_rows": True}
    train(
        _params(tiny_xc_dir, tmp_path / "big", tiny_bert_dir, cache_dir, batch_size=32, **kw),
        progress=False,
    )
    train(
        _params(
            tiny_xc_dir,
            tmp_path / "acc",
            tiny_bert_dir,
            cache_dir,
            batch_size=16,
            grad_accum=2,
            **kw,
        ),
        progress=False,
    )
    train(
        _params(tiny_xc_dir, tmp_path / "small", tiny_bert_dir, cache_dir, batch_size=16, **kw),
        progress=False,
    )
    big, acc, small = (
        load_file(tmp_path / n / "model.safetensors") for n in ("big", "acc", "small")
    )
    for key in big:
        torch.testing.assert_close(acc[key], big[key], rtol=0, atol=1e-6)
    # and the comparison can fail: batch 16 without accumulation is a different optimisation
    assert not torch.allclose(small["weight"], big["weight"], atol=1e-4)


def test_soft_labels_enter_training_by_lambda_and_need_label_rows(
    tiny_xc_dir, tiny_bert_dir, cache_dir, tiny_soft_labels, tmp_path
):
    from lever.train.loop import load_train_rows

    p = _params(
        tiny_xc_dir, tmp_path / "x", tiny_bert_dir, cache_dir, soft_labels=str(tiny_soft_labels)
    ).validate()
    assert p.lever.label_rows is True
    from lever import XCDataset

    ds = XCDataset.load(tiny_xc_dir)
    rows = load_train_rows(ds, p)
    assert rows.num_rows == ds.num_train + ds.num_labels and rows.soft.shape == rows.Y.shape
    docs_only = load_train_rows(ds, p.replace(lever={"label_rows": False}))
    assert docs_only.num_rows == ds.num_train and docs_only.soft.shape == (
        ds.num_train,
        ds.num_labels,
    )

    # λ = 1 makes the soft targets the ground truth: the same model as training without them;
    # λ = 0.5 lets the teacher in: a different one.
    kw = {"epochs": 1, "eval_every": 1}
    runs = {
        "hard": {"label_rows": True},
        "lam1": {"soft_labels": str(tiny_soft_labels), "lam": 1.0},
        "lam05": {"soft_labels": str(tiny_soft_labels), "lam": 0.5},
    }
    weights = {}
    for name, extra in runs.items():
        train(_params(tiny_xc_dir, tmp_path / name, tiny_bert_dir, cache_dir, **extra, **kw),
              progress=False)
        weights[name] = load_file(tmp_path / name / "model.safetensors")["weight"]
    torch.testing.assert_close(weights["lam1"], weights["hard"], rtol=0, atol=1e-6)
    assert (weights["lam05"] - weights["hard"]).abs().max() > 1e-3


def test_generic_on_a_teacher_folders_embeddings(tiny_xc_dir, tiny_bert_dir, cache_dir, tmp_path):
    from lever import XCDataset
    from lever.soft_labels import write_zero_shot_teacher
    from lever.train.embeddings import frozen_embeddings

    ds = XCDataset.load(tiny_xc_dir)
    teacher = write_zero_shot_teacher(
        ds, tmp_path / "teacher", encoder=str(tiny_bert_dir), progress=False
    )
    p = _params(
        tiny_xc_dir,
        tmp_path / "run",
        tiny_bert_dir,
        cache_dir,
        epochs=1,
        backbone_params={"embeddings": str(teacher)},
    )
    assert train(p, progress=False).finished
    assert not (tmp_path / "run" / "cache").exists()  # nothing encoded
    # the same frozen features as the encoder's own cache, up to the teacher's token limit
    own = frozen_embeddings(ds, cache_dir, str(tiny_bert_dir), ("lbl",))["lbl"]
    np.testing.assert_allclose(np.load(teacher / "embeddings" / "lbl.npy"), own, atol=1e-4)

    other = XCDataset.load(tiny_xc_dir)
    other.lbl_texts = other.lbl_texts[:-1]
    with pytest.raises(ValueError, match="another dataset"):
        frozen_embeddings(other, cache_dir, teacher_dir=teacher)


def test_resume_after_a_crash_mid_epoch(
    tiny_xc_dir, tiny_bert_dir, cache_dir, monkeypatch, tmp_path
):
    from lever_adapters.generic.backbone import GenericBackbone

    kw = {
        "epochs": 2,
        "batch_size": 16,
        "checkpoint_every_steps": 4,
        "eval_every": 2,
        "label_rows": True,
    }
    train(
        _params(tiny_xc_dir, tmp_path / "straight", tiny_bert_dir, cache_dir, **kw), progress=False
    )

    calls = {"n": 0}
    original = GenericBackbone.forward_backward

    def crash_at_step_22(self, module, batch, amp):
        calls["n"] += 1
        if calls["n"] == 22:  # epoch 2 (15 steps per epoch), after the step-20 checkpoint
            raise KeyboardInterrupt
        return original(self, module, batch, amp)

    monkeypatch.setattr(GenericBackbone, "forward_backward", crash_at_step_22)
    with pytest.raises(KeyboardInterrupt):
        train(
            _params(tiny_xc_dir, tmp_path / "crashed", tiny_bert_dir, cache_dir, **kw),
            progress=False,
        )
    latest = (tmp_path / "crashed" / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-000000020"
    monkeypatch.setattr(GenericBackbone, "forward_backward", original)
    train(
        _params(tiny_xc_dir, tmp_path / "crashed", tiny_bert_dir, cache_dir, **kw), progress=False
    )

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "crashed" / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = [
        json.loads(line)
        for line in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    ]
    straight_log = [
        json.loads(line)
        for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert log[-1]["loss"] == pytest.approx(
        straight_log[-1]["loss"], rel=1e-9
    )  # epoch loss carried over


def test_dataloader_workers_build_the_same_batches(tiny_xc_dir, tiny_bert_dir, cache_dir, tmp_path):
    kw = {"epochs": 1, "eval_every": 1, "batch_size": 64}
    train(_params(tiny_xc_dir, tmp_path / "w0", tiny_bert_dir, cache_dir, **kw), progress=False)
    train(
        _params(tiny_xc_dir, tmp_path / "w2", tiny_bert_dir, cache_dir, num_workers=2, **kw),
        progress=False,
    )
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in ("w0", "w2"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
