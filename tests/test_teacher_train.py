"""The teacher on the one trainer, end to end on tiny data with the tiny BERT: the teacher folder,
a run interrupted mid-epoch resuming to the same result, the CLI and its parameter presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from teacher_resume import assert_same_runs, crash_then_resume

import lever.cli
from lever.data import XCDataset
from lever.teacher.params import TeacherParams, preset
from lever.teacher.train import SiameseTeacher, train_teacher
from lever.utils.params import ParamsError


def _params(tiny_bert_dir, **kw) -> TeacherParams:
    base = {
        "encoder": str(tiny_bert_dir),
        "epochs": 3,
        "batch_size": 16,
        "lr": 1e-3,
        "warmup_steps": 2,
        "cl_start": 1,
        "cl_update": 2,
        "cl_size": 4,
        "eval_every": 1,
        "max_len": 16,
        "freeze_layers": 1,
    }
    base.update(kw)
    return TeacherParams(**base)


def test_train_writes_teacher_folder(tiny_xc_dir, tiny_bert_dir, tmp_path):
    ds = XCDataset.load(tiny_xc_dir)
    out = tmp_path / "T"
    final = train_teacher(ds, _params(tiny_bert_dir, batch_type="label"), out, progress=False)
    for split, rows in (("trn", ds.num_train), ("tst", ds.num_test), ("lbl", ds.num_labels)):
        emb = np.load(out / "embeddings" / f"{split}.npy")
        assert emb.dtype == np.float32 and emb.shape[0] == rows
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert TeacherParams.load(out / "config.json") == _params(tiny_bert_dir, batch_type="label")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 3]
    assert records[0]["clustered"] is False and records[1]["cluster_size"] == 4
    assert "PSP@5" in records[0]["test"] and records[-1]["final"]
    assert set(final) >= {"P@1", "P@5", "PSP@1", "PSP@5", "R@100"}
    assert (out / "encoder" / "modules.json").exists()
    assert [r["global_step"] for r in records[:3]] == [3, 6, 9]  # 40 labels in batches of 16
    # the trainer's checkpoints, keep_checkpoints=1: the last step's only
    assert sorted(d.name for d in (out / "checkpoints").iterdir()) == ["latest", "step-000000009"]
    # The saved encoder reproduces the exported label embeddings.
    from lever.teacher.model import embed, load_teacher_encoder

    again = embed(load_teacher_encoder(out / "encoder", 16), ds.lbl_texts, show_progress=False)
    np.testing.assert_allclose(again, np.load(out / "embeddings" / "lbl.npy"), atol=1e-5)
    with pytest.raises(ValueError, match="--resume"):
        train_teacher(ds, _params(tiny_bert_dir, batch_type="label"), out, progress=False)


def test_resume_mid_epoch_equals_uninterrupted(tiny_xc_dir, tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Interrupted inside epoch 3, which reuses epoch 2's clusters (cl_update 2), after a
    mid-epoch checkpoint: the epoch's order, positives, the clusters, the stale bank and the
    dropout RNG come back from the checkpoint, so the rest of the run is the same."""
    ds = XCDataset.load(tiny_xc_dir)
    params = _params(tiny_bert_dir, batch_type="doc", epochs=4, eval_every=0)
    train_teacher(ds, params, tmp_path / "A", progress=False)
    # 200 documents in batches of 16: 13 steps an epoch; checkpoints every 5 steps, the last one
    # before the crash at step 35 (epoch 3 = steps 27-39).
    crash_then_resume(
        monkeypatch, SiameseTeacher, 37,
        lambda resume: train_teacher(
            ds, params, tmp_path / "B", resume=resume, progress=resume, checkpoint_every_steps=5
        ),
    )
    assert "from step-000000035 (epoch 3, step 9)" in capsys.readouterr().out
    assert_same_runs(tmp_path / "A", tmp_path / "B", "encoder/model.safetensors")


def test_resume_refuses_changed_settings(tiny_xc_dir, tiny_bert_dir, tmp_path):
    ds = XCDataset.load(tiny_xc_dir)
    train_teacher(
        ds, _params(tiny_bert_dir, epochs=1, eval_every=0), tmp_path / "T", progress=False
    )
    with pytest.raises(ValueError, match="different settings.*lr"):
        train_teacher(
            ds,
            _params(tiny_bert_dir, epochs=2, lr=5e-4),
            tmp_path / "T",
            resume=True,
            progress=False,
        )


def test_presets_and_validation():
    p = preset("lf-amazontitles-131k")
    assert (p.cl_size, p.cl_update, p.margin, p.batch_size, p.epochs, p.lr) == (
        8,
        5,
        0.3,
        1600,
        300,
        2e-4,
    )
    assert p.curr_steps == [25, 50, 75, 100, 125, 150, 200]
    assert preset("lf-aol-270k").cl_start > 10**6  # random batches
    assert preset("wordnet-cpu") == TeacherParams()
    assert preset("lf-wikipedia-500k").freeze_layers == 0  # the paper trains the whole encoder
    assert TeacherParams().loss == "pairwise-logistic" and TeacherParams().batch_type == "label"
    with pytest.raises(ParamsError, match="loss"):
        TeacherParams(loss="hinge").validate()
    with pytest.raises(ParamsError, match="unknown teacher preset"):
        preset("nope")


