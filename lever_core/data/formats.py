"""Readers and writers for the Extreme Classification Repository file formats.

Every reader reports bad input as :class:`XCFormatError` naming the file, the 1-based line and what
was expected. Sparse text files are parsed with a vectorised fast path; only when that path finds
something wrong does a line-by-line pass run to say exactly where.

Formats (see docs/data.md):

- sparse text: header ``rows cols``, then one row per line of ``idx:val`` tokens (0-based); an
  empty line is an empty row. Label matrices (``trn_X_Y.txt``) and BoW features (``trn_X_Xf.txt``).
- scipy ``.npz`` (``scipy.sparse.save_npz``); loaded without pickles.
- legacy single file: header ``points features labels``, rows ``l1,l2 f:v f:v``.
- raw text: one item per line (``trn_X.txt`` or ``trn.raw.txt``).
- ``*.json.gz`` corpora: one JSON object per line with ``uid``, ``title``, ``content``,
  ``target_ind`` and optionally ``target_rel``.
- reciprocal-pair filters: ``row col`` per line.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lever.utils.atomic import atomic_path

PathLike = str | os.PathLike


class XCFormatError(ValueError):
    """A data file does not match its format. Renders as ``FILE:LINE: message``."""

    def __init__(self, path: PathLike, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # keeps the fields when the error crosses a process boundary
        return (type(self), (self.path, self.message, self.line))


# ----------------------------------------------------------------------------- helpers


def _read_bytes(path: PathLike) -> bytes:
    path = Path(path)
    if not path.exists():
        raise XCFormatError(path, "file not found")
    if path.is_dir():
        raise XCFormatError(path, "expected a file, found a folder")
    data = path.read_bytes()
    if not data or data.isspace():
        raise XCFormatError(path, "file is empty")
    return data


def _split_lines(body: bytes) -> list[bytes]:
    """Lines of ``body`` without their terminators; a final newline does not start a new line."""
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def _parse_header(path: PathLike, line: bytes, names: tuple[str, ...]) -> list[int]:
    fields = line.split()
    expected = " ".join(names)
    if len(fields) != len(names):
        raise XCFormatError(
            path, f"header must be '{expected}' ({len(names)} integers), got {_show(line)}", 1
        )
    try:
        values = [int(f) for f in fields]
    except ValueError:
        raise XCFormatError(path, f"header must be '{expected}' as integers, got {_show(line)}", 1)
    if any(v < 0 for v in values):
        raise XCFormatError(path, f"header '{expected}' has a negative value: {_show(line)}", 1)
    return values


def _show(line: bytes, limit: int = 60) -> str:
    text = line.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ----------------------------------------------------------------------------- sparse text

_INT_TOKEN = re.compile(rb"[+-]?\d+")
_WS = np.zeros(256, dtype=bool)
_WS[[ord(" "), ord("\t"), ord("\r"), ord("\n")]] = True


def _count_lines(body: bytes) -> int:
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def _scan_tokens(body: bytes, num_rows: int) -> np.ndarray | None:
    """CSR ``indptr`` of ``body``'s ``idx:val`` rows, or None if some token is malformed.

    Vectorised over the bytes: token starts and colons must interleave (start < colon < next
    start), which is "exactly one colon per token" without a Python loop over tokens; a colon
    must also be followed by text. Tokens per row = colons per line.
    """
    indptr = np.zeros(num_rows + 1, dtype=np.int64)
    if not body:
        return indptr
    arr = np.frombuffer(body, dtype=np.uint8)
    ws = _WS[arr]
    starts_mask = ~ws
    starts_mask[1:] &= ws[:-1]
    starts = np.flatnonzero(starts_mask)
    del starts_mask
    colons = np.flatnonzero(arr == ord(":"))
    if starts.size != colons.size:
        return None
    if colons.size:
        if not (np.all(starts < colons) and np.all(colons[:-1] < starts[1:])):
            return None
        after = colons + 1
        if after[-1] >= arr.size or ws[after].any():
            return None
    newlines = np.flatnonzero(arr == ord("\n"))
    row_of = np.searchsorted(newlines, colons)
    np.cumsum(np.bincount(row_of, minlength=num_rows)[:num_rows], out=indptr[1:])
    return indptr


def _parse_token_rows(
    path: PathLike, body: bytes, num_rows: int, num_cols: int, first_line: int,
    what: str = "column",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``num_rows`` lines of ``idx:val`` tokens into CSR arrays (indptr, indices, data).

    ``first_line`` is the file line number of the first line of ``body`` (for messages).
    """
    indptr = _scan_tokens(body, num_rows)
    indices = data = None
    if indptr is not None:
        # fromstring stops at the first unparsable token (a DeprecationWarning on older numpy, a
        # ValueError on newer); either way the line-by-line pass below says where.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                flat = np.fromstring(body.replace(b":", b" "), dtype=np.float64, sep=" ")
            except ValueError:
                flat = np.zeros(0)
        if flat.size == 2 * indptr[-1]:
            idx_f = flat[0::2]
            if np.array_equal(idx_f, np.floor(idx_f)):
                indices = idx_f.astype(np.int64)
                data = flat[1::2].astype(np.float32)
        del flat
    if indices is None:
        _diagnose_token_rows(path, _split_lines(body), num_cols, first_line)
        raise XCFormatError(path, "malformed 'index:value' tokens")  # pragma: no cover
    bad = np.flatnonzero((indices < 0) | (indices >= num_cols))
    if bad.size:
        row = int(np.searchsorted(indptr, bad[0], side="right") - 1)
        raise XCFormatError(
            path,
            f"{what} index {indices[bad[0]]} out of range [0, {num_cols}) (header says {num_cols})",
            first_line + row,
        )
    if not np.all(np.isfinite(data)):
        bad_at = int(np.flatnonzero(~np.isfinite(data))[0])
        row = int(np.searchsorted(indptr, bad_at, side="right") - 1)
        raise XCFormatError(path, f"value {data[bad_at]} is not finite", first_line + row)
    return indptr, indices, data


