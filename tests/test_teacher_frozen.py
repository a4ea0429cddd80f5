"""The frozen-feature teacher (a tower over cached frozen embeddings) on tiny data with the tiny
random BERT as the frozen encoder: it learns, resumes bit-exactly, and the one teacher-folder
reader serves `lever teacher eval` for every kind, with clear errors for bad folders."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from teacher_resume import assert_same_runs, crash_then_resume

from lever.cli import main
from lever.data import XCDataset
from lever.teacher.folder import TeacherFolder, TeacherFolderError
from lever.teacher.frozen import FrozenTeacher, apply_tower, load_tower
from lever.teacher.params import TeacherParams, preset
from lever.teacher.train import train_teacher


@pytest.fixture(scope="module")
def ds(tiny_xc_dir):
    return XCDataset.load(tiny_xc_dir)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, ds, tiny_bert_dir):
    """Precomputed frozen features in the encoder cache (the files lever.encoders.cached_embeddings
    reads), so the tests spend no encoder time. The tiny random BERT's own embeddings carry no
    signal about the synthetic labels (mean pairwise cosine 0.99, nothing learnable), so the
    features are made informative: a document is its labels' mean prototype plus noise."""
    import hashlib

    from lever.encoders import resolve_encoder_path, texts_fingerprint

    out = tmp_path_factory.mktemp("frozen_cache")
    rng = np.random.default_rng(0)
    proto = rng.normal(size=(ds.num_labels, 32))

    def docs(Y):
        Y = Y.tocsr()
        rows = [proto[Y.indices[Y.indptr[i] : Y.indptr[i + 1]]].mean(0) for i in range(Y.shape[0])]
        return np.stack(rows) + rng.normal(size=(Y.shape[0], 32))

    feats = {"lbl": proto + 0.5 * rng.normal(size=proto.shape), "trn": docs(ds.trn_Y), "tst": docs(ds.tst_Y)}
    texts = {"lbl": ds.lbl_texts, "trn": ds.trn_texts, "tst": ds.tst_texts}
    enc = resolve_encoder_path(str(tiny_bert_dir))
    folder = out / ("embeddings-" + hashlib.sha256(f"{enc}|max_len=16".encode()).hexdigest()[:10])
    folder.mkdir()
    for split, f in feats.items():
        name = folder / f"{split}-{texts_fingerprint(texts[split])[:12]}.npy"
        np.save(name, (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32))
        key = {"encoder": enc, "n": len(texts[split]), "texts_sha256": texts_fingerprint(texts[split]), "max_len": 16}
        name.with_name(name.name + ".json").write_text(json.dumps(key))
    return out


def _params(tiny_bert_dir, cache, **kw) -> TeacherParams:
    base = preset("frozen-cpu").to_dict() | {
        "encoder": str(tiny_bert_dir),
        "max_len": 16,
        "epochs": 6,
        "batch_size": 64,
        "hidden": 64,
        "lr": 3e-3,
        "warmup_steps": 2,
        "cl_size": 4,
        "cache_dir": str(cache),
    }
    return TeacherParams(**(base | kw))


def _pair_recall(doc: np.ndarray, lbl: np.ndarray, Y, k: int = 5) -> float:
    """Fraction of the training (document, label) pairs whose label is in the document's top k."""
    top = np.argsort(-(doc @ lbl.T), axis=1)[:, :k]
    Y = Y.tocsr()
    hits = sum(len(set(Y.indices[Y.indptr[i] : Y.indptr[i + 1]]) & set(top[i])) for i in range(len(doc)))
    return hits / Y.nnz


