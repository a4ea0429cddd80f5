"""lever.metrics against napkinXC (the reference implementation), hand-computed cases, and the
agreement of every prediction form and of batched accumulation.

Conventions checked against napkinXC 0.7.2 (``napkinxc.metrics``; the module is not called
``measures`` in that release):

- Empty ground-truth rows: napkinXC (zero_division=0) counts them in the mean with value 0, and
  adds 0 to both sums of the PS ratios, exactly like pyxclib; we follow the same convention, so
  the numbers agree with empty rows present (tested below).
- napkinXC reads a CSR ground truth by its stored indices, so a stored 0.0 would count as a
  positive; we binarise (stored zeros are not positives). Inputs given to napkinXC here are
  binary, so this does not show.
- napkinXC's macro metrics ignore ``k`` (``MacroMetricAtK.__init__`` passes ``k=5``), average
  over labels ``0..max label seen`` and fail when there is no true positive at all; we average
  over all ``L`` labels. The comparisons use k=5 and make the last label appear.
- PSP/PSnDCG are compared with napkinXC's default ``normalize=True`` (sum over the ideal
  ranking's sum, a ratio of dataset means), the form published tables use.
- napkinXC ranks a dense row over all labels and a CSR row over its stored entries, as we do;
  its sort is not stable, so the random inputs have no tied scores. Our tie-break (smaller label
  index first) is checked separately across our own input forms.
"""

from __future__ import annotations

import json

import napkinxc.metrics as nx
import numpy as np
import pytest
import scipy.sparse as sp

from lever.metrics import (
    XCMetrics,
    coverage_at_k,
    evaluate,
    format_table,
    inverse_propensity,
    label_counts,
    macro_f1_at_k,
    macro_precision_at_k,
    macro_recall_at_k,
    ndcg_at_k,
    precision_at_k,
    psndcg_at_k,
    psprecision_at_k,
    recall_at_k,
    topk,
)
from lever.metrics.deciles import decile_report, format_deciles, frequency_bins, plot_deciles

K = 5


# ----------------------------------------------------------------------------- inputs


def random_truth(rng, n, L, density, empty_rows=0, skew=0.0):
    """Binary CSR; with ``skew`` > 0 labels are drawn Zipf-like (a few head labels)."""
    p = 1.0 / np.arange(1, L + 1) ** skew
    p /= p.sum()
    rows = []
    for i in range(n):
        m = 0 if i < empty_rows else max(1, rng.binomial(L, density))
        rows.append(np.unique(rng.choice(L, size=min(m, L), replace=False, p=p)) if m else [])
    rows[-1] = np.union1d(rows[-1], [L - 1])  # napkinXC's macro averages over labels 0..max seen
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
    return sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(n, L))


def scores_for(rng, Y, signal=1.0):
    """Dense continuous scores (no ties) correlated with the truth."""
    return rng.random(Y.shape) + signal * Y.toarray() * rng.random(Y.shape)


def sparse_top(S, m):
    """CSR keeping each row's m best scores (rows may be made shorter by the caller)."""
    idx = np.argsort(-S, axis=1)[:, :m]
    rows = np.repeat(np.arange(S.shape[0]), m)
    return sp.csr_matrix((S[rows, idx.ravel()], (rows, idx.ravel())), shape=S.shape)


def napkin_all(Y, P, q):
    return {
        "P": nx.precision_at_k(Y, P, K),
        "nDCG": nx.ndcg_at_k(Y, P, K),
        "PSP": nx.psprecision_at_k(Y, P, q, K),
        "PSnDCG": nx.psndcg_at_k(Y, P, q, K),
        "R": nx.recall_at_k(Y, P, K),
        "C": nx.coverage_at_k(Y, P, K),
        "MacroP": nx.macro_precision_at_k(Y, P, K),
        "MacroR": nx.macro_recall_at_k(Y, P, K),
        "MacroF1": nx.macro_f1_measure_at_k(Y, P, K),
    }


def ours_all(Y, P, q, **kw):
    return {
        "P": precision_at_k(Y, P, K, **kw),
        "nDCG": ndcg_at_k(Y, P, K, **kw),
        "PSP": psprecision_at_k(Y, P, q, K, **kw),
        "PSnDCG": psndcg_at_k(Y, P, q, K, **kw),
        "R": recall_at_k(Y, P, K, **kw),
        "C": coverage_at_k(Y, P, K, **kw),
        "MacroP": macro_precision_at_k(Y, P, K, **kw),
        "MacroR": macro_recall_at_k(Y, P, K, **kw),
        "MacroF1": macro_f1_at_k(Y, P, K, **kw),
    }