def _diagnose_token_rows(path: PathLike, lines: list[bytes], num_cols: int, first_line: int):
    """The slow pass: find the first bad token and raise an error pointing at its line."""
    for i, line in enumerate(lines):
        for tok in line.split():
            idx, sep, val = tok.partition(b":")
            ok = sep and _INT_TOKEN.fullmatch(idx) and val and b":" not in val and b"_" not in val
            if ok:
                try:
                    int(idx)
                    float(val)
                except ValueError:
                    ok = False
            if not ok:
                raise XCFormatError(
                    path, f"malformed token {_show(tok)}: expected 'index:value'", first_line + i
                )


def _check_duplicates(path: PathLike, csr: sp.csr_matrix, first_line: int) -> None:
    """Sort each row's indices in place and reject a row that names the same index twice."""
    csr.sort_indices()
    same = csr.indices[1:] == csr.indices[:-1]
    if not same.size:
        return
    row_ends = csr.indptr[1:-1] - 1  # a pair straddling two rows is not a duplicate
    same[row_ends[(row_ends >= 0) & (row_ends < same.size)]] = False
    if same.any():
        at = int(np.flatnonzero(same)[0])
        row = int(np.searchsorted(csr.indptr, at, side="right") - 1)
        raise XCFormatError(path, "the same index appears twice in one row", first_line + row)


def read_sparse_text(path: PathLike) -> sp.csr_matrix:
    """Read a sparse text file (``rows cols`` header, ``idx:val`` rows) as float32 CSR."""
    raw = _read_bytes(path)
    header, _, body = raw.partition(b"\n")
    del raw  # body is a copy; do not hold the file twice
    num_rows, num_cols = _parse_header(path, header.rstrip(b"\r"), ("rows", "cols"))
    n_lines = _count_lines(body)
    if n_lines != num_rows:
        raise XCFormatError(
            path, f"header says {num_rows} rows but the file has {n_lines} row lines", 1
        )
    indptr, indices, data = _parse_token_rows(path, body, num_rows, num_cols, first_line=2)
    del body
    csr = sp.csr_matrix((data, indices, indptr), shape=(num_rows, num_cols))
    _check_duplicates(path, csr, first_line=2)
    return csr


