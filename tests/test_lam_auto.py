"""``--lam auto``: the validation split, the objective, the search end to end, and resume.

The search runs real ``lever train`` cells (generic backbone on frozen tiny-BERT features from a
zero-shot teacher folder) on the tiny synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from lever import XCDataset
from lever.train import TrainParams, train
from lever.train.auto import (
    AutoParams,
    AutoSearch,
    Cell,
    best_cell,
    validation_rows,
    write_validation_dataset,
)
from lever.train.params import LeverParams, OptimParams, RunParams


@pytest.fixture(scope="module")
def teacher_and_soft(tiny_xc_dir, tiny_bert_dir, tmp_path_factory):
    """A zero-shot teacher folder (tiny BERT) and soft labels built from it, as the CLI does."""
    from lever.soft_labels.build import SoftLabelParams, build_soft_labels
    from lever.soft_labels.teacher_embeddings import write_zero_shot_teacher

    ds = XCDataset.load(tiny_xc_dir)
    root = tmp_path_factory.mktemp("auto_teacher")
    teacher = write_zero_shot_teacher(ds, root / "teacher", encoder=str(tiny_bert_dir), progress=False)
    emb = {s: np.load(teacher / "embeddings" / f"{s}.npy") for s in ("trn", "lbl")}
    soft, _ = build_soft_labels(
        ds.trn_Y, emb["trn"], emb["lbl"], SoftLabelParams(tau_l=2, threshold=0.0, calib_docs=40),
        meta={"dataset_fingerprint": ds.fingerprint(), "teacher": {"path": str(teacher)}},
    )
    soft.save(root / "soft.npz")
    return teacher, root / "soft.npz"


def _auto_params(data, out, embeddings, soft, **auto) -> TrainParams:
    grid = {"epochs": 1, "lams": [0.5], "kappas": [2.0], "tau_d": [3], "calibrations": [],
            "val_fraction": 0.2, **auto}
    return TrainParams(
        data=str(data), backbone="generic", out=str(out),
        backbone_params={"embeddings": str(embeddings)},
        lever=LeverParams(soft_labels=soft and str(soft), lam="auto", auto=AutoParams(**grid)),
        optim=OptimParams(epochs=2, batch_size=32), run=RunParams(seed=1, eval_every=2),
    )


def test_validation_rows_are_seeded_and_sized():
    a = validation_rows(1000, 0.1, 5000, seed=3)
    assert a.size == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, validation_rows(1000, 0.1, 5000, seed=3))
    assert not np.array_equal(a, validation_rows(1000, 0.1, 5000, seed=4))
    assert validation_rows(1000, 0.5, 30, seed=0).size == 30
    with pytest.raises(ValueError, match="leaves none"):
        validation_rows(1, 0.5, 10, seed=0)


def test_validation_dataset_holds_out_exactly_the_split(tiny_xc_dir, tmp_path):
    ds = XCDataset.load(tiny_xc_dir)
    val = validation_rows(ds.num_train, 0.25, 1000, seed=0)
    sub = XCDataset.load(write_validation_dataset(ds, val, tmp_path / "val"))
    keep = np.setdiff1d(np.arange(ds.num_train), val)
    assert sub.num_train == keep.size and sub.num_test == val.size
    assert sub.trn_texts == [ds.trn_texts[i] for i in keep]
    assert sub.tst_texts == [ds.trn_texts[i] for i in val]
    assert (sub.tst_Y != ds.trn_Y[val]).nnz == 0 and (sub.trn_Y != ds.trn_Y[keep]).nnz == 0
    assert sub.lbl_texts == ds.lbl_texts


def _cell(name, p5, psp5, teacher=True):
    return Cell(name, "x", lam=0.5, soft={"tau_d": 0} if teacher else None,
                metrics={"P@5": p5, "PSP@5": psp5})


def test_objective_keeps_p5_and_falls_back_to_the_plain_student():
    base = _cell("baseline", 30.0, 20.0, teacher=False)
    good = _cell("good", 29.8, 24.0)
    greedy = _cell("greedy", 29.0, 30.0)  # more PSP@5 but P@5 falls by 1.0 > 0.3
    assert best_cell([base, good, greedy], base, 0.3).name == "good"
    assert best_cell([base, greedy], base, 0.3).name == "baseline"
    assert best_cell([base, greedy], base, 1.0).name == "greedy"


def test_lam_auto_end_to_end_and_resume(tiny_xc_dir, teacher_and_soft, tmp_path):
    teacher, soft = teacher_and_soft
    params = _auto_params(tiny_xc_dir, tmp_path / "run", teacher, soft)
    result = train(params, progress=False)
    run = tmp_path / "run"
    grid = json.loads((run / "auto" / "grid.json").read_text())
    choice = json.loads((run / "auto" / "choice.json").read_text())
    names = [c["name"] for c in grid]
    assert names[:3] == ["baseline", "lam0.5", "kappa2"]
    assert choice["cell"] in names and all(c["metrics"]["P@5"] >= 0 for c in grid)

    # Every cell trained on the validation dataset, which holds no validation document.
    split = json.loads((run / "auto" / "split.json").read_text())["val_rows"]
    ds = XCDataset.load(tiny_xc_dir)
    sub = XCDataset.load(run / "auto" / "data")
    assert sub.num_train == ds.num_train - len(split)
    held = set(split)
    assert sub.trn_texts == [t for i, t in enumerate(ds.trn_texts) if i not in held]
    for name in names:
        cfg = json.loads((run / "auto" / "cells" / name / "config.json").read_text())
        assert cfg["data"] == str(run / "auto" / "data")
        assert cfg["backbone_params"]["embeddings"] != str(teacher)  # the sliced copy
        if cfg["lever"]["soft_labels"]:
            from lever.soft_labels import SoftLabels

            assert SoftLabels.load(cfg["lever"]["soft_labels"]).num_docs == sub.num_train

    # The final run has the chosen, concrete settings.
    final = json.loads((run / "config.json").read_text())["lever"]
    assert final["lam"] != "auto" and final["kappa"] == choice["kappa"]
    assert (final["soft_labels"] is None) == (not choice["uses_teacher"])
    assert result.finished and result.metrics is not None

    # A rerun resumes to the same choice without training any cell again.
    stamps = {n: (run / "auto" / "cells" / n / "metrics.json").stat().st_mtime_ns for n in names}
    weights = load_file(str(run / "model.safetensors"))
    train(params, progress=False)
    assert json.loads((run / "auto" / "choice.json").read_text()) == choice
    assert stamps == {n: (run / "auto" / "cells" / n / "metrics.json").stat().st_mtime_ns for n in names}
    again = load_file(str(run / "model.safetensors"))
    assert all(np.array_equal(weights[k].numpy(), again[k].numpy()) for k in weights)


def test_lam_auto_needs_a_teacher(tiny_xc_dir, tmp_path):
    from lever.utils.params import ParamsError

    params = TrainParams(data=str(tiny_xc_dir), backbone="generic", out=str(tmp_path / "r"),
                         lever=LeverParams(lam="auto"))
    with pytest.raises(ParamsError, match="needs the teacher"):
        train(params, progress=False)


def test_diagnose_compares_on_the_validation_split(tiny_xc_dir, teacher_and_soft, tmp_path):
    from lever.metrics import evaluate, inverse_propensity
    from lever.soft_labels.diagnose import WARNING, diagnose, format_diagnosis, plot_diagnosis
    from lever.teacher.evaluate import exact_knn

    teacher, soft = teacher_and_soft
    run = tmp_path / "run"
    train(_auto_params(tiny_xc_dir, run, teacher, soft, kappas=[], tau_d=[]), progress=False)
    d = diagnose(tiny_xc_dir, teacher, run, k=5, progress=False)
    assert d["split"] == "validation" and d["student_run"].endswith("baseline")
    # The teacher's figures are its kNN metrics on the held-out documents, computed independently.
    sub = XCDataset.load(run / "auto" / "data")
    val = json.loads((run / "auto" / "split.json").read_text())["val_rows"]
    docs = np.load(teacher / "embeddings" / "trn.npy")[val]
    lbl = np.load(teacher / "embeddings" / "lbl.npy")
    ref = evaluate(sub.tst_Y, exact_knn(docs, lbl, 5, filter=sub.tst_filter),
                   inverse_propensity(sub.trn_Y, sub.meta.propensity_a, sub.meta.propensity_b),
                   k=5, filter=sub.tst_filter)
    assert d["teacher"]["PSP@5"] == pytest.approx(ref["PSP@5"]) and d["teacher"]["P@1"] == pytest.approx(ref["P@1"])
    student = json.loads((run / "auto" / "cells" / "baseline" / "metrics.json").read_text())
    assert d["student"]["P@5"] == pytest.approx(student["P@5"])
    better = [s["bin"] for s, t in zip(d["student_deciles"], d["teacher_deciles"]) if t["R"] > s["R"]]
    assert d["teacher_better_bins"] == better and (d["warning"] == WARNING) == (not better)
    text = format_diagnosis({**d, "teacher_better_bins": [], "warning": WARNING})
    assert "weaker than the student on every decile" in text
    plot_diagnosis(d, tmp_path / "diag.png")
    assert (tmp_path / "diag.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------
# The cells' teacher: a frozen teacher is refit without the validation documents
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def frozen_teacher(tiny_xc_dir, tiny_bert_dir, tmp_path_factory):
    """A frozen-kind teacher (tower over tiny-BERT features) trained on ALL training documents."""
    from lever.teacher.params import TeacherParams, preset
    from lever.teacher.train import train_teacher

    root = tmp_path_factory.mktemp("auto_frozen")
    params = TeacherParams(**(preset("frozen-cpu").to_dict() | {
        "encoder": str(tiny_bert_dir), "max_len": 16, "epochs": 2, "batch_size": 64, "hidden": 16,
        "warmup_steps": 2, "cache_dir": str(root / "cache"),
    }))
    train_teacher(XCDataset.load(tiny_xc_dir), params, root / "teacher", progress=False)
    return root / "teacher", root / "cache"


def _teacher_of(soft_file) -> str:
    from lever.soft_labels import SoftLabels

    return SoftLabels.load(soft_file).meta["teacher"]["path"]


def test_frozen_teacher_is_refit_without_the_validation_documents(
    tiny_xc_dir, frozen_teacher, teacher_and_soft, tmp_path, capsys
):
    from lever.teacher.frozen import load_tower
    from lever.teacher.params import TeacherParams
    from lever.train.embeddings import frozen_embeddings

    teacher, cache = frozen_teacher
    run = tmp_path / "run"
    features = teacher_and_soft[0]  # the students' frozen features: the zero-shot folder
    params = _auto_params(tiny_xc_dir, run, features, None, kappas=[], tau_d=[], teacher=str(teacher))
    train(params, progress=False)
    assert "WARNING" not in capsys.readouterr().err
    refit = run / "auto" / "teacher"
    choice = json.loads((run / "auto" / "choice.json").read_text())
    assert choice["teacher"]["saw_validation"] is False and choice["teacher"]["cells"] == str(refit)

    # The diagnosis of this run judges the refit teacher on the validation split, not the given one.
    from lever.metrics import evaluate, inverse_propensity
    from lever.soft_labels.diagnose import diagnose
    from lever.teacher.evaluate import exact_knn

    d = diagnose(tiny_xc_dir, teacher, run, k=5, progress=False)
    sub = XCDataset.load(run / "auto" / "data")
    ref = evaluate(sub.tst_Y, exact_knn(np.load(refit / "embeddings" / "tst.npy"),
                                        np.load(refit / "embeddings" / "lbl.npy"), 5, filter=sub.tst_filter),
                   inverse_propensity(sub.trn_Y, sub.meta.propensity_a, sub.meta.propensity_b),
                   k=5, filter=sub.tst_filter)
    assert d["split"] == "validation" and d["teacher_folder"] == str(refit)
    assert d["teacher"]["PSP@5"] == pytest.approx(ref["PSP@5"]) and d["teacher"]["P@1"] == pytest.approx(ref["P@1"])

    # Same TeacherParams as the given teacher (the feature cache aside), on the validation dataset.
    given_cfg = json.loads((teacher / "config.json").read_text())
    refit_cfg = json.loads((refit / "config.json").read_text())
    assert {**refit_cfg, "cache_dir": None} == {**given_cfg, "cache_dir": None}
    sub = XCDataset.load(json.loads((refit / "refit.json").read_text())["data"])
    val = json.loads((run / "auto" / "split.json").read_text())["val_rows"]
    ds = XCDataset.load(tiny_xc_dir)
    keep = np.setdiff1d(np.arange(ds.num_train), val)
    assert sub.trn_texts == [ds.trn_texts[i] for i in keep]
    meta = json.loads((refit / "embeddings" / "meta.json").read_text())
    assert meta["fingerprint"] == sub.fingerprint() and meta["rows"]["trn"] == ds.num_train - len(val)

    # What the tower trained on: its input statistics are those of exactly the kept documents
    # (and the label texts), not of all training documents.
    p = TeacherParams.load(teacher / "config.json")
    feats = frozen_embeddings(ds, cache, p.encoder, ("trn", "lbl"), max_len=p.max_len)
    tower = load_tower(refit / "tower.safetensors")
    kept = np.concatenate([np.asarray(feats["trn"])[keep], feats["lbl"]])
    everything = np.concatenate([np.asarray(feats["trn"]), feats["lbl"]])
    assert np.allclose(tower.mean.numpy(), kept.mean(0), atol=1e-5)
    assert not np.allclose(tower.mean.numpy(), everything.mean(0), atol=1e-5)

    # Every cell's soft labels come from the refit teacher, the final model's from the given one.
    for cell in json.loads((run / "auto" / "grid.json").read_text()):
        soft = json.loads((run / "auto" / "cells" / cell["name"] / "config.json").read_text())["lever"]["soft_labels"]
        assert soft is None or _teacher_of(soft) == str(refit)
    final_soft = json.loads((run / "config.json").read_text())["lever"]["soft_labels"]
    assert final_soft is None or _teacher_of(final_soft) == str(teacher)
    lam_cell = {"cell": "lam0.5", "lam": 0.5, "kappa": None, "uses_teacher": True,
                "soft": {"tau_l": 4, "tau_d": 2, "calibration": "linear"}}  # as if chosen
    forced = AutoSearch(params, progress=False).final_params(lam_cell).lever.soft_labels
    assert _teacher_of(forced) == str(teacher)

    # Interrupted after the refit teacher's last checkpoint (its export, cells and choice lost):
    # the rerun resumes the teacher and reaches the same choice with the same figures.
    before = np.load(refit / "embeddings" / "trn.npy")
    for name in ("choice.json", "grid.json"):
        (run / "auto" / name).unlink()
    for path in [refit / "embeddings" / "meta.json", refit / "tower.safetensors"]:
        path.unlink()
    import shutil

    shutil.rmtree(run / "auto" / "cells")
    shutil.rmtree(run / "auto" / "soft")
    train(params, progress=False)
    assert json.loads((run / "auto" / "choice.json").read_text()) == choice
    assert np.array_equal(np.load(refit / "embeddings" / "trn.npy"), before)


def test_finetune_teacher_is_used_as_given_with_a_warning(
    tiny_xc_dir, teacher_and_soft, tiny_bert_dir, tmp_path, capsys
):
    import shutil

    from lever.teacher.params import TeacherParams
    from lever.utils.params import ParamsError

    zero_shot, _ = teacher_and_soft
    finetuned = tmp_path / "finetuned"  # a fine-tune teacher folder: its config and embeddings
    shutil.copytree(zero_shot / "embeddings", finetuned / "embeddings")
    TeacherParams(kind="finetune", encoder=str(tiny_bert_dir), max_len=16).save(finetuned / "config.json")
    run = tmp_path / "run"
    train(_auto_params(tiny_xc_dir, run, zero_shot, None, kappas=[], tau_d=[], teacher=str(finetuned)),
          progress=False)
    err = capsys.readouterr().err
    assert "WARNING" in err and "kind finetune" in err and "validation documents included" in err
    choice = json.loads((run / "auto" / "choice.json").read_text())
    assert choice["teacher"]["saw_validation"] is True and choice["teacher"]["kind"] == "finetune"
    assert not (run / "auto" / "teacher").exists()

    # Asking for a refit of a folder without TeacherParams is a clear error.
    shutil.copytree(zero_shot / "embeddings", tmp_path / "embeddings-only" / "embeddings")
    with pytest.raises(ParamsError, match="teacher_refit=True.*no config.json"):
        train(_auto_params(tiny_xc_dir, tmp_path / "r2", zero_shot, None, kappas=[], tau_d=[],
                           teacher=str(tmp_path / "embeddings-only"), teacher_refit=True), progress=False)