def assert_same(ours, ref, atol=1e-6):
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], atol=atol, rtol=0, err_msg=name)


# ----------------------------------------------------------------------------- napkinXC


@pytest.mark.parametrize("skew", [0.0, 1.2])
def test_matches_napkinxc_dense_and_sparse(skew):
    rng = np.random.default_rng(1 + int(skew * 10))
    n, L = 250, 60
    Y = random_truth(rng, n, L, 0.06, empty_rows=7, skew=skew)
    trn = random_truth(rng, 800, L, 0.05, skew=skew)
    q = inverse_propensity(trn, 0.55, 1.5)
    S = scores_for(rng, Y)
    assert_same(ours_all(Y, S, q, batch_size=37), napkin_all(Y, S, q))
    # Sparse top-m with some rows cut short (fewer than k candidates) or empty.
    P = sparse_top(S, 8).tolil()
    for i in range(0, n, 5):
        P[i, P.rows[i][i % 7 :]] = 0  # keep 0..6 entries
    P = P.tocsr()
    P.eliminate_zeros()
    assert (np.diff(P.indptr) < K).sum() > 10 and (np.diff(P.indptr) == 0).any()
    assert_same(ours_all(Y, P, q, batch_size=64), napkin_all(Y, P, q))


def test_matches_napkinxc_with_filter_and_short_lists():
    rng = np.random.default_rng(7)
    n, L = 200, 50
    Y = random_truth(rng, n, L, 0.08, empty_rows=3, skew=0.8)
    q = inverse_propensity(random_truth(rng, 500, L, 0.05, skew=0.8), 0.6, 2.6)
    S = scores_for(rng, Y)
    # Reciprocal pairs: a few per row, some on labels the model scores highly.
    filt = sp.random(n, L, density=0.05, random_state=3, format="lil")
    for i in range(0, n, 4):
        filt[i, int(np.argmax(S[i]))] = 1
    filt = sp.csr_matrix(filt)
    filt.data[:] = 1
    # Reference: remove the filtered pairs by hand and let napkinXC rank the rest.
    ranked = [
        [int(l) for l in np.argsort(-S[i]) if filt[i, l] == 0][: 3 + i % 4]  # 3..6 entries
        for i in range(n)
    ]
    Y_lists = [list(Y[i].indices) for i in range(n)]
    ref = napkin_all(Y_lists, ranked, q)
    P = sparse_top(S, L)  # all labels stored; our filter must do the removing
    trimmed = sp.lil_matrix((n, L))
    for i, r in enumerate(ranked):
        trimmed[i, r] = S[i, r]
    assert_same(ours_all(Y, trimmed.tocsr(), q, filter=filt), ref)
    ours = ours_all(Y, P, q, filter=filt)
    ref_full = napkin_all(
        Y_lists, [[int(l) for l in np.argsort(-S[i]) if filt[i, l] == 0] for i in range(n)], q
    )
    assert_same(ours, ref_full)
    assert not np.allclose(ours["P"], precision_at_k(Y, P, K))  # the filter changed something


def test_inverse_propensity_matches_napkinxc_and_binarises():
    rng = np.random.default_rng(3)
    trn = random_truth(rng, 400, 30, 0.1, skew=1.0)
    for a, b in [(0.55, 1.5), (0.6, 2.6), (0.5, 0.4)]:
        np.testing.assert_allclose(
            inverse_propensity(trn, a, b), nx.Jain_et_al_inverse_propensity(trn, a, b), rtol=1e-12
        )
    soft = trn.copy()
    soft.data = rng.random(soft.nnz) * 0.9 + 0.05  # soft values must not change N_l
    np.testing.assert_allclose(inverse_propensity(soft, 0.55, 1.5), inverse_propensity(trn, 0.55, 1.5))
    # By hand for one label: N=400, natural log.
    n_l = trn[:, 0].nnz
    c = (np.log(400) - 1) * 2.5**0.55
    assert inverse_propensity(trn, 0.55, 1.5)[0] == pytest.approx(1 + c * (n_l + 1.5) ** -0.55)
    with pytest.raises(ValueError, match="b must be > -1"):
        inverse_propensity(trn, 0.55, -2.0)


