"""A see-also XC dataset built from FOLDOC, the Free On-line Dictionary of Computing.

Modelled on LF-WikiSeeAlsoTitles (an article's title -> the titles of its "See also" articles):
the documents are FOLDOC entries whose definition cross-references another entry (``{like
this}``), the labels are the entries referenced. Document text: the entry's headwords joined by
``", "`` then its subject tags in parentheses (``full-duplex, fdx (communications)``); label text:
the headwords only. A test document that is itself a label is a reciprocal pair and goes in the
filter files (self-references never reach the ground truth).

The source is Debian's ``dict-foldoc`` in dictd format, parsed directly:

- ``foldoc.index``: one ``headword<TAB>offset<TAB>length`` line per headword, offset and length
  in dictd's base64 (alphabet ``A-Za-z0-9+/``, most significant digit first), headwords
  lower-cased. Several headwords of one entry (its aliases) point to the same byte span.
- ``foldoc.dict.dz``: dictzip, i.e. gzip readable as a whole. An entry's span starts with its
  headword lines (original case, one per line; a long headword may wrap onto a second line),
  a blank line, then the indented definition. Subject tags are ``<...>`` at the start of the
  definition or after a sense number (``2. <storage>``); dictd's own ``00-database-*`` entries
  are metadata, not entries.
"""

from __future__ import annotations

import gzip
import os
import re
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lever.data.dataset import DatasetMeta, write_dataset
from lever.data.formats import XCFormatError

# No published A/B exists for a see-also dataset built here. LF-WikiSeeAlso-320K gets 0.5/0.4 only
# through Renée's "wiki"-in-the-name rule, which ELIAS explicitly excludes ("wiki" but not
# "wikiseealso"); the project never guesses A/B from a name (DatasetMeta.default_for), so the
# pyxclib / LEVER-teacher default is used and recorded in lever_meta.json.
PROPENSITY_A = 0.55
PROPENSITY_B = 1.5

ENV_VAR = "FOLDOC_DICT"
SYSTEM_BASE = Path("/usr/share/dictd/foldoc")  # where Debian's dict-foldoc puts the files
INSTALL_HINT = f"install it with 'apt-get install dict-foldoc', or set {ENV_VAR} / --source"

_DICTD_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DICTD_VALUE = {c: i for i, c in enumerate(_DICTD_DIGITS)}
_METADATA_HEADWORD = re.compile(r"^00-?database")  # dictfmt's 00-database-* (old: 00databaseinfo)
# A subject tag opens the definition or a numbered sense; elsewhere <...> is HTML or BNF in examples.
_SUBJECT_TAG = re.compile(r"(?:\A\s*(?:\d+\.[ \t]+)?|\n\n[ \t]*\d+\.[ \t]+)<([^<>\n]+)>")
_REFERENCE = re.compile(r"\{([^{}]*)\}")


def collapse(text: str) -> str:
    """Whitespace runs (newlines included) as one space, ends trimmed."""
    return " ".join(text.split())


@dataclass(frozen=True)
class FoldocFiles:
    index: Path
    dict: Path


@dataclass
class Entry:
    """One FOLDOC definition with every headword that points to it."""

    headwords: list[str]  # original case, whitespace collapsed, file order
    subjects: list[str]
    references: list[str]  # raw {...} targets, whitespace collapsed, file order
    offset: int  # byte offset in the decompressed dictionary (identifies the entry)
    keys: list[str] = field(default_factory=list)  # the index's (lower-case) headwords

    @property
    def doc_text(self) -> str:
        names = ", ".join(self.headwords)
        return f"{names} ({', '.join(self.subjects)})" if self.subjects else names

    @property
    def label_text(self) -> str:
        return ", ".join(self.headwords)


class FoldocNotFound(FileNotFoundError):
    pass


# ----------------------------------------------------------------------------- finding the files