_WRITE_CHUNK_ROWS = 50_000


def _format_rows(csr: sp.csr_matrix) -> list[str]:
    csr = sp.csr_matrix(csr)
    csr.sort_indices()
    idx = csr.indices.tolist()
    vals = csr.data
    if np.all(vals == np.round(vals)):
        vtxt = vals.astype(np.int64).astype(str).tolist()
    else:
        # 9 significant digits round-trip any float32 exactly.
        vtxt = [f"{v:.9g}" for v in vals.astype(np.float64).tolist()]
    toks = [f"{i}:{v}" for i, v in zip(idx, vtxt)]
    ptr = csr.indptr.tolist()
    return [" ".join(toks[ptr[r] : ptr[r + 1]]) for r in range(csr.shape[0])]


def write_sparse_text(path: PathLike, matrix) -> None:
    """Write a sparse matrix in the ``rows cols`` sparse text format (atomically)."""
    csr = sp.csr_matrix(matrix)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(f"{csr.shape[0]} {csr.shape[1]}\n")
        for start in range(0, csr.shape[0], _WRITE_CHUNK_ROWS):  # bounded memory for big files
            rows = _format_rows(csr[start : start + _WRITE_CHUNK_ROWS])
            fh.write("\n".join(rows))
            if rows:
                fh.write("\n")


# ----------------------------------------------------------------------------- npz


def read_npz(path: PathLike) -> sp.csr_matrix:
    """Read a ``scipy.sparse.save_npz`` file as float32 CSR (never unpickles)."""
    path = Path(path)
    if not path.exists():
        raise XCFormatError(path, "file not found")
    try:
        m = sp.load_npz(path)  # uses np.load(allow_pickle=False)
    except (ValueError, KeyError, OSError, EOFError) as e:
        raise XCFormatError(path, f"not a scipy sparse .npz file ({e})") from None
    csr = sp.csr_matrix(m, dtype=np.float32)
    if csr.nnz and not np.all(np.isfinite(csr.data)):
        raise XCFormatError(path, "matrix holds non-finite values")
    csr.sum_duplicates()
    csr.sort_indices()
    return csr


def write_npz(path: PathLike, matrix) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        sp.save_npz(tmp, sp.csr_matrix(matrix), compressed=True)


def read_matrix(path: PathLike) -> sp.csr_matrix:
    """Read a sparse matrix, picking the format by extension (``.npz`` or sparse text)."""
    return read_npz(path) if str(path).endswith(".npz") else read_sparse_text(path)


def write_matrix(path: PathLike, matrix) -> None:
    """Write a sparse matrix, picking the format by extension (``.npz`` or sparse text)."""
    if str(path).endswith(".npz"):
        write_npz(path, matrix)
    else:
        write_sparse_text(path, matrix)


def binarize(matrix: sp.spmatrix, source: PathLike | None = None) -> sp.csr_matrix:
    """Binary float32 CSR (1 where non-zero). Warns, naming ``source``, if values were not all 1.

    LF-AOL-270K stores query frequencies; metrics and propensities need 0/1 ground truth.
    """
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    csr.eliminate_zeros()
    if csr.nnz and not np.all(csr.data == 1):
        vals = np.unique(csr.data[:1000])[:5]
        warnings.warn(
            f"{source or 'matrix'}: label values are not binary (e.g. {vals.tolist()}); "
            "binarised to 1 for metrics and propensities",
            stacklevel=2,
        )
    csr.data[:] = 1
    return csr


# ----------------------------------------------------------------------------- legacy single file


