"""`lever soft-labels` end to end on the tiny synthetic dataset with a real (zero-shot MiniLM)
teacher: build with both calibrations, stats, and refusal of a teacher that does not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lever.cli
from lever.data import XCDataset
from lever.soft_labels import SoftLabels


def main(argv: list[str]) -> int:
    """``lever`` with only this stage's commands registered, so other stages' CLIs cannot break
    these tests; parsing, dispatch and error reporting are the real ``lever.cli.main``."""
    saved = lever.cli.COMMAND_MODULES
    lever.cli.COMMAND_MODULES = ["lever.soft_labels.cli"]
    try:
        return lever.cli.main(argv)
    finally:
        lever.cli.COMMAND_MODULES = saved


def test_soft_labels_is_a_registered_command():
    assert "lever.soft_labels.cli" in lever.cli.COMMAND_MODULES


@pytest.fixture(scope="module")
def zero_shot_teacher(tiny_xc_dir, tmp_path_factory, minilm_path):
    out = tmp_path_factory.mktemp("teacher") / "zs"
    assert main(["soft-labels", "zero-shot-teacher", "--data", str(tiny_xc_dir), "--out", str(out)]) == 0
    return out


def test_build_and_stats_with_zero_shot_teacher(tiny_xc_dir, zero_shot_teacher, tmp_path, capsys):
    ds = XCDataset.load(tiny_xc_dir)
    cfg = json.loads((zero_shot_teacher / "config.json").read_text())
    assert cfg["kind"] == "zero-shot" and cfg["dataset_fingerprint"] == ds.fingerprint()
    trn = np.load(zero_shot_teacher / "embeddings" / "trn.npy")
    assert trn.shape == (ds.num_train, 384) and np.allclose(np.linalg.norm(trn, axis=1), 1, atol=1e-4)

    out = tmp_path / "soft.npz"
    rc = main([
        "soft-labels", "build", "--data", str(tiny_xc_dir), "--teacher", str(zero_shot_teacher),
        "--out", str(out), "--tau-l", "4", "--tau-d", "3", "--calibration", "platt", "--threshold", "0.5",
    ])
    assert rc == 0
    for name in ("soft.npz", "soft.json", "soft.config.json", "soft.calibration.json", "soft.calibration.png"):
        assert (tmp_path / name).exists(), name
    soft = SoftLabels.load(out, dataset=ds)
    assert soft.shape == (ds.num_train + ds.num_labels, ds.num_labels)
    assert soft.meta["calibration"]["method"] == "platt" and soft.meta["calibration"]["a"] > 0
    assert soft.meta["teacher"]["kind"] == "zero-shot"
    # every positive of the label-augmented matrix has a stored teacher score
    aug = ds.with_label_rows().Y
    assert soft.csr.multiply(aug).nnz == aug.nnz
    report = json.loads((tmp_path / "soft.calibration.json").read_text())
    assert 0 <= report["ece"]["linear"] <= 1 and 0 <= report["ece"]["platt"] <= 1
    assert (tmp_path / "soft.calibration.png").read_bytes()[:4] == b"\x89PNG"

    capsys.readouterr()
    assert main(["soft-labels", "stats", str(out), "--data", str(tiny_xc_dir), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["nnz"] == soft.nnz and st["label_self_entries"] == ds.num_labels
    assert st["document_rows_by_kind"]["ground_truth_missing_a_score"] == 0
    assert st["build_counts"]["doc_topup"] == round(st["document_rows_by_kind"]["teacher_added"]["mean"] * ds.num_train)
    assert main(["soft-labels", "stats", str(out)]) == 0
    assert "entries per row, label rows" in capsys.readouterr().out


def test_build_refuses_a_teacher_of_another_dataset(tiny_xc_dir, zero_shot_teacher, tmp_path, capsys):
    bad = tmp_path / "teacher"
    (bad / "embeddings").mkdir(parents=True)
    for split in ("trn", "tst"):
        (bad / "embeddings" / f"{split}.npy").write_bytes((zero_shot_teacher / "embeddings" / f"{split}.npy").read_bytes())
    np.save(bad / "embeddings" / "lbl.npy", np.load(zero_shot_teacher / "embeddings" / "lbl.npy")[:-1])
    rc = main(["soft-labels", "build", "--data", str(tiny_xc_dir), "--teacher", str(bad), "--out", str(tmp_path / "s.npz")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "lbl.npy: 39 rows, but the dataset has 40 lbl texts" in err
    assert not (tmp_path / "s.npz").exists()


def test_zero_shot_teacher_is_reused_and_fingerprint_checked(tiny_xc_dir, zero_shot_teacher, tmp_path, capsys):
    from lever.soft_labels.teacher_embeddings import TeacherFolderError, check_teacher_dataset

    lbl = zero_shot_teacher / "embeddings" / "lbl.npy"
    before = lbl.stat().st_mtime_ns
    assert main(["soft-labels", "zero-shot-teacher", "--data", str(tiny_xc_dir), "--out", str(zero_shot_teacher)]) == 0
    assert lbl.stat().st_mtime_ns == before  # same dataset, encoder and max_len: nothing re-embedded
    with pytest.raises(TeacherFolderError, match=r"meta\.json: field 'fingerprint' = .* this teacher was made for another"):
        check_teacher_dataset(zero_shot_teacher, "0" * 32, "dataset X")