def find_foldoc(explicit: str | os.PathLike | None = None) -> FoldocFiles:
    """The ``foldoc.index`` / ``foldoc.dict.dz`` pair to read.

    ``explicit`` (the CLI's ``--source``), else ``$FOLDOC_DICT``, else /usr/share/dictd/foldoc.
    Each may name the ``.index`` file, the ``.dict.dz`` (or plain ``.dict``) file, their common
    stem, or a folder holding ``foldoc.index``.
    """
    given = explicit or os.environ.get(ENV_VAR) or SYSTEM_BASE
    origin = "--source" if explicit else (ENV_VAR if os.environ.get(ENV_VAR) else "default")
    base = _stem_of(Path(given))
    index = base.with_name(base.name + ".index")
    if not index.is_file():
        raise FoldocNotFound(f"FOLDOC index {index} not found ({origin} {given}); {INSTALL_HINT}")
    for suffix in (".dict.dz", ".dict"):
        body = base.with_name(base.name + suffix)
        if body.is_file():
            return FoldocFiles(index=index, dict=body)
    raise FoldocNotFound(
        f"FOLDOC dictionary {base}.dict.dz (or {base}.dict) not found beside {index}; "
        f"{INSTALL_HINT}"
    )


def _stem_of(path: Path) -> Path:
    if path.is_dir():
        return path / "foldoc"
    for suffix in (".index", ".dict.dz", ".dict"):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


# ----------------------------------------------------------------------------- dictd files


def decode_dictd_number(digits: str) -> int:
    """dictd's base64 integer: digits of ``A-Za-z0-9+/``, most significant first, no padding."""
    if not digits:
        raise ValueError("empty number")
    value = 0
    for ch in digits:
        if ch not in _DICTD_VALUE:
            raise ValueError(f"{ch!r} is not a dictd base64 digit (A-Z a-z 0-9 + /)")
        value = value * 64 + _DICTD_VALUE[ch]
    return value


@dataclass(frozen=True)
class IndexLine:
    headword: str
    offset: int
    length: int
    lineno: int


def read_dictd_index(path: str | os.PathLike) -> list[IndexLine]:
    """Every ``headword<TAB>offset<TAB>length`` line of a dictd ``.index`` file."""
    path = Path(path)
    lines = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            lines.append(_parse_index_line(path, lineno, raw))
    if not lines:
        raise XCFormatError(path, "file is empty; expected dictd index lines")
    return lines


def _parse_index_line(path: Path, lineno: int, raw: bytes) -> IndexLine:
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise XCFormatError(path, f"not UTF-8 ({e.reason} at byte {e.start})", lineno) from None
    fields = line.split("\t")
    if len(fields) != 3 or not fields[0]:
        raise XCFormatError(
            path, f"expected 'headword<TAB>offset<TAB>length', got {len(fields)} field(s): "
            f"{line[:60]!r}", lineno,
        )
    try:
        offset, length = decode_dictd_number(fields[1]), decode_dictd_number(fields[2])
    except ValueError as e:
        raise XCFormatError(path, f"bad offset/length ({e}) in {line[:60]!r}", lineno) from None
    return IndexLine(fields[0], offset, length, lineno)


def read_dictd_body(path: str | os.PathLike) -> bytes:
    """The decompressed dictionary (dictzip is gzip with an extra header field; plain ``.dict``
    files are read as they are)."""
    path = Path(path)
    if path.suffix != ".dz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise XCFormatError(path, f"not a readable dictzip/gzip file ({e})") from None


# ----------------------------------------------------------------------------- entries


@dataclass
class Foldoc:
    entries: list[Entry]  # dictionary order
    description: str | None  # dictd's 00-database-short, e.g. "The Free On-line ... (19 January 2023)"


def parse_foldoc(files: FoldocFiles) -> Foldoc:
    """All FOLDOC entries; index lines sharing a byte span are one entry with several headwords."""
    index = read_dictd_index(files.index)
    body = read_dictd_body(files.dict)
    spans: dict[tuple[int, int], list[IndexLine]] = defaultdict(list)
    description = None
    for rec in index:
        if rec.headword == "00-database-short":
            description = _database_short(body, rec)
        if not _METADATA_HEADWORD.match(rec.headword):
            spans[rec.offset, rec.length].append(rec)
    if not spans:
        raise XCFormatError(files.index, "no entries besides dictd's 00-database-* metadata")
    entries = [_parse_entry(files, body, start, length, recs)
               for (start, length), recs in sorted(spans.items())]
    return Foldoc(entries, description)