# ----------------------------------------------------------------------------- by hand


def test_hand_computed_filter_short_lists_and_empty_rows():
    # 3 points, 6 labels. Row 2 has no positives.
    Y = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]]))
    # Row 0 ranks 4 > 2 > 5 > 0; label 4 is a reciprocal pair and must drop out, so the top-3
    # is [2, 5, 0]: hits at ranks 1 and 3. Row 1 predicts only [3] (short list). Row 2: [1, 2].
    preds = (np.array([[4, 2, 5, 0], [3, -1, -1, -1], [1, 2, -1, -1]]),
             np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0, 0, 0], [0.4, 0.3, 0, 0]]))
    filt = sp.csr_matrix(([1.0], ([0], [4])), shape=(3, 6))
    q = np.array([2.0, 1.0, 4.0, 3.0, 1.0, 1.0])
    res = evaluate(Y, preds, q, k=3, filter=filt)
    assert res["P@1"] == pytest.approx(100 * (1 + 1 + 0) / 3)
    assert res["P@3"] == pytest.approx(100 * (2 / 3 + 1 / 3 + 0) / 3)  # divide by k, not list length
    assert res["R@3"] == pytest.approx(100 * (1 + 1 + 0) / 3)
    d = 1 / np.log2(np.arange(2, 5))
    ndcg0 = (d[0] + d[2]) / (d[0] + d[1])
    assert res["nDCG@3"] == pytest.approx(100 * (ndcg0 + 1 + 0) / 3)
    # PSP@3: gains q2=4 at rank 1, q0=2 at rank 3 (row 0), q3=3 at rank 1 (row 1).
    num = ((4 + 2) / 3 + 3 / 3) / 3
    den = ((4 + 2) / 3 + 3 / 3) / 3  # ideal: row 0 -> [4, 2], row 1 -> [3]
    assert res["PSP@3"] == pytest.approx(100 * num / den)
    assert res["PSP@1"] == pytest.approx(100 * ((4 + 3) / 3) / ((4 + 3) / 3))
    psn_num = ((4 * d[0] + 2 * d[2]) / (d[0] + d[1]) + 3 * d[0] / d[0]) / 3
    psn_den = ((4 * d[0] + 2 * d[1]) / (d[0] + d[1]) + 3 * d[0] / d[0]) / 3
    assert res["PSnDCG@3"] == pytest.approx(100 * psn_num / psn_den)
    # Coverage: labels {0, 2, 3} are in the test truth; 2 and 3 are hit at rank 1, 0 at rank 3.
    assert (res["C@1"], res["C@2"], res["C@3"]) == pytest.approx((200 / 3, 200 / 3, 100.0))
    # Macro@1 over 6 labels: label 2 (TP 1, pred 1, pos 1), label 3 (1, 1, 1), label 1 (0, 1, 0),
    # label 0 (0, 0, 1).
    assert res["MacroP@1"] == pytest.approx(100 * 2 / 6)
    assert res["MacroR@1"] == pytest.approx(100 * 2 / 6)
    assert res["MacroF1@1"] == pytest.approx(100 * 2 / 6)
    # Empty rows count as 0 in the mean (pyxclib): dropping row 2 raises P@1 to 100.
    assert evaluate(Y[:2], (preds[0][:2], preds[1][:2]), q, k=3, filter=filt[:2])["P@1"] == 100.0


def test_filtered_pairs_are_never_predicted_even_if_nothing_else():
    preds = sp.csr_matrix(np.array([[0.0, 0.9, 0.0, 0.8]]))
    filt = sp.csr_matrix(np.array([[0, 1, 0, 1]]))
    idx, sc = topk(preds, 3, filter=filt)
    assert idx.tolist() == [[-1, -1, -1]] and np.isneginf(sc).all()
    idx, _ = topk(preds.toarray(), 3, filter=filt)
    assert idx.tolist() == [[0, 2, -1]]  # dense: every unfiltered column is a candidate


# ----------------------------------------------------------------------------- forms agree


