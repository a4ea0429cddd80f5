"""Round trips and error messages of every XC file format reader/writer."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from lever.data import (
    XCFormatError,
    binarize,
    read_filter,
    read_json_corpus,
    read_legacy,
    read_matrix,
    read_npz,
    read_sparse_text,
    read_texts,
    write_filter,
    write_json_corpus,
    write_legacy,
    write_matrix,
    write_texts,
)


def _random_csr(n=30, d=17, density=0.2, seed=0, binary=False):
    m = sp.random(n, d, density=density, format="csr", random_state=seed, dtype=np.float32)
    if binary:
        m.data[:] = 1
    m = m.tolil()
    m[3] = 0  # an empty row in the middle
    return sp.csr_matrix(m)


def _same(a, b):
    assert a.shape == b.shape
    assert (abs(a - b) > 0).nnz == 0


@pytest.mark.parametrize("ext", [".txt", ".npz"])
@pytest.mark.parametrize("binary", [True, False])
def test_matrix_roundtrip(tmp_path, monkeypatch, ext, binary):
    from lever.data import formats

    monkeypatch.setattr(formats, "_WRITE_CHUNK_ROWS", 7)  # rows are written in several chunks
    m = _random_csr(binary=binary).tolil()
    m[m.shape[0] - 1] = 0  # an empty last row must survive too
    m = sp.csr_matrix(m)
    path = tmp_path / f"m{ext}"
    write_matrix(path, m)
    back = read_matrix(path)
    assert back.dtype == np.float32
    _same(back, m)
    assert np.array_equal(back.data, m.data)  # float32 values round-trip exactly
    if ext == ".txt":
        first = path.read_text().splitlines()[0]
        assert first == f"{m.shape[0]} {m.shape[1]}"


def test_sparse_text_reads_pyxclib_style_values_and_crlf(tmp_path):
    p = tmp_path / "tst_X_Y.txt"
    p.write_bytes(b"3 4\r\n0:1.00000 3:1.00000\r\n\r\n2:0.50000\r\n")
    m = read_sparse_text(p)
    assert m.shape == (3, 4)
    assert m.toarray().tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0.5, 0]]


def test_legacy_roundtrip_and_rows_without_labels(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("3 5 4\n1,3 0:0.5 4:2\n 2:1\n0\n")
    X, Y = read_legacy(p)
    assert X.toarray().tolist() == [[0.5, 0, 0, 0, 2], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert Y.toarray().tolist() == [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]]
    p.write_text("2 5 4\n0:1\n2\n")  # a row may also start directly with a feature
    X, Y = read_legacy(p)
    assert Y[0].nnz == 0 and X[0, 0] == 1 and Y[1, 2] == 1
    X2, Y2 = _random_csr(seed=1), _random_csr(d=9, seed=2, binary=True)
    write_legacy(tmp_path / "l.txt", X2, Y2)
    X3, Y3 = read_legacy(tmp_path / "l.txt")
    _same(X3, X2)
    _same(Y3, Y2)


def test_texts_roundtrip_keeps_unicode_and_tabs(tmp_path):
    texts = ["plain", "", "tab\tinside", "unicode ünïcødé \u2028 line separator", "last"]
    write_texts(tmp_path / "trn_X.txt", texts)
    assert read_texts(tmp_path / "trn_X.txt", expected=5) == texts
    with pytest.raises(ValueError, match="line break"):
        write_texts(tmp_path / "bad.txt", ["a\nb"])


def test_ngame_raw_text_uid_column_is_stripped(tmp_path):
    p = tmp_path / "trn.raw.txt"
    p.write_text("B001\tred shoes\nB002\tblue hat\tlarge\n")
    assert read_texts(p) == ["red shoes", "blue hat\tlarge"]
    q = tmp_path / "trn_X.txt"  # Renée names are read verbatim
    q.write_text("B001\tred shoes\n")
    assert read_texts(q) == ["B001\tred shoes"]
    r = tmp_path / "lbl.raw.txt"  # not every line has a uid: verbatim
    r.write_text("B001\tred shoes\nno uid here\n")
    assert read_texts(r) == ["B001\tred shoes", "no uid here"]


def test_json_corpus_roundtrip(tmp_path):
    Y = _random_csr(n=6, d=5, density=0.4, binary=True)
    titles = [f"title {i}" for i in range(6)]
    write_json_corpus(tmp_path / "trn.json.gz", titles, [f"body\n{i}" for i in range(6)], Y)
    c = read_json_corpus(tmp_path / "trn.json.gz", num_labels=5)
    _same(c.Y, Y)
    assert c.texts("title") == titles
    assert c.texts()[2] == "title 2 body 2"  # newlines in content collapse to spaces
    assert c.uids == [str(i) for i in range(6)]


def test_filter_roundtrip_and_empty_file(tmp_path):
    f = sp.csr_matrix(([1, 1, 1], ([0, 2, 2], [1, 0, 3])), shape=(4, 5), dtype=np.float32)
    write_filter(tmp_path / "tst_filter_labels.txt", f)
    assert (tmp_path / "tst_filter_labels.txt").read_text() == "0 1\n2 0\n2 3\n"
    _same(read_filter(tmp_path / "tst_filter_labels.txt", (4, 5)), f)
    (tmp_path / "empty.txt").write_text("")
    assert read_filter(tmp_path / "empty.txt", (4, 5)).nnz == 0


def test_binarize_warns_naming_the_file():
    m = sp.csr_matrix(np.array([[3, 0], [1, 7]], dtype=np.float32))
    with pytest.warns(UserWarning, match=r"aol/trn_X_Y\.npz.*not binary"):
        b = binarize(m, "aol/trn_X_Y.npz")
    assert b.toarray().tolist() == [[1, 0], [1, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binarize(sp.csr_matrix(np.eye(2, dtype=np.float32)), "ok.txt")


def _gz(lines: list[str]) -> bytes:
    return gzip.compress("".join(line + "\n" for line in lines).encode())


# (reader, file name, content, expected line or None, message fragment)
MALFORMED = [
    ("sparse", "trn_X_Y.txt", b"3\n0:1\n", 1, "header"),
    ("sparse", "trn_X_Y.txt", b"two 5\n0:1\n", 1, "header"),
    ("sparse", "trn_X_Y.txt", b"3 5\n0:1\n1:1\n", 1, "3 rows but the file has 2"),
    ("sparse", "trn_X_Y.txt", b"2 5\n0:1\n1-1\n", 3, "malformed token"),
    ("sparse", "trn_X_Y.txt", b"2 5\n0:1:2\n\n", 2, "malformed token"),
    ("sparse", "trn_X_Y.txt", b"2 5\n0:1 3:\n\n", 2, "malformed token"),
    ("sparse", "trn_X_Y.txt", b"2 5\n\n0:x\n", 3, "malformed token"),
    ("sparse", "trn_X_Y.txt", b"2 5\n\n1_0:1\n", 3, "malformed token"),
    ("sparse", "trn_X_Y.txt", b"2 5\n0:1 :1\n\n", 2, "malformed token"),
    ("sparse", "trn_X_Y.txt", b"2 5\n0:1\n5:1\n", 3, "out of range"),
    ("sparse", "trn_X_Y.txt", b"2 5\n-1:1\n\n", 2, "out of range"),
    ("sparse", "trn_X_Y.txt", b"2 5\n0:1 0:1\n\n", 2, "twice"),
    ("sparse", "trn_X_Y.txt", b"", None, "empty"),
    ("npz", "trn_X_Y.npz", b"not a zip", None, "npz"),
    ("legacy", "train.txt", b"2 3 4\n1,x 0:1\n 1:1\n", 2, "label list"),
    ("legacy", "train.txt", b"2 3 4\n1 0:1\n 1:1 3:1\n", 3, "feature index 3 out of range"),
    ("legacy", "train.txt", b"2 3 4\n1,4 0:1\n 1:1\n", 2, "label 4 out of range"),
    ("legacy", "train.txt", b"2 3\n", 1, "header"),
    ("texts", "trn_X.txt", b"a\nb\nc\n", 3, "3 text lines but 4 were expected"),
    ("texts", "trn_X.txt", b"ok\n\xff\xfe\n", 2, "not valid utf-8"),
    ("texts", "trn_X.txt", b"", None, "empty"),
    ("filter", "tst_filter_labels.txt", b"0 1\n2\n", 2, "row col"),
    ("filter", "tst_filter_labels.txt", b"0 1\n1 x\n", 2, "row col"),
    ("filter", "filter_labels_test.txt", b"0 1\n99 0\n", 2, "row 99 out of range"),
    ("filter", "filter_labels_test.txt", b"0 9\n", 1, "column 9 out of range"),
    ("json", "trn.json.gz", _gz(['{"uid": 1, "title": "a"}', "{oops"]), 2, "JSON"),
    ("json", "trn.json.gz", _gz(['{"title": "a", "target_ind": [0, 7]}']), 1, "out of range"),
    ("json", "trn.json.gz", _gz(['{"title": "a", "target_ind": "0"}']), 1, "target_ind"),
]

READERS = {
    "sparse": read_sparse_text,
    "npz": read_npz,
    "legacy": read_legacy,
    "texts": lambda p: read_texts(p, expected=4),
    "filter": lambda p: read_filter(p, (3, 5)),
    "json": lambda p: read_json_corpus(p, num_labels=5),
}


@pytest.mark.parametrize(
    "reader,name,content,line,fragment",
    MALFORMED,
    ids=[f"{r}-{i}" for i, (r, *_rest) in enumerate(MALFORMED)],
)
def test_malformed_files_name_file_and_line(tmp_path, reader, name, content, line, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(XCFormatError) as info:
        READERS[reader](path)
    err = info.value
    assert err.path == str(path)
    assert err.line == line
    assert fragment in err.message
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(err).startswith(prefix)


@pytest.mark.parametrize("reader", ["sparse", "npz", "legacy", "texts", "filter", "json"])
def test_missing_files_are_named(tmp_path, reader):
    with pytest.raises(XCFormatError, match="not found") as info:
        READERS[reader](tmp_path / "absent.txt")
    assert "absent.txt" in str(info.value)


def test_sparse_fast_path_agrees_with_dense_truth_on_many_rows(tmp_path):
    rng = np.random.default_rng(0)
    dense = (rng.random((500, 50)) < 0.05) * rng.integers(1, 9, (500, 50)) / 8
    lines = [f"{dense.shape[0]} {dense.shape[1]}"]
    for row in dense:
        lines.append(" ".join(f"{j}:{row[j]}" for j in np.flatnonzero(row)))
    (tmp_path / "m.txt").write_text("\n".join(lines) + "\n")
    assert np.allclose(read_sparse_text(tmp_path / "m.txt").toarray(), dense)


def test_latin1_texts_need_the_encoding_and_errors_survive_pickling(tmp_path):
    import pickle

    p = tmp_path / "trn.raw.txt"
    p.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    with pytest.raises(XCFormatError, match="latin-1") as info:
        read_texts(p)
    assert read_texts(p, encoding="latin-1") == ["café crème"]
    err = pickle.loads(pickle.dumps(info.value))
    assert (err.path, err.line, str(err)) == (info.value.path, 1, str(info.value))