def _database_short(body: bytes, rec: IndexLine) -> str | None:
    text = body[rec.offset : rec.offset + rec.length].decode("utf-8", "replace")
    lines = [collapse(x) for x in text.split("\n")]
    named = [x for x in lines if x and not x.startswith("00-database")]
    return named[0] if named else None


def _parse_entry(files: FoldocFiles, body: bytes, start: int, length: int,
                 recs: list[IndexLine]) -> Entry:
    first = recs[0]
    where = f"entry {first.headword!r} (index line {first.lineno}, bytes {start}+{length})"
    if length == 0 or start + length > len(body):
        problem = "is empty" if length == 0 else f"lies outside {files.dict.name}"
        raise XCFormatError(files.index, f"{where} {problem} ({len(body)} bytes)", first.lineno)
    try:
        text = body[start : start + length].decode("utf-8")
    except UnicodeDecodeError as e:
        raise XCFormatError(files.dict, f"{where}: not UTF-8 ({e.reason})",
                            _line_of(body, start + e.start)) from None
    head, _, definition = text.partition("\n\n")
    keys = [collapse(r.headword) for r in recs]
    head_lines = [collapse(line) for line in head.split("\n") if line.strip()]
    if not head_lines or not any(k.startswith(head_lines[0].lower()) for k in keys):
        raise XCFormatError(
            files.dict,
            f"{where}: expected the entry to start with its headword line, found "
            f"{text[:40]!r} (index and dictionary out of step?)",
            _line_of(body, start),
        )
    return Entry(
        headwords=_headwords(head_lines, keys),
        subjects=_subjects(definition),
        references=[r for r in (collapse(m) for m in _REFERENCE.findall(definition)) if r],
        offset=start,
        keys=keys,
    )


def _headwords(head_lines: list[str], keys: list[str]) -> list[str]:
    """Headword lines in their original case, re-joining a headword that wrapped onto the next
    line (the index holds it whole), plus index-only headwords at the end."""
    key_set = set(keys)
    found, pending = [], []
    for line in head_lines:
        pending.append(line)
        if " ".join(pending).lower() in key_set:
            found.append(" ".join(pending))
            pending = []
    found += pending  # headword lines the index does not list are still the entry's names
    seen = {h.lower() for h in found}
    return list(dict.fromkeys(found + [k for k in keys if k not in seen]))


def _subjects(definition: str) -> list[str]:
    tags = (collapse(t) for m in _SUBJECT_TAG.findall(definition) for t in m.split(","))
    return list(dict.fromkeys(t for t in tags if t))


def _line_of(body: bytes, offset: int) -> int:
    return body.count(b"\n", 0, offset) + 1


# ----------------------------------------------------------------------------- references


@dataclass
class Resolution:
    """Per entry, the set of entries it references, and how many references went nowhere."""

    targets: list[set[int]]
    unknown: int
    ambiguous: int
    self_refs: int


def resolve_references(entries: list[Entry]) -> Resolution:
    """Resolve each ``{reference}`` to an entry through any of its headwords.

    An exact (case-sensitive) headword match wins, so ``{PLUS}`` (the language) and ``{plus}``
    (the character) stay apart; otherwise a case-insensitive match over headwords and index keys.
    A reference still naming two entries is ambiguous and dropped, as are references to no
    entry and self-references.
    """
    exact, folded = defaultdict(set), defaultdict(set)
    for i, entry in enumerate(entries):
        for name in entry.headwords:
            exact[name].add(i)
        for name in entry.headwords + entry.keys:
            folded[name.lower()].add(i)
    targets, unknown, ambiguous, self_refs = [], 0, 0, 0
    for i, entry in enumerate(entries):
        found = set()
        for ref in entry.references:
            hits = exact.get(ref) or folded.get(ref.lower(), set())
            if not hits:
                unknown += 1
            elif len(hits) > 1:
                ambiguous += 1
            elif i in hits:
                self_refs += 1
            else:
                found |= hits
        targets.append(found)
    return Resolution(targets, unknown, ambiguous, self_refs)


# ----------------------------------------------------------------------------- the dataset


@dataclass
class FoldocBuild:
    """What :func:`build_foldoc_dataset` produced, for the CLI's summary line."""

    out: Path
    num_train: int
    num_test: int
    num_labels: int
    num_entries: int
    parse_seconds: float
    total_seconds: float


