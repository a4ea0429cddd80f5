"""XCDataset: loading under both naming conventions, cross-file checks, the label-rows view."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from lever.data import (
    DatasetMeta,
    LabelAugmentedTrain,
    XCDataset,
    XCFormatError,
    read_texts,
    synthetic_dataset,
    write_dataset,
    write_json_corpus,
    write_npz,
    write_sparse_text,
)


@pytest.fixture
def ds_dir(tiny_xc_dir, tmp_path):
    """A private copy of the shared fixture that a test may break."""
    out = tmp_path / "ds"
    shutil.copytree(tiny_xc_dir, out)
    return out


def test_tiny_fixture_loads_with_contract_attributes(tiny_xc_dir):
    ds = XCDataset.load(tiny_xc_dir)
    assert (ds.num_train, ds.num_test, ds.num_labels) == (200, 60, 40)
    assert ds.name == "tiny-synthetic" and ds.root == tiny_xc_dir
    assert len(ds.trn_texts) == 200 and len(ds.tst_texts) == 60 and len(ds.lbl_texts) == 40
    for Y in (ds.trn_Y, ds.tst_Y):
        assert sp.isspmatrix_csr(Y) and Y.dtype == np.float32 and set(np.unique(Y.data)) == {1}
    assert ds.tst_filter.shape == ds.tst_Y.shape and ds.tst_filter.nnz == 6
    assert ds.trn_filter is None and ds.trn_X_bow is None
    assert ds.tst_Y.multiply(ds.tst_filter).nnz == 0  # filtered pairs are not ground truth
    counts = np.asarray(ds.trn_Y.sum(0)).ravel()
    assert counts.max() > 10 * np.median(counts)  # skewed: a head and a tail
    assert ds.meta.propensity_a == 0.55 and ds.meta.source == "lever.data.synthetic"


def test_fingerprint_is_stable_and_sensitive(tiny_xc_dir, ds_dir):
    a = XCDataset.load(tiny_xc_dir).fingerprint()
    assert a == XCDataset.load(ds_dir).fingerprint()
    assert len(a) == 32 and int(a, 16) >= 0
    texts = read_texts(ds_dir / "Y.txt")
    texts[0] = texts[0] + " changed"
    (ds_dir / "Y.txt").write_text("\n".join(texts) + "\n")
    assert XCDataset.load(ds_dir).fingerprint() != a


def test_label_rows_stay_aligned(tiny_xc_dir):
    ds = XCDataset.load(tiny_xc_dir)
    aug = ds.with_label_rows()
    N, L = ds.num_train, ds.num_labels
    assert aug.num_docs == N and aug.Y.shape == (N + L, L) and len(aug.texts) == N + L
    assert (aug.Y[:N] != ds.trn_Y).nnz == 0
    for i in (0, 17, N - 1):
        assert aug.texts[i] == ds.trn_texts[i]
    for lab in range(L):
        assert aug.texts[N + lab] == ds.lbl_texts[lab]
        assert aug.Y[N + lab].indices.tolist() == [lab]


def test_label_rows_reject_the_released_notebook_bug(tiny_xc_dir):
    """Augmented texts saved beside the un-augmented matrix must be impossible to build."""
    ds = XCDataset.load(tiny_xc_dir)
    aug_texts = ds.trn_texts + ds.lbl_texts
    with pytest.raises(ValueError, match="texts but Y has"):
        LabelAugmentedTrain(texts=aug_texts, Y=ds.trn_Y, num_docs=ds.num_train)
    shuffled = ds.with_label_rows().Y.tolil()
    shuffled[ds.num_train] = 0
    shuffled[ds.num_train, 1] = 1
    with pytest.raises(ValueError, match="identity"):
        LabelAugmentedTrain(texts=aug_texts, Y=shuffled.tocsr(), num_docs=ds.num_train)


def test_other_naming_and_npz_load_the_same_data(tiny_xc_dir, ds_dir):
    ref = XCDataset.load(tiny_xc_dir)
    for old, new in (("trn_X.txt", "trn.raw.txt"), ("tst_X.txt", "tst.raw.txt"),
                     ("Y.txt", "lbl.raw.txt"), ("tst_filter_labels.txt", "filter_labels_test.txt")):
        (ds_dir / old).rename(ds_dir / new)
    for split in ("trn", "tst"):
        write_npz(ds_dir / f"{split}_X_Y.npz", getattr(ref, f"{split}_Y"))
        (ds_dir / f"{split}_X_Y.txt").unlink()
    ds = XCDataset.load(ds_dir)
    assert ds.fingerprint() == ref.fingerprint()
    assert ds.tst_texts == ref.tst_texts and (ds.tst_filter != ref.tst_filter).nnz == 0


def test_json_corpora_are_used_when_there_are_no_raw_texts(tiny_xc_dir, tmp_path):
    ref = XCDataset.load(tiny_xc_dir)
    out = tmp_path / "LF-Tiny"
    write_json_corpus(out / "trn.json.gz", ref.trn_texts, Y=ref.trn_Y)
    write_json_corpus(out / "tst.json.gz", ref.tst_texts, Y=ref.tst_Y)
    write_json_corpus(out / "lbl.json.gz", ref.lbl_texts)
    ds = XCDataset.load(out)
    assert ds.fingerprint() == ref.fingerprint() and ds.tst_texts == ref.tst_texts
    assert ds.name == "LF-Tiny"  # no lever_meta.json: named after the folder


def test_missing_meta_uses_folder_name_and_explicit_default_propensity(ds_dir, tmp_path):
    (ds_dir / "lever_meta.json").unlink()
    with pytest.warns(UserWarning, match="no lever_meta.json"):
        assert XCDataset.load(ds_dir).meta.name == "ds"
    amazon = tmp_path / "LF-AmazonTitles-tiny"
    shutil.copytree(ds_dir, amazon)
    with pytest.warns(UserWarning, match="A=0.6, B=2.6 for Amazon"):
        meta = XCDataset.load(amazon).meta
    # Never guessed from the name: the defaults, until lever_meta.json says otherwise.
    assert (meta.propensity_a, meta.propensity_b) == (0.55, 1.5)


def test_non_binary_labels_are_binarised_with_a_warning(ds_dir):
    Y = XCDataset.load(ds_dir).trn_Y * 3
    write_sparse_text(ds_dir / "trn_X_Y.txt", Y)
    with pytest.warns(UserWarning, match=r"trn_X_Y\.txt.*not binary"):
        ds = XCDataset.load(ds_dir)
    assert set(np.unique(ds.trn_Y.data)) == {1}


def _append_line(path, line):
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


BREAKAGES = {
    "extra train text": (lambda d: _append_line(d / "trn_X.txt", "one more"), "trn_X_Y.txt",
                         "has 200 rows but "),
    "extra label text": (lambda d: _append_line(d / "Y.txt", "one more label"), "trn_X_Y.txt",
                         "40 columns but Y.txt has 41 label texts"),
    "filter out of range": (lambda d: _append_line(d / "tst_filter_labels.txt", "60 0"),
                            "tst_filter_labels.txt:7", "row 60 out of range"),
    "bow rows": (lambda d: write_sparse_text(d / "trn_X_Xf.txt", sp.eye(199, 8, format="csr")),
                 "trn_X_Xf.txt", "199 rows"),
    "bow dims": (lambda d: (write_sparse_text(d / "trn_X_Xf.txt", sp.eye(200, 8, format="csr")),
                            write_sparse_text(d / "tst_X_Xf.txt", sp.eye(60, 9, format="csr"))),
                 "tst_X_Xf.txt", "dimension 9"),
    "no texts": (lambda d: (d / "Y.txt").unlink(), "ds", "missing text file"),
    "no labels": (lambda d: (d / "tst_X_Y.txt").unlink(), "ds", "missing label file"),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_inconsistent_folders_are_rejected_with_the_file_named(ds_dir, case):
    breakage, where, fragment = BREAKAGES[case]
    breakage(ds_dir)
    with pytest.raises(XCFormatError) as info:
        XCDataset.load(ds_dir)
    assert where in str(info.value) and fragment in str(info.value)
    if case == "extra train text":  # both files named: either may be the wrong one
        assert str(info.value).endswith("ds/trn_X.txt has 201 texts")


def test_bow_features_are_loaded_and_checked(ds_dir):
    write_sparse_text(ds_dir / "trn_X_Xf.txt", sp.eye(200, 8, format="csr"))
    write_npz(ds_dir / "tst_X_Xf.npz", sp.eye(60, 8, format="csr"))
    ds = XCDataset.load(ds_dir)
    assert ds.trn_X_bow.shape == (200, 8) and ds.tst_X_bow.shape == (60, 8)


def test_write_dataset_is_all_or_nothing_and_removes_stale_files(tmp_path):
    parts = synthetic_dataset(30, 10, 12, seed=3, num_reciprocal=2)
    bad = dict(parts, trn_texts=parts["trn_texts"][:-1] + ["broken\nline"])
    with pytest.raises(ValueError, match="line break"):
        write_dataset(tmp_path / "out", **bad)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # no temp folder left behind
    short = dict(parts, trn_texts=parts["trn_texts"][:-1])
    with pytest.raises(XCFormatError, match="trn_texts has 29 texts"):
        write_dataset(tmp_path / "out", **short)
    write_dataset(tmp_path / "out", **parts)
    assert (tmp_path / "out" / "tst_filter_labels.txt").exists()
    write_dataset(tmp_path / "out", **dict(parts, tst_filter=None))
    assert not (tmp_path / "out" / "tst_filter_labels.txt").exists()
    assert XCDataset.load(tmp_path / "out").tst_filter is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_meta_roundtrip_keeps_unknown_fields_in_extra(tmp_path):
    meta = DatasetMeta(name="x", propensity_a=0.5, propensity_b=0.4, source="s", extra={"k": 1})
    meta.save(tmp_path)
    assert DatasetMeta.load(tmp_path) == meta
    (tmp_path / "lever_meta.json").write_text('{"name": "y", "depth": 3}')
    assert DatasetMeta.load(tmp_path).extra == {"depth": 3}
    (tmp_path / "lever_meta.json").write_text('{"name": "y",\n "propensity_a": "high"}')
    with pytest.raises(XCFormatError, match="propensity_a"):
        DatasetMeta.load(tmp_path)