def test_tower_learns_and_writes_the_folder(ds, tiny_bert_dir, cache, tmp_path):
    out = tmp_path / "T"
    params = _params(tiny_bert_dir, cache)
    final = train_teacher(ds, params, out, progress=False)
    assert {"P@1", "PSP@5", "C@5", "R@100"} <= set(final)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 6 and all(b < a for a, b in itertools.pairwise(losses))
    assert params.loss == "softmax" and not any(r.get("clustered") for r in records)  # the defaults
    emb = {s: np.load(out / "embeddings" / f"{s}.npy") for s in ("trn", "tst", "lbl")}
    for s, n in (("trn", ds.num_train), ("tst", ds.num_test), ("lbl", ds.num_labels)):
        assert emb[s].dtype == np.float32 and emb[s].shape[0] == n
        np.testing.assert_allclose(np.linalg.norm(emb[s], axis=1), 1.0, atol=1e-5)
    meta = json.loads((out / "embeddings" / "meta.json").read_text())
    assert meta["kind"] == "frozen" and meta["fingerprint"] == ds.fingerprint()
    assert TeacherParams.load(out / "config.json") == params
    # tower.safetensors + the cached features reproduce the exported embeddings
    trainer = FrozenTeacher(params, ds, out, progress=False)
    feats = trainer.features(("lbl",))["lbl"]
    np.testing.assert_allclose(apply_tower(load_tower(out / "tower.safetensors"), feats), emb["lbl"], atol=1e-6)
    # better on its training pairs than the untrained tower (= the frozen features themselves)
    trn_feats = np.asarray(trainer.features(("trn",))["trn"])
    before = _pair_recall(trn_feats, np.asarray(feats), ds.trn_Y)
    after = _pair_recall(emb["trn"], emb["lbl"], ds.trn_Y)
    assert after > before + 0.1, (before, after)
    # not collapsed (Eq. 9's failure on FOLDOC: every label embedding along one direction)
    assert float((emb["lbl"] @ emb["lbl"].T).mean()) < 0.5


def test_pair_clustering_orders_whole_documents(ds, tiny_bert_dir, cache, tmp_path):
    """Clustered pair batches cluster the documents and emit all pairs of a document together:
    a permutation of the pair items, each document's pairs contiguous."""
    trainer = FrozenTeacher(_params(tiny_bert_dir, cache, cl_start=1), ds, tmp_path, progress=False)
    order = trainer._epoch_order(1, np.random.default_rng(0))
    b = trainer.batcher
    assert np.array_equal(np.sort(order), np.arange(len(b)))
    docs = b.inputs[order]
    assert len(np.unique(docs)) == np.count_nonzero(np.diff(docs)) + 1  # one run per document
    assert sum(len(c) for c in trainer.clusters) == len(np.unique(b.inputs))


@pytest.mark.parametrize(
    "kw",
    [
        {"batch_type": "label"},
        {"batch_type": "doc", "cl_start": 0},
        {"loss": "pairwise-logistic", "cl_start": 1},
    ],
)
def test_other_losses_and_batches_run(ds, tiny_bert_dir, cache, tmp_path, kw):
    final = train_teacher(ds, _params(tiny_bert_dir, cache, epochs=2, **kw), tmp_path / "T", progress=False)
    assert final["R@100"] > 0


def test_resume_mid_epoch_equals_uninterrupted(ds, tiny_bert_dir, cache, tmp_path, monkeypatch):
    """Interrupted inside epoch 2, which re-clusters (cl_start 1, cl_update 2, 0-based), after a
    mid-epoch checkpoint: re-clustering on resume would use the tower as it is now, not as it was
    when the epoch began, so the epoch's order must come back from the checkpoint, and epoch 3
    reuses the clusters, which must come back too."""
    params = _params(tiny_bert_dir, cache, epochs=4, cl_start=1, cl_update=2)
    train_teacher(ds, params, tmp_path / "A", progress=False)
    steps = json.loads((tmp_path / "A" / "metrics.jsonl").read_text().splitlines()[0])["global_step"]
    assert steps >= 4
    crash_then_resume(
        monkeypatch, FrozenTeacher, steps + 3,  # epoch 2, after the checkpoint of its step 2
        lambda resume: train_teacher(
            ds, params, tmp_path / "B", resume=resume, progress=False, checkpoint_every_steps=1
        ),
    )
    assert_same_runs(tmp_path / "A", tmp_path / "B", "tower.safetensors")