def _forms(S_ties, m):
    """Dense, CSR of the top-m, (indices, scores) in shuffled column order with -1 padding."""
    rng = np.random.default_rng(0)
    P = sparse_top(S_ties, m)
    n = S_ties.shape[0]
    idx = np.full((n, m + 2), -1)
    sc = np.zeros((n, m + 2))
    for i in range(n):
        row = P[i]
        perm = rng.permutation(m + 2)[: row.nnz]
        idx[i, perm] = row.indices
        sc[i, perm] = row.data
    return P, (idx, sc)


def test_dense_csr_pairs_and_batches_identical_with_ties():
    rng = np.random.default_rng(5)
    n, L = 300, 40
    Y = random_truth(rng, n, L, 0.1, empty_rows=4, skew=1.0)
    q = inverse_propensity(random_truth(rng, 600, L, 0.05, skew=1.0), 0.55, 1.5)
    S = rng.integers(0, 4, size=(n, L)).astype(np.float64)  # many ties
    filt = sp.random(n, L, density=0.05, random_state=9, format="csr")
    # CSR/pairs hold every label, so all three forms rank the same candidates.
    P, pairs = _forms(S, L)
    assert P.nnz == n * L  # stored zeros are kept: they are real scores
    i_dense = topk(S, K, filter=filt)[0]
    assert (i_dense == topk(P, K, filter=filt)[0]).all()
    assert (i_dense == topk(pairs, K, filter=filt, num_labels=L)[0]).all()
    ref = evaluate(Y, S, q, k=K, filter=filt)
    # Same top-k lists; only the float summation order differs between batch sizes.
    assert evaluate(Y, P, q, k=K, filter=filt) == ref
    assert evaluate(Y, pairs, q, k=K, filter=filt) == ref
    for got in (evaluate(Y, P, q, k=K, filter=filt, batch_size=17),
                evaluate(Y, pairs, q, k=K, filter=filt, batch_size=1)):
        assert got.keys() == ref.keys()
        assert all(got[key] == pytest.approx(ref[key], abs=1e-9) for key in ref)
    # Out-of-order, uneven batches through XCMetrics.update.
    acc = XCMetrics(Y, q, k=K, filter=filt)
    order = rng.permutation(n)
    for chunk in np.array_split(order, [5, 6, 90, 200]):
        acc.update(np.sort(chunk)[::-1].copy(), S[np.sort(chunk)[::-1]])
    assert acc.num_seen == n
    got = acc.summary()
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key


def test_topk_tie_break_padding_and_ranked_pairs():
    S = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    idx, sc = topk(S, 3)
    assert idx.tolist() == [[1, 2, 4], [0, 1, 2]]
    assert sc.dtype == np.float32 and idx.dtype == np.int64
    idx, sc = topk(sp.csr_matrix(S), 3)  # stored zeros dropped by scipy: row 1 is empty
    assert idx.tolist() == [[1, 2, 4], [-1, -1, -1]] and np.isneginf(sc[1]).all()
    idx, _ = topk((np.array([[7, 3, -1], [2, -1, -1]]), None), 3)  # already ranked
    assert idx.tolist() == [[7, 3, -1], [2, -1, -1]]
    with pytest.raises(ValueError, match="same label more than once"):
        topk((np.array([[1, 1]]), np.array([[0.5, 0.4]])), 2)
    with pytest.raises(ValueError, match="NaN"):
        topk(np.array([[np.nan, 1.0]]), 1)


def test_bad_inputs_raise_clear_errors():
    Y = sp.csr_matrix(np.eye(4))
    with pytest.raises(ValueError, match=r"predictions have 3 rows but the test labels have 4"):
        evaluate(Y, np.zeros((3, 4)), None)
    with pytest.raises(ValueError, match="5 label columns but 4"):
        evaluate(Y, np.zeros((4, 5)), None)
    with pytest.raises(ValueError, match=r"filter has shape \(4, 3\)"):
        evaluate(Y, np.zeros((4, 4)), None, filter=sp.csr_matrix((4, 3)))
    with pytest.raises(ValueError, match="cover 3 labels"):
        evaluate(Y, np.zeros((4, 4)), np.ones(3))
    acc = XCMetrics(Y, None, k=2)
    acc.update([0, 1], np.eye(4)[:2])
    with pytest.raises(ValueError, match="already given"):
        acc.update(slice(1, 3), np.eye(4)[1:3])
    assert "PSP@1" not in acc.summary() and acc.summary()["P@1"] == 100.0


# ----------------------------------------------------------------------------- reports