def test_cli_train_eval_and_params(tiny_xc_dir, tiny_bert_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        lever.cli, "COMMAND_MODULES", ["lever.teacher.cli"]
    )  # only this stage's CLI
    lever_main = lever.cli.main
    assert (
        lever_main(
            ["teacher", "train", "--print-params", "--preset", "lf-wikipedia-500k", "--lr", "1e-5"]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["batch_size"] == 512 and printed["lr"] == 1e-5 and printed["cl_size"] == 16
    params_file = tmp_path / "p.json"
    params_file.write_text(json.dumps({**printed, "epochs": 1}))
    assert lever_main(["teacher", "train", "--print-params", "--params", str(params_file)]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 1
    params_file.write_text('{"epoch": 1}')
    assert lever_main(["teacher", "train", "--print-params", "--params", str(params_file)]) == 2
    assert "unknown field" in capsys.readouterr().err

    out = tmp_path / "T"
    args = [
        "teacher",
        "train",
        "--data",
        str(tiny_xc_dir),
        "--out",
        str(out),
        "--model",
        str(tiny_bert_dir),
        "--epochs",
        "1",
        "--freeze-layers",
        "0",
        "--batch-size",
        "16",
        "--max-len",
        "16",
        "--loss",
        "triplet",
        "--no-progress",
    ]
    assert lever_main(args) == 0
    trained = json.loads(capsys.readouterr().out)["test"]
    assert (
        lever_main(["teacher", "eval", "--data", str(tiny_xc_dir), "--teacher", str(out), "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == pytest.approx(trained)
    assert (
        lever_main(
            [
                "teacher",
                "eval",
                "--data",
                str(tiny_xc_dir),
                "--zero-shot",
                "--model",
                str(tiny_bert_dir),
                "--max-len",
                "16",
                "--json",
            ]
        )
        == 0
    )
    assert set(json.loads(capsys.readouterr().out)) == set(trained)
    assert lever_main(["teacher", "eval", "--data", str(tiny_xc_dir)]) == 2


def test_freeze_layers_keeps_bottom_fixed(tiny_xc_dir, tiny_bert_dir, tmp_path):
    ds = XCDataset.load(tiny_xc_dir)
    train_teacher(ds, _params(tiny_bert_dir, epochs=1, eval_every=0), tmp_path / "T", progress=False)
    from lever.teacher.model import load_teacher_encoder

    final = load_teacher_encoder(tmp_path / "T" / "encoder", 16).state_dict()
    start = load_teacher_encoder(tiny_bert_dir, 16).state_dict()
    changed = {k for k in final if not np.array_equal(final[k].numpy(), start[k].numpy())}
    assert changed and all("layer.1." in k for k in changed)  # only the top layer of two trained
    with pytest.raises(ValueError, match="freezes the whole encoder"):
        train_teacher(ds, _params(tiny_bert_dir, freeze_layers=2), tmp_path / "U", progress=False)


@pytest.mark.slow
def test_real_minilm_teacher_end_to_end(tiny_xc_dir, minilm_path, tmp_path):
    """The packaged MiniLM through the whole path (its Normalize module, tokenizer, saving),
    a few label-side steps with frozen bottom layers; retrieval stays far above chance."""
    from lever.teacher.evaluate import evaluate_zero_shot

    ds = XCDataset.load(tiny_xc_dir)
    params = TeacherParams(epochs=1, batch_size=16, warmup_steps=1, max_len=16, freeze_layers=5)
    final = train_teacher(ds, params, tmp_path / "T", progress=False)
    zero = evaluate_zero_shot(ds, minilm_path, max_len=16, progress=False)
    assert zero["P@1"] > 20 and final["P@1"] > 20  # 40 labels: chance is 2.5%
    assert abs(final["P@1"] - zero["P@1"]) < 20  # three small steps adapt, not wreck, the encoder
    from lever.encoders import load_sentence_encoder

    # the saved encoder keeps the training token limit, so downstream encode() matches the export
    assert load_sentence_encoder(tmp_path / "T" / "encoder").max_seq_length == 16


def test_checkpoint_cadence_and_old_layout(tiny_xc_dir, tiny_bert_dir, tmp_path):
    """``checkpoint_every`` epochs (and the last), ``keep_checkpoints`` kept; a folder holding
    checkpoints of the former teacher loop is refused instead of silently retrained."""
    ds = XCDataset.load(tiny_xc_dir)
    params = _params(tiny_bert_dir, batch_type="label", epochs=3, eval_every=0,
                     checkpoint_every=2, keep_checkpoints=5)
    train_teacher(ds, params, tmp_path / "T", progress=False)
    names = sorted(d.name for d in (tmp_path / "T" / "checkpoints").iterdir())
    assert names == ["latest", "step-000000006", "step-000000009"]  # 3 steps an epoch
    (tmp_path / "old" / "checkpoints" / "epoch_0001").mkdir(parents=True)
    with pytest.raises(ValueError, match="former loop"):
        train_teacher(ds, params, tmp_path / "old", resume=True, progress=False)