def build_foldoc_dataset(
    out: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    max_docs: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> FoldocBuild:
    """Build the FOLDOC see-also dataset into ``out`` (Renée/LEVER layout).

    ``max_docs`` keeps a seeded random sample of that many documents; the label space is then
    the entries those documents reference. The split is a seeded permutation: the first
    ``1 - test_fraction`` go to train.
    """
    t0 = time.perf_counter()
    files = find_foldoc(source)
    foldoc = parse_foldoc(files)
    entries = foldoc.entries
    parse_seconds = time.perf_counter() - t0
    res = resolve_references(entries)

    docs = np.array([i for i, t in enumerate(res.targets) if t], dtype=np.int64)
    rng = np.random.default_rng(seed)
    if max_docs is not None:
        if max_docs < 2:
            raise ValueError(f"--max-docs must be at least 2, got {max_docs}")
        if max_docs < docs.size:
            docs = np.sort(rng.choice(docs, size=max_docs, replace=False))
    if docs.size < 2:
        raise XCFormatError(files.dict, f"only {docs.size} entries reference another entry; "
                            "need at least 2 documents for a train/test split")
    trn_docs, tst_docs = _split(docs, rng, test_fraction)
    labels = sorted(set().union(*(res.targets[i] for i in docs.tolist())))
    col = {entry: j for j, entry in enumerate(labels)}

    def label_matrix(rows: np.ndarray) -> sp.csr_matrix:
        return _pairs_matrix([[col[t] for t in sorted(res.targets[i])] for i in rows.tolist()],
                             len(labels))

    def reciprocal(rows: np.ndarray) -> sp.csr_matrix:
        return _pairs_matrix([[col[i]] if i in col else [] for i in rows.tolist()], len(labels))

    outp = write_dataset(
        out,
        trn_texts=[entries[i].doc_text for i in trn_docs.tolist()],
        tst_texts=[entries[i].doc_text for i in tst_docs.tolist()],
        lbl_texts=[entries[i].label_text for i in labels],
        trn_Y=label_matrix(trn_docs),
        tst_Y=label_matrix(tst_docs),
        tst_filter=reciprocal(tst_docs),
        trn_filter=reciprocal(trn_docs),
        meta=_meta(files, foldoc, res, docs.size, max_docs, seed, test_fraction),
    )
    return FoldocBuild(
        out=outp,
        num_train=trn_docs.size,
        num_test=tst_docs.size,
        num_labels=len(labels),
        num_entries=len(entries),
        parse_seconds=parse_seconds,
        total_seconds=time.perf_counter() - t0,
    )


def _split(docs: np.ndarray, rng: np.random.Generator,
           test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(docs.size)
    n_test = min(max(round(test_fraction * docs.size), 1), docs.size - 1)
    return np.sort(docs[perm[n_test:]]), np.sort(docs[perm[:n_test]])


def _pairs_matrix(rows: list[list[int]], num_cols: int) -> sp.csr_matrix:
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.array([c for r in rows for c in r], dtype=np.int64)
    data = np.ones(indices.size, dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), num_cols))


def _meta(files: FoldocFiles, foldoc: Foldoc, res: Resolution, num_docs: int,
          max_docs: int | None, seed: int, test_fraction: float) -> DatasetMeta:
    return DatasetMeta(
        name="foldoc" if max_docs is None else f"foldoc-{num_docs}",
        propensity_a=PROPENSITY_A,
        propensity_b=PROPENSITY_B,
        source=foldoc.description or "FOLDOC",
        extra={
            "builder": "lever.data.foldoc",
            "foldoc_index": str(files.index),
            "foldoc_dict": str(files.dict),
            "seed": seed,
            "max_docs": max_docs,
            "test_fraction": test_fraction,
            "entries": len(foldoc.entries),
            "references_unknown": res.unknown,
            "references_ambiguous": res.ambiguous,
            "references_self": res.self_refs,
            "doc_text": "headwords joined by ', ', then ' (' subject tags ')' when tagged",
            "label_text": "headwords joined by ', '",
            "propensity_choice": "0.55/1.5, pyxclib/LEVER-teacher default; no published A/B for "
            "this dataset (Renée's 'wiki' rule gives LF-WikiSeeAlso 0.5/0.4, ELIAS excludes "
            "see-also from it)",
        },
    )

