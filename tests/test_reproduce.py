"""``lever reproduce``: the shipped configs, dataset detection by metadata, one paper cell end to
end on a synthetic dataset in the XC-repository layout (tiny random-weight models), resume, --list."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp

from lever.cli import main
from lever.data import synthetic_dataset, write_dataset
from lever.data.dataset import DatasetMeta
from lever.data.formats import write_sparse_text, write_texts
from lever.reproduce.config import all_configs, detect_config, load_config
from lever.utils.params import ParamsError

PAPER = ["LF-AmazonTitles-131K", "LF-WikiSeeAlso-320K", "LF-WikiSeeAlsoTitles-320K", "LF-Wikipedia-500K",
         "LF-AmazonTitles-1.3M", "LF-AOL-270K", "LF-WikiHierarchy-1M"]


def _xc_layout(folder, seed=0):
    """A tiny synthetic dataset as an XC-repository folder: Renée/LEVER file names, the
    repository's filter name, no lever_meta.json."""
    write_dataset(folder, **synthetic_dataset(200, 60, 40, seed=seed))
    (folder / "lever_meta.json").unlink()
    os.replace(folder / "tst_filter_labels.txt", folder / "filter_labels_test.txt")
    return folder


def test_every_paper_config_loads_and_validates():
    configs = {c.name: c for c in all_configs()}  # each one validated against the params classes
    assert set(PAPER) <= set(configs) and {"foldoc", "wordnet"} <= set(configs)
    for name in PAPER:
        c = configs[name]
        assert sorted(c.cells) == ["cascadexml", "elias", "renee"]
        published = [c.cells[b].published for b in c.cells]
        if name == "LF-WikiSeeAlsoTitles-320K":  # not in the paper: nulls with notes, never invented
            assert published == [None] * 3 and c.statistics.counts() is None and c.statistics.note
        else:
            assert all(p and p["lever"]["PSP@5"] > 0 for p in published)
            assert c.statistics.counts() is not None and c.soft_labels.tau_l is not None
    at = configs["LF-AmazonTitles-131K"]
    assert (at.propensity.a, at.propensity.b, at.soft_labels.tau_l) == (0.6, 2.6, 15)
    assert at.cells["renee"].published["base"]["P@5"] == 22.04
    assert at.cells["elias"].train["backbone_params"]["num_clusters"] == 2048
    bad = at.to_dict()
    bad["cells"]["elias"]["train"]["backbone_params"]["num_clusters"] = 3000
    with pytest.raises(ParamsError, match="num_clusters"):
        type(at).from_dict(bad).validate()
    with pytest.raises(ValueError, match="no such config"):
        load_config("LF-Nope")


def test_recognised_by_published_counts_only(tmp_path):
    at = load_config("LF-AmazonTitles-131K")
    n_trn, n_tst, n_lbl = at.statistics.counts()
    rng = np.random.default_rng(0)
    folder = tmp_path / "some-folder"
    folder.mkdir()

    def labels(n):
        return sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, n_lbl, n))), shape=(n, n_lbl))

    write_texts(folder / "Y.txt", [f"label {i}" for i in range(n_lbl)])
    write_sparse_text(folder / "trn_X_Y.txt", labels(n_trn))
    write_sparse_text(folder / "tst_X_Y.txt", labels(n_tst))
    config, how = detect_config(folder)
    assert config.name == "LF-AmazonTitles-131K" and "counts" in how
    write_sparse_text(folder / "tst_X_Y.txt", labels(n_tst - 1))  # one test document short
    with pytest.raises(ValueError, match="--config NAME"):
        detect_config(folder)

    tiny = _xc_layout(tmp_path / "LF-AmazonTitles-131K")  # the folder name alone is never enough
    with pytest.raises(ValueError, match="no lever_meta.json.*--config NAME"):
        detect_config(tiny)
    assert detect_config(tiny, "LF-AmazonTitles-131K")[1] == "--config LF-AmazonTitles-131K"
    DatasetMeta(name="LF-AmazonTitles-131K").save(tiny)  # a name whose counts disagree: a slice
    with pytest.raises(ValueError, match="a slice"):
        detect_config(tiny)
    DatasetMeta(name="foldoc", extra={"builder": "lever.data.foldoc"}).save(tiny)
    assert detect_config(tiny)[0].name == "foldoc"


