"""Soft labels: τ selection on hand-built embeddings, the SoftLabels file, kNN, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lever.data import XCDataset
from lever.soft_labels import SoftLabels, SoftLabelsError
from lever.soft_labels.build import SoftLabelParams, build_soft_labels, select_label_neighbours
from lever.soft_labels.calibration import (
    Calibrator,
    brier_score,
    expected_calibration_error,
    fit_platt,
    roc_auc,
    save_reliability_diagram,
)
from lever.soft_labels.knn import knn, recall_at_k

LINEAR = Calibrator("linear")


def _unit(deg) -> np.ndarray:
    r = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def _lin(deg_a: float, deg_b: float) -> float:
    return (1 + np.cos(np.deg2rad(deg_a - deg_b))) / 2


# Labels on the unit circle. threshold 0.8 on (1+cos)/2 means cos >= 0.6, i.e. within 53.13°.
LABEL_DEG = [0, 15, 45, 100, 180]
# Documents and their ground truth. Training frequency: L0 3, L1 1, L2 0, L3 2, L4 0.
DOC_DEG = [0, 5, 10, 95, 105, 170, 50]
DOC_LABELS = [[0], [0], [0, 1], [3], [3], [], []]


def _hand_built():
    rows = [i for i, labs in enumerate(DOC_LABELS) for _ in labs]
    cols = [lab for labs in DOC_LABELS for lab in labs]
    Y = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(DOC_DEG), len(LABEL_DEG)))
    return Y, _unit(DOC_DEG), _unit(LABEL_DEG)


def _entries(soft: SoftLabels) -> dict[tuple[int, int], float]:
    coo = soft.csr.tocoo()
    return {(int(r), int(c)): float(v) for r, c, v in zip(coo.row, coo.col, coo.data)}


def test_tau_selection_exact_entries():
    Y, docs, labels = _hand_built()
    n = len(DOC_DEG)
    soft, _report = build_soft_labels(
        Y, docs, labels, SoftLabelParams(tau_l=4, tau_d=2, threshold=0.8), calibrator=LINEAR
    )
    got = _entries(soft)
    expected = {}
    for i, labs in enumerate(DOC_LABELS):  # every ground-truth pair, scored by the teacher
        for lab in labs:
            expected[(i, lab)] = _lin(DOC_DEG[i], LABEL_DEG[lab])
    for lab in range(len(LABEL_DEG)):  # self entries: calibrated cos = 1
        expected[(n + lab, lab)] = 1.0
    # label neighbours, at most τ_l - 1 = 3, gated at 0.8: L3 is 55° from L2 and 85° from L1
    for lab, nbrs in {0: [1, 2], 1: [0, 2], 2: [1, 0], 3: [], 4: []}.items():
        for nb in nbrs:
            expected[(n + lab, nb)] = _lin(LABEL_DEG[lab], LABEL_DEG[nb])
    # τ_d = 2 top-ups for labels with < 2 documents (L2: 0, L4: 0, L1: 1):
    # L2 (45°) gets D6 (50°) and D2 (10°); L4 (180°) only D5 (170°): D4 (105°) is below the gate;
    # L1 (15°) skips its positive D2 and takes D1 (5°).
    for d, lab in [(6, 2), (2, 2), (5, 4), (1, 1)]:
        expected[(d, lab)] = _lin(DOC_DEG[d], LABEL_DEG[lab])
    assert got.keys() == expected.keys()
    for key, v in expected.items():
        assert got[key] == pytest.approx(v, abs=1e-6), key
    c = soft.meta["counts"]
    assert (c["gt_doc"], c["doc_topup"], c["label_self"], c["label_neighbour"]) == (6, 4, 5, 6)
    assert c["labels_below_tau_d"] == 3 and c["labels_reaching_tau_d"] == 4  # L4 stays short
    assert c["label_rows_by_neighbours"] == [2, 0, 3, 0]


def test_tau_l_one_is_self_only_and_threshold_one_adds_nothing():
    Y, docs, labels = _hand_built()
    soft, _ = build_soft_labels(Y, docs, labels, SoftLabelParams(tau_l=1), calibrator=LINEAR)
    lbl = soft.csr[len(DOC_DEG) :]
    assert (lbl != sp.identity(len(LABEL_DEG))).nnz == 0
    soft, _ = build_soft_labels(Y, docs, labels, SoftLabelParams(tau_l=5, threshold=1.0), calibrator=LINEAR)
    assert soft.meta["counts"]["label_neighbour"] == 0


def test_no_overflow_when_candidates_are_skipped():
    # The released kernel advanced its write slot for skipped candidates too. Here a duplicate of
    # label 0 may be retrieved before label 0 itself: exactly τ_l - 1 neighbours must still come
    # out, for every row, and nothing may land in another label's row.
    rng = np.random.default_rng(3)
    labels = rng.standard_normal((50, 8)).astype(np.float32)
    labels[7] = labels[0]
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    scores, ids = knn(labels, labels, 6)
    r, c, _v = select_label_neighbours(np.arange(50), ids, LINEAR(scores), tau_l=6, threshold=0.0)
    per_row = np.bincount(r, minlength=50)
    assert per_row.max() == 5 and per_row.min() == 5
    assert not np.any(r == c)
    assert {int(x) for x in c[r == 0]} >= {7} and {int(x) for x in c[r == 7]} >= {0}
    # each row's neighbours are its own best non-self candidates, in order
    for lab in range(50):
        want = [int(x) for x in ids[lab] if x != lab][:5]
        assert sorted(c[r == lab].tolist()) == sorted(want)


def test_every_ground_truth_pair_scored_exactly():
    rng = np.random.default_rng(0)
    n_docs, n_labels, dim = 400, 60, 12
    lbl = rng.standard_normal((n_labels, dim)).astype(np.float32)
    lbl /= np.linalg.norm(lbl, axis=1, keepdims=True)
    Y = sp.random(n_docs, n_labels, density=0.05, format="csr", random_state=1, dtype=np.float32)
    Y.data[:] = 1
    docs = (Y @ lbl + 0.5 * rng.standard_normal((n_docs, dim))).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    soft, report = build_soft_labels(Y, docs, lbl, SoftLabelParams(tau_l=3, calibration="platt", calib_docs=200))
    cal = Calibrator.from_dict(soft.meta["calibration"])
    coo = Y.tocoo()
    stored = np.asarray(soft.csr[coo.row, coo.col]).ravel()
    want = cal(np.einsum("ij,ij->i", docs[coo.row], lbl[coo.col]))
    np.testing.assert_allclose(stored, want, atol=1e-6)
    assert soft.meta["counts"]["gt_doc"] == Y.nnz
    np.testing.assert_allclose(soft.csr[n_docs:].diagonal(), cal(1.0), atol=1e-6)
    assert set(report["calibration"]["ece"]) == {"linear", "platt"}


def test_exact_knn_in_chunks_equals_brute_force():
    rng = np.random.default_rng(1)
    db = rng.standard_normal((1000, 24)).astype(np.float32)
    q = rng.standard_normal((130, 24)).astype(np.float32)
    s, i = knn(q, db, 25, query_chunk=37, db_chunk=97)  # k > several chunks' worth of merges
    full = q @ db.T
    want = np.argsort(-full, axis=1)[:, :25]
    np.testing.assert_array_equal(i, want)
    np.testing.assert_allclose(s, np.take_along_axis(full, want, axis=1), rtol=1e-5, atol=1e-5)
    s, i = knn(q, db[:10], 12, db_chunk=4)  # fewer database rows than k
    assert (i[:, 10:] == -1).all() and np.isneginf(s[:, 10:]).all()
    np.testing.assert_array_equal(np.sort(i[:, :10], axis=1), np.tile(np.arange(10), (130, 1)))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_have_sane_recall(kind):
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((40, 32))
    db = (centers[rng.integers(0, 40, 4000)] + 0.3 * rng.standard_normal((4000, 32))).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:300] + 0.05 * rng.standard_normal((300, 32)).astype(np.float32)
    _, exact = knn(q, db, 10)
    _, approx = knn(q, db, 10, index=kind)
    assert recall_at_k(approx, exact) >= 0.9


def test_platt_recovers_known_parameters():
    rng = np.random.default_rng(4)
    cos = rng.uniform(-1, 1, 40000)
    y = rng.random(cos.size) < 1 / (1 + np.exp(-(6.0 * cos - 2.0)))
    cal = fit_platt(cos, y)
    assert cal.a == pytest.approx(6.0, abs=0.3)
    assert cal.b == pytest.approx(-2.0, abs=0.15)
    with pytest.raises(ValueError, match="both positive and negative"):
        fit_platt(cos, np.ones_like(cos))


def test_ece_of_calibrated_and_miscalibrated_sets(tmp_path):
    rng = np.random.default_rng(5)
    p = rng.random(100000)
    y = rng.random(p.size) < p
    assert expected_calibration_error(p, y) < 0.01
    assert expected_calibration_error(np.clip(p + 0.3, 0, 1), y) > 0.2
    assert brier_score(p, y) == pytest.approx(1 / 6, abs=0.005)  # E[p(1-p)] for uniform p
    assert roc_auc(p, y) == pytest.approx(5 / 6, abs=0.01)  # P(p_pos > p_neg) for this set
    assert roc_auc(y.astype(float), y) == 1.0 and roc_auc(-y.astype(float), y) == 0.0
    png = save_reliability_diagram(tmp_path / "rel.png", {"calibrated": (p, y), "shifted": (np.clip(p + 0.3, 0, 1), y)})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _dataset(Y: sp.csr_matrix, label_texts: list[str]) -> XCDataset:
    n, L = Y.shape
    return XCDataset(
        name="hand-built",
        root=None,
        trn_texts=[f"doc {i}" for i in range(n)],
        tst_texts=["test doc"],
        lbl_texts=label_texts,
        trn_Y=Y,
        tst_Y=sp.csr_matrix(([1.0], ([0], [0])), shape=(1, L), dtype=np.float32),
    )


def test_save_load_round_trip_and_fingerprint_refusal(tmp_path):
    Y, docs, labels = _hand_built()
    ds = _dataset(Y, [f"label {i}" for i in range(len(LABEL_DEG))])
    soft, _ = build_soft_labels(
        Y, docs, labels, SoftLabelParams(tau_l=3), calibrator=LINEAR, meta={"dataset_fingerprint": ds.fingerprint()}
    )
    path = soft.save(tmp_path / "soft.npz")
    assert (tmp_path / "soft.json").exists()
    back = SoftLabels.load(path, dataset=ds)
    assert (back.csr != soft.csr).nnz == 0 and back.csr.dtype == np.float32
    assert back.meta["tau_l"] == 3 and back.meta["counts"] == soft.meta["counts"]
    np.testing.assert_array_equal(back.rows([0, len(DOC_DEG)]).toarray(), soft.csr[[0, len(DOC_DEG)]].toarray())

    other = _dataset(Y, [f"another label {i}" for i in range(len(LABEL_DEG))])
    with pytest.raises(SoftLabelsError, match=r"soft\.npz: built for dataset fingerprint .* has fingerprint"):
        SoftLabels.load(path, dataset=other)
    bigger = _dataset(sp.vstack([Y, Y[:1]], format="csr"), other.lbl_texts)
    with pytest.raises(SoftLabelsError, match=r"shape \(12, 5\) does not fit dataset"):
        SoftLabels.load(path, dataset=bigger)


def test_exported_at_top_level():
    import lever

    assert lever.SoftLabels is SoftLabels


def test_value_range_and_sidecar_refusals(tmp_path):
    bad = sp.csr_matrix(np.array([[0.5, 0.0], [0.0, 1.5], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    with pytest.raises(SoftLabelsError, match=r"row 1, column 1.*expected calibrated teacher scores in \[0, 1\]"):
        SoftLabels.from_csr(bad)
    # a file whose values were changed behind the sidecar's back is refused on load too
    good = bad.copy()
    good.data[1] = 0.9
    SoftLabels.from_csr(good).save(tmp_path / "s.npz")
    sp.save_npz(tmp_path / "s.npz", bad)
    with pytest.raises(SoftLabelsError, match=r"s\.npz: values span \[0\.5, 1\.5\]"):
        SoftLabels.load(tmp_path / "s.npz")
    meta = json.loads((tmp_path / "s.json").read_text())
    meta["num_docs"] = 3
    (tmp_path / "s.json").write_text(json.dumps(meta))
    with pytest.raises(SoftLabelsError, match=r"differs from its sidecar s\.json"):
        SoftLabels.load(tmp_path / "s.npz")
    (tmp_path / "s.json").unlink()
    with pytest.raises(SoftLabelsError, match="sidecar s.json is missing"):
        SoftLabels.load(tmp_path / "s.npz")
    with pytest.raises(SoftLabelsError, match="fewer rows than labels"):
        SoftLabels.from_csr(sp.csr_matrix((2, 3), dtype=np.float32))