def read_legacy(path: PathLike) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Read the legacy single-file format (``points features labels`` header) as (X, Y).

    Rows are ``l1,l2 f:v f:v``; a row without labels starts with a space or a feature token.
    """
    raw = _read_bytes(path)
    header, _, body = raw.partition(b"\n")
    n, d, num_labels = _parse_header(
        path, header.rstrip(b"\r"), ("points", "features", "labels")
    )
    lines = _split_lines(body)
    if len(lines) != n:
        raise XCFormatError(path, f"header says {n} points but the file has {len(lines)} rows", 1)
    feat_lines: list[bytes] = []
    label_lines: list[bytes] = []
    for line in lines:
        first, _, rest = line.partition(b" ")
        if b":" in first or not first:
            label_lines.append(b"")
            feat_lines.append(line)
        else:
            label_lines.append(first)
            feat_lines.append(rest)
    x_ptr, x_idx, x_val = _parse_token_rows(
        path, b"\n".join(feat_lines), n, d, first_line=2, what="feature"
    )
    y_counts = [0 if not ln else ln.count(b",") + 1 for ln in label_lines]
    y_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(y_counts, out=y_ptr[1:])
    try:
        if y_ptr[-1] == 0:
            y_idx = np.zeros(0, dtype=np.int64)
        else:
            joined = b",".join(ln for ln in label_lines if ln)
            y_idx = np.array(joined.split(b",")).astype(np.int64)
        if y_idx.size != y_ptr[-1] or (y_idx < 0).any():
            raise ValueError
    except ValueError:
        for i, ln in enumerate(label_lines):
            for tok in ln.split(b",") if ln else []:
                if not tok.isdigit():
                    raise XCFormatError(
                        path, f"malformed label list {_show(ln)}: expected 'l1,l2,...'", i + 2
                    )
        raise XCFormatError(path, "malformed label lists")  # pragma: no cover
    bad = np.flatnonzero(y_idx >= num_labels)
    if bad.size:
        row = int(np.searchsorted(y_ptr, bad[0], side="right") - 1)
        raise XCFormatError(
            path, f"label {y_idx[bad[0]]} out of range [0, {num_labels})", row + 2
        )
    X = sp.csr_matrix((x_val, x_idx, x_ptr), shape=(n, d))
    Y = sp.csr_matrix((np.ones(y_idx.size, np.float32), y_idx, y_ptr), shape=(n, num_labels))
    _check_duplicates(path, X, 2)
    _check_duplicates(path, Y, 2)
    X.sort_indices()
    Y.sort_indices()
    return X, Y


def write_legacy(path: PathLike, X, Y) -> None:
    X, Y = sp.csr_matrix(X), sp.csr_matrix(Y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    feats = _format_rows(X)
    Y = Y.copy()
    Y.sort_indices()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}\n")
        for r in range(X.shape[0]):
            labels = ",".join(map(str, Y.indices[Y.indptr[r] : Y.indptr[r + 1]].tolist()))
            fh.write(f"{labels} {feats[r]}\n")


# ----------------------------------------------------------------------------- raw texts

_UID_TAB = re.compile(r"^[^\s]+\t")


def read_texts(
    path: PathLike,
    expected: int | None = None,
    *,
    strip_uid: bool | None = None,
    encoding: str = "utf-8",
) -> list[str]:
    """One text per line (a final newline is optional; ``\\r\\n`` accepted).

    ``encoding``: UTF-8 by default; NGAME's extraction script writes ``latin-1``, pass that for
    its ``*.raw.txt`` files if they are not valid UTF-8.

    ``strip_uid``: NGAME-style ``*.raw.txt`` files are sometimes written as ``uid<TAB>text``.
    ``None`` (default) strips the uid field only for files named ``*.raw.txt`` in which *every*
    line starts with a whitespace-free field followed by a tab; Renée-style ``trn_X.txt`` files are
    read verbatim (tabs inside a text are kept). Pass True/False to force either way.
    Lines are split on ``\\n`` only, so texts may hold other Unicode line separators.
    """
    raw = _read_bytes(path)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise XCFormatError(
            path,
            f"not valid {encoding} ({e.reason} at byte {e.start}); NGAME-extracted files may "
            "need encoding='latin-1'",
            line,
        ) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [ln.removesuffix("\r") for ln in lines]
    if strip_uid is None:
        strip_uid = str(path).endswith(".raw.txt") and all(_UID_TAB.match(ln) for ln in lines)
    if strip_uid:
        for i, ln in enumerate(lines):
            if "\t" not in ln:
                raise XCFormatError(path, "expected 'uid<TAB>text'", i + 1)
        lines = [ln.split("\t", 1)[1] for ln in lines]
    if expected is not None and len(lines) != expected:
        raise XCFormatError(
            path, f"has {len(lines)} text lines but {expected} were expected", len(lines)
        )
    return lines


def write_texts(path: PathLike, texts) -> None:
    """One text per line, atomically. Texts may not contain newlines."""
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{path}: text {i} is {type(t).__name__}, not str")
        if "\n" in t or "\r" in t:
            raise ValueError(f"{path}: text {i} contains a line break: {t[:60]!r}")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for t in texts:
            fh.write(t)
            fh.write("\n")


# ----------------------------------------------------------------------------- json.gz corpora


@dataclass
class JsonCorpus:
    """A ``*.json.gz`` corpus: one record per line."""

    uids: list[str]
    titles: list[str]
    contents: list[str]
    Y: sp.csr_matrix | None  # binary labels from target_ind (None if no record has them)
    Y_rel: sp.csr_matrix | None  # target_rel values where present

    def texts(self, fields: str = "title+content") -> list[str]:
        """``"title"`` (NGAME's choice for *Titles* datasets) or ``"title+content"``."""
        if fields == "title":
            return list(self.titles)
        if fields != "title+content":
            raise ValueError(f"fields must be 'title' or 'title+content', got {fields!r}")
        return [f"{t} {c}".strip() for t, c in zip(self.titles, self.contents)]


def _one_line(s) -> str:
    return " ".join(str(s).split()) if s is not None else ""


def read_json_corpus(path: PathLike, num_labels: int | None = None) -> JsonCorpus:
    """Read a ``trn.json.gz``/``tst.json.gz``/``lbl.json.gz`` corpus.

    ``num_labels`` (the line count of ``lbl.json.gz``) bounds ``target_ind``; newlines inside
    titles/contents are collapsed to spaces so texts stay one per line.
    """
    path = Path(path)
    if not path.exists():
        raise XCFormatError(path, "file not found")
    uids, titles, contents = [], [], []
    ptr, ind, rel = [0], [], []
    has_targets = has_rel = False
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    raise XCFormatError(path, "empty line; expected a JSON object", lineno)
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise XCFormatError(path, f"not valid JSON ({e.msg})", lineno) from None
                if not isinstance(rec, dict) or "title" not in rec:
                    raise XCFormatError(path, "expected a JSON object with a 'title' field", lineno)
                uids.append(str(rec.get("uid", lineno - 1)))
                titles.append(_one_line(rec.get("title")))
                contents.append(_one_line(rec.get("content")))
                targets = rec.get("target_ind")
                if targets is not None:
                    has_targets = True
                    if not isinstance(targets, list) or not all(
                        isinstance(t, int) and t >= 0 for t in targets
                    ):
                        raise XCFormatError(
                            path, "'target_ind' must be a list of non-negative integers", lineno
                        )
                    if num_labels is not None and any(t >= num_labels for t in targets):
                        raise XCFormatError(
                            path,
                            f"target_ind {max(targets)} out of range [0, {num_labels})",
                            lineno,
                        )
                    vals = rec.get("target_rel")
                    if vals is not None:
                        has_rel = True
                        if not isinstance(vals, list) or len(vals) != len(targets):
                            raise XCFormatError(
                                path, "'target_rel' must be a list as long as 'target_ind'", lineno
                            )
                    ind.extend(targets)
                    rel.extend(vals if vals is not None else [1.0] * len(targets))
                ptr.append(len(ind))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise XCFormatError(path, f"cannot read gzip'd JSON lines ({e})") from None
    if not uids:
        raise XCFormatError(path, "file is empty")
    Y = Y_rel = None
    if has_targets:
        cols = num_labels if num_labels is not None else (max(ind) + 1 if ind else 0)
        shape = (len(uids), cols)
        Y = sp.csr_matrix(
            (np.ones(len(ind), np.float32), np.asarray(ind, np.int64), np.asarray(ptr)),
            shape=shape,
        )
        _check_duplicates(path, Y, 1)
        Y.sort_indices()
        if has_rel:
            Y_rel = sp.csr_matrix(
                (np.asarray(rel, np.float32), np.asarray(ind, np.int64), np.asarray(ptr)),
                shape=shape,
            )
            Y_rel.sort_indices()
    return JsonCorpus(uids, titles, contents, Y, Y_rel)


def write_json_corpus(path: PathLike, titles, contents=None, Y=None, uids=None) -> None:
    """Write a ``*.json.gz`` corpus (the pyxclib ``write_corpus`` layout)."""
    titles = list(titles)
    n = len(titles)
    contents = list(contents) if contents is not None else [""] * n
    uids = list(uids) if uids is not None else [str(i) for i in range(n)]
    csr = sp.csr_matrix(Y) if Y is not None else None
    if csr is not None and csr.shape[0] != n:
        raise ValueError(f"{path}: Y has {csr.shape[0]} rows for {n} records")
    with atomic_path(path, suffix=".gz") as tmp, gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for i in range(n):
            rec = {"uid": uids[i], "title": titles[i], "content": contents[i]}
            if csr is not None:
                sl = slice(csr.indptr[i], csr.indptr[i + 1])
                rec["target_ind"] = csr.indices[sl].tolist()
                rec["target_rel"] = csr.data[sl].tolist()
            fh.write(json.dumps(rec) + "\n")


# ----------------------------------------------------------------------------- filters


def read_filter(path: PathLike, shape: tuple[int, int]) -> sp.csr_matrix:
    """Read reciprocal-pair filters (``row col`` per line, 0-based) as a binary CSR of ``shape``.

    An empty file is valid (no pairs); LEVER's scripts create empty filter files.
    """
    path = Path(path)
    if not path.exists():
        raise XCFormatError(path, "file not found")
    lines = _split_lines(path.read_bytes())
    pairs = None
    if all(len(ln.split()) == 2 for ln in lines):
        try:
            pairs = np.array(b" ".join(lines).split()).astype(np.int64).reshape(-1, 2)
        except ValueError:
            pairs = None
    if pairs is None:
        for i, ln in enumerate(lines):
            fields = ln.split()
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                raise XCFormatError(
                    path, f"expected 'row col' (two non-negative integers), got {_show(ln)}", i + 1
                )
        raise XCFormatError(path, "malformed filter pairs")  # pragma: no cover
    if pairs.size == 0:
        pairs = np.zeros((0, 2), np.int64)
    for axis, name in ((0, "row"), (1, "column")):
        bad = np.flatnonzero((pairs[:, axis] < 0) | (pairs[:, axis] >= shape[axis]))
        if bad.size:
            raise XCFormatError(
                path,
                f"{name} {pairs[bad[0], axis]} out of range [0, {shape[axis]}) "
                f"for a {shape[0]} x {shape[1]} label matrix",
                int(bad[0]) + 1,
            )
    m = sp.csr_matrix(
        (np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])), shape=shape
    )
    m.data[:] = 1  # repeated pairs would otherwise sum
    return m


def write_filter(path: PathLike, matrix) -> None:
    coo = sp.coo_matrix(matrix)
    order = np.lexsort((coo.col, coo.row))
    rows, cols = coo.row[order].tolist(), coo.col[order].tolist()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(f"{r} {c}\n" for r, c in zip(rows, cols))