def _args(data, out, bert, backbones, *extra):
    sets = {
        "teacher.encoder": str(bert), "teacher.epochs": 1, "teacher.batch_size": 64, "teacher.hidden": 32,
        "all.optim.epochs": 2, "all.optim.batch_size": 64, "all.optim.warmup_steps": 0,
        "renee.backbone_params.encoder.model": str(bert), "renee.backbone_params.encoder.max_len": 16,
        # ELIAS at the scale of 40 labels (tests/test_elias.py), off its paper preset
        "elias.backbone_params.preset": "cpu", "elias.backbone_params.num_clusters": 8,
        "elias.backbone_params.encoder": {"kind": "tfidf", "bag_dim": 16, "tfidf_min_df": 1},
        "elias.backbone_params.beam": 2, "elias.backbone_params.shortlist": 6, "elias.backbone_params.kappa": 12,
        "elias.backbone_params.beta": 8.0, "elias.backbone_params.approx_beam": 3,
        "elias.backbone_params.stage1_epochs": 1,
    }
    args = ["reproduce", "--data", str(data), "--out", str(out), "--backbones", backbones, "--no-progress",
            "--config", "LF-AmazonTitles-131K", "--device", "cpu"]
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args + list(extra)


def test_paper_cell_end_to_end_then_resume(tmp_path, tiny_bert_dir, capsys):
    from lever.reproduce.cells import cell_params, make_context
    from lever.reproduce.params import ReproduceParams
    from lever.train.loop import train

    data = _xc_layout(tmp_path / "data")
    out = tmp_path / "out"
    # first invocation: Renée only (as if the run stopped after its cells)
    assert main(_args(data, out, tiny_bert_dir, "renee")) == 0
    first = capsys.readouterr().out
    assert "[1/2] renee: training" in first and "paper 22.04" in first
    renee = json.loads((out / "cells" / "renee.json").read_text())
    lever = json.loads((out / "cells" / "renee_lever.json").read_text())
    assert renee["vs_published"]["P@5"] == pytest.approx(renee["metrics"]["P@5"] - 22.04)
    cfg = json.loads((out / "runs" / "renee_lever" / "config.json").read_text())
    assert cfg["lever"]["soft_labels"] == str(out / "soft_labels.npz") and cfg["lever"]["lam"] == 0.5
    assert cfg["backbone_params"]["lr_clf"] == 0.05 and cfg["backbone_params"]["encoder"]["dropout"] == 0.85
    assert json.loads((out / "soft_labels.config.json").read_text())["tau_l"] == 15  # Table 22
    assert lever["metrics"] != renee["metrics"]
    stamp = (out / "cells" / "renee.json").stat().st_mtime_ns

    # an ELIAS cell interrupted after its first epoch: the rerun resumes it from the checkpoint
    capsys.readouterr()
    assert main(_args(data, out, tiny_bert_dir, "renee", "--seed", "1")) == 2  # another run's folder
    assert "other settings (seed)" in capsys.readouterr().err
    params = ReproduceParams.from_dict(json.loads((out / "reproduce.json").read_text()))
    params.backbones = ["renee", "elias"]
    ctx = make_context(params, progress=False)
    tp = cell_params(ctx, "elias", "plain", str(out / "soft_labels.npz"), None)
    assert not train(tp, stop_after_epochs=1, progress=False).finished
    capsys.readouterr()

    assert main(_args(data, out, tiny_bert_dir, "renee,elias")) == 0
    second = capsys.readouterr().out
    assert "[1/4] renee: done, skipped" in second and "[2/4] renee_lever: done, skipped" in second
    assert "[3/4] elias: training" in second and "ETA" in second
    assert (out / "cells" / "renee.json").stat().st_mtime_ns == stamp  # not redone
    epochs = [json.loads(x)["epoch"] for x in (out / "runs" / "elias" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # epoch 1 from the interrupted invocation, epoch 2 resumed
    table = json.loads((out / "table.json").read_text())
    assert sorted(table["cells"]) == ["elias", "elias_lever", "renee", "renee_lever"]
    assert table["cells"]["elias"]["config"].endswith("runs/elias/config.json")
    assert table["stages"]["teacher"]["kind"] == "frozen" and table["stages"]["soft_labels"]["wall_seconds"] > 0
    md = (out / "table.md").read_text()
    for row in ("| Renée |", "| Renée + LEVER |", "| Δ Renée (LEVER − plain) |", "| *ELIAS + LEVER (paper)* |",
                "| measured − paper, ELIAS |", "| Δ ELIAS (LEVER − plain) |"):
        assert row in md
    for png in ("summary.png", "deciles_renee.png", "deciles_elias.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_list_and_bad_settings(tmp_path, capsys):
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in PAPER:
        assert name in listed
    assert "P@5 22.04→21.92, PSP@5 50.33→50.31" in listed  # Renée on LF-AmazonTitles-131K
    data = _xc_layout(tmp_path / "data")
    assert main(["reproduce", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "--config NAME" in capsys.readouterr().err
    assert main(["reproduce", "--data", str(data), "--out", str(tmp_path / "o"), "--config", "foldoc",
                 "--preset", "paper"]) == 2
    assert "built-in" in capsys.readouterr().err
    assert main(["reproduce", "--data", str(data), "--out", str(tmp_path / "o"), "--config", "foldoc",
                 "--set", "nope.x=1"]) == 2
    assert "not a stage" in capsys.readouterr().err


def test_cpu_preset_on_a_builtin_dataset(tmp_path, tiny_bert_dir, capsys):
    """A built-in dataset (recognised by its builder) gets the cpu preset: the frozen teacher, the
    soft-label defaults and frozen-encoder features for the students (bench/lever_tail.py)."""
    data = tmp_path / "data"
    write_dataset(data, **synthetic_dataset(200, 60, 40, seed=1))
    meta = DatasetMeta.load(data)
    meta.extra["builder"] = "lever.data.foldoc"
    meta.save(data)
    out = tmp_path / "out"
    args = ["reproduce", "--data", str(data), "--out", str(out), "--backbones", "renee", "--no-progress",
            "--device", "cpu"]
    for key, value in {"teacher.encoder": str(tiny_bert_dir), "teacher.epochs": 1, "teacher.hidden": 32,
                       "features.encoder": str(tiny_bert_dir), "renee.optim.epochs": 1}.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    assert main(args) == 0
    assert "config foldoc (lever_meta.json builder 'lever.data.foldoc'), preset cpu" in capsys.readouterr().out
    cfg = json.loads((out / "runs" / "renee" / "config.json").read_text())
    assert cfg["backbone_params"]["encoder"]["embeddings"] == str(out / "features")
    assert cfg["optim"]["epochs"] == 1 and cfg["backbone_params"]["encoder"]["kind"] == "cached+tfidf"
    assert json.loads((out / "soft_labels.config.json").read_text())["tau_l"] == 4  # the defaults
    table = json.loads((out / "table.json").read_text())
    assert table["propensity"] == {"a": 0.55, "b": 1.5} and table["cells"]["renee"]["published"] is None
    assert os.path.exists(table["stages"]["features"]["config"])
    md = (out / "table.md").read_text()
    assert "Changed with `--set`: `features.encoder=" in md and "`renee.optim.epochs=1`" in md
    assert "Total wall time" in md
    assert "| Teacher alone (kNN, frozen) |" in md and 0 <= table["teacher"]["metrics"]["P@1"] <= 100
    assert os.path.exists(out / "stages" / "teacher_scores.json")

    # another model's predictions join the table, scored like the cells (here: Renée's own)
    pred = out / "runs" / "renee" / "predictions.npz"
    capsys.readouterr()
    assert main(args + ["--peer", f"again={pred}"]) == 0
    table = json.loads((out / "table.json").read_text())
    assert table["peers"]["again"]["metrics"] == pytest.approx(table["cells"]["renee"]["metrics"])
    assert "| again (peer," in (out / "table.md").read_text()
    sp.save_npz(tmp_path / "wrong.npz", sp.csr_matrix((3, 4), dtype=np.float32))
    assert main(args + ["--peer", f"wrong={tmp_path / 'wrong.npz'}"]) == 2
    assert "expected (test documents, labels)" in capsys.readouterr().err