def test_teacher_eval_reads_every_kind(ds, tiny_xc_dir, tiny_bert_dir, cache, tmp_path, capsys):
    zs = tmp_path / "zs"
    assert main(["soft-labels", "zero-shot-teacher", "--data", str(tiny_xc_dir), "--out", str(zs),
                 "--encoder", str(tiny_bert_dir), "--max-len", "16"]) == 0
    assert TeacherFolder.read(zs).kind == "zero-shot"
    capsys.readouterr()
    assert main(["teacher", "eval", "--data", str(tiny_xc_dir), "--teacher", str(zs), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"P@1", "PSP@5", "C@1", "C@5", "R@100"} <= set(metrics)
    # a frozen teacher whose exported embeddings are gone is re-embedded from its tower
    fr = tmp_path / "fr"
    final = train_teacher(ds, _params(tiny_bert_dir, cache, epochs=2), fr, progress=False)
    for split in ("lbl", "tst"):
        (fr / "embeddings" / f"{split}.npy").unlink()
    assert main(["teacher", "eval", "--data", str(tiny_xc_dir), "--teacher", str(fr), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["P@1"] == pytest.approx(final["P@1"]) and again["PSP@5"] == pytest.approx(final["PSP@5"])
    assert main(["soft-labels", "build", "--data", str(tiny_xc_dir), "--teacher", str(zs),
                 "--out", str(tmp_path / "soft.npz")]) == 0


def test_bad_folders_say_what_is_wrong(ds, tiny_xc_dir, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="teacher folder .*nope not found"):
        TeacherFolder.read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherFolderError, match="neither config.json nor embeddings"):
        TeacherFolder.read(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"kind": "magic"}))
    with pytest.raises(TeacherFolderError, match=r"config.json: field 'kind' = 'magic'"):
        TeacherFolder.read(bad)
    (bad / "config.json").write_text(json.dumps({"kind": "frozen", "hidden": 0}))
    with pytest.raises(TeacherFolderError, match=r"config.json: field 'hidden' = 0; expected >= 1"):
        TeacherFolder.read(bad)
    (bad / "config.json").write_text(json.dumps({"kind": "frozen"}))
    rc = main(["teacher", "eval", "--data", str(tiny_xc_dir), "--teacher", str(bad)])
    assert rc == 2 and "tower.safetensors: missing" in capsys.readouterr().err


def test_cli_kind_and_presets(tmp_path, capsys):
    assert main(["teacher", "train", "--kind", "frozen", "--print-params"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["kind"] == "frozen" and p["batch_type"] == "pair" and p["loss"] == "softmax"
    assert main(["teacher", "train", "--kind", "finetune", "--print-params"]) == 0
    assert json.loads(capsys.readouterr().out) == TeacherParams().to_dict()
    assert preset("lf-wikipedia-500k").kind == "finetune"
    assert main(["teacher", "train", "--kind", "frozen", "--preset", "lf-aol-270k", "--print-params"]) == 2
    assert "contradicts" in capsys.readouterr().err
    with pytest.raises(Exception, match="'pair' is a frozen-teacher batch type"):
        TeacherParams(batch_type="pair").validate()


def test_students_read_the_teachers_embedding_cache(ds, cache, tiny_bert_dir):
    """One cache for the teacher and the students: Renée's frozen features (same encoder, same
    token limit) are the very rows the frozen teacher trains on, and nothing is re-embedded."""
    from lever.train.embeddings import frozen_embeddings

    before = sorted(p.name for p in cache.rglob("*.npy"))
    teacher = FrozenTeacher(_params(tiny_bert_dir, cache), ds, cache / "unused_out", progress=False)
    mine = teacher.features(("trn", "lbl"))
    students = frozen_embeddings(ds, cache, str(tiny_bert_dir), ("trn", "lbl"), max_len=16)
    assert sorted(p.name for p in cache.rglob("*.npy")) == before
    for split in ("trn", "lbl"):
        np.testing.assert_array_equal(np.asarray(mine[split]), np.asarray(students[split]))