def test_format_table_and_deciles(tmp_path):
    rng = np.random.default_rng(11)
    n, L = 300, 80
    trn = random_truth(rng, 1500, L, 0.04, skew=1.1)
    Y = random_truth(rng, n, L, 0.05, skew=1.1)
    q = inverse_propensity(trn, 0.55, 1.5)
    acc = XCMetrics(Y, q, k=K)
    acc.update(slice(0, n), scores_for(rng, Y, signal=1.5))
    res = acc.summary()
    table = format_table(res)
    assert table.splitlines()[0].split() == ["metric", "@1", "@3", "@5"]
    assert table.splitlines()[3].split() == ["PSP", *[f"{res[f'PSP@{k}']:.2f}" for k in (1, 3, 5)]]
    assert "Macro" not in table

    counts = label_counts(trn)
    bins = frequency_bins(counts, 10)
    mass = np.bincount(bins, weights=counts, minlength=10) / counts.sum()
    assert bins[np.argmax(counts)] == 0 and bins[np.argmin(counts)] == 9
    assert (np.diff([counts[bins == b].min() for b in range(10) if (bins == b).any()]) <= 0).all()
    assert np.abs(mass[1:] - 0.1).max() < 0.06  # roughly equal positive mass per bin
    report = decile_report(acc, counts)
    assert sum(r["num_labels"] for r in report) == L
    assert sum(r["P_contrib"] for r in report) == pytest.approx(res["P@5"])
    assert sum(r["PSP_contrib"] for r in report) == pytest.approx(res["PSP@5"])
    assert sum(r["pred_share"] for r in report) == pytest.approx(100.0)
    assert "R@5" in format_deciles(report, 5)
    png = tmp_path / "deciles.png"
    plot_deciles(report, 5, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decile_recall_by_hand():
    # 4 labels, train counts 8, 4, 2, 2 -> mass 16; 2 bins: {0} (mass 8), {1, 2, 3}.
    trn_counts = np.array([8.0, 4.0, 2.0, 2.0])
    Y = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1]]))
    preds = (np.array([[0, 2], [3, 1]]), None)
    acc = XCMetrics(Y, np.ones(4), k=2)
    acc.update(slice(0, 2), preds)
    rep = decile_report(acc, trn_counts, num_bins=2)
    assert [r["num_labels"] for r in rep] == [1, 3]
    assert rep[0]["R"] == 100.0 and rep[1]["R"] == pytest.approx(100 / 3)  # label 3 hit of {1,2,3}
    assert rep[0]["P_contrib"] + rep[1]["P_contrib"] == pytest.approx(acc.summary()["P@2"])


# ----------------------------------------------------------------------------- CLI


def test_lever_eval_cli(tiny_xc_dir, tmp_path, capsys):
    from lever.cli import main
    from lever.data import XCDataset

    ds = XCDataset.load(tiny_xc_dir)
    rng = np.random.default_rng(0)
    S = rng.random(ds.tst_Y.shape) + ds.tst_Y.toarray()
    pred = tmp_path / "pred.npz"
    sp.save_npz(pred, sp.csr_matrix(S))
    png = tmp_path / "dec.png"
    assert main(["eval", "--data", str(tiny_xc_dir), "--pred", str(pred), "--json",
                 "--deciles", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    q = inverse_propensity(ds.trn_Y, ds.meta.propensity_a, ds.meta.propensity_b)
    ref = evaluate(ds.tst_Y, S, q, k=5, filter=ds.tst_filter)
    for key in ("P@1", "nDCG@3", "PSP@5", "PSnDCG@5", "R@5", "C@5", "MacroF1@5"):
        assert out[key] == pytest.approx(ref[key], abs=1e-4), key  # the .npz holds float32
    assert len(out["deciles"]) == 10 and png.exists()

    assert main(["eval", "--data", str(tiny_xc_dir), "--pred", str(pred),
                 "--propensity-a", "0.6", "--propensity-b", "2.6"]) == 0
    text = capsys.readouterr().out
    assert "A=0.6 B=2.6" in text and text.count("\n") >= 7

    bad = tmp_path / "bad.npz"
    sp.save_npz(bad, sp.csr_matrix(S[:, :-1]))
    assert main(["eval", "--data", str(tiny_xc_dir), "--pred", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and str(S[:, :-1].shape) in err and str(ds.tst_Y.shape) in err
