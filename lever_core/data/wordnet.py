"""A taxonomy-completion XC dataset built from WordNet 3.0 nouns, like LF-WikiHierarchy-1M.

LF-WikiHierarchy-1M maps each Wikipedia category to its ancestor categories within depth 3
(ecosystem.md §1.7). Here the documents are WordNet noun synsets and the labels their hypernym
(``@``) and instance-hypernym (``@i``) ancestors within ``depth`` steps. Texts (documents and
labels alike) are the synset's lemmas, underscores read as spaces, then ``": "`` and the gloss.

``data.noun`` is parsed directly (no nltk). A test document whose synset is itself a label is a
reciprocal pair: it goes in ``tst_filter_labels.txt`` (and train pairs in
``trn_filter_labels.txt``), never in the ground truth (a synset is never its own ancestor).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lever.data.dataset import DatasetMeta, write_dataset
from lever.data.formats import XCFormatError
from lever.utils.atomic import write_text_atomic

# No published A/B exists for WordNet; LEVER's teacher default (pyxclib's "otherwise") is used.
# Renée's name rule would give LF-WikiHierarchy 0.5/0.4, but that rule keys on "wiki" in the
# name, not on the label distribution; we record the choice in lever_meta.json.
PROPENSITY_A = 0.55
PROPENSITY_B = 1.5

_HYPERNYM_POINTERS = frozenset({"@", "@i"})
SYSTEM_DIRS = (Path("/usr/share/wordnet"),)  # where Debian's wordnet-base puts the dict files
_SYNSET_LINE = re.compile(rb"^\d{8} ")


@dataclass
class Synset:
    offset: int
    lemmas: list[str]
    gloss: str
    parents: list[int]  # hypernym and instance-hypernym offsets

    @property
    def text(self) -> str:
        return f"{', '.join(self.lemmas)}: {self.gloss}"


class WordNetNotFound(FileNotFoundError):
    pass


def find_wordnet(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding WordNet 3.0's ``data.noun``.

    Searched: ``explicit``, ``$WNHOME``, ``$WNHOME/dict``, /usr/share/wordnet, and the NLTK data
    folders (``$NLTK_DATA``, ``~/nltk_data``)/corpora/wordnet.
    """
    candidates: list[Path] = []
    if explicit:
        candidates += [Path(explicit), Path(explicit) / "dict"]
    if os.environ.get("WNHOME"):
        candidates += [Path(os.environ["WNHOME"]), Path(os.environ["WNHOME"]) / "dict"]
    candidates += list(SYSTEM_DIRS)
    for root in (os.environ.get("NLTK_DATA"), str(Path.home() / "nltk_data")):
        if root:
            candidates.append(Path(root) / "corpora" / "wordnet")
    for cand in candidates:
        if (cand / "data.noun").is_file():
            return cand
    searched = ", ".join(str(c) for c in candidates)
    raise WordNetNotFound(
        f"WordNet 3.0 data.noun not found (searched {searched}); install it with "
        "'apt-get install wordnet-base' or set WNHOME to the folder holding data.noun"
    )


def parse_data_noun(path: str | os.PathLike) -> dict[int, Synset]:
    """Parse a WordNet ``data.noun`` file into synsets keyed by byte offset.

    Line layout: ``offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt [ptr]... | gloss``
    with each pointer ``symbol offset pos source/target``. License lines start with spaces.
    """
    path = Path(path)
    synsets: dict[int, Synset] = {}
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not _SYNSET_LINE.match(raw):
                if raw.startswith(b"  ") or not raw.strip():
                    continue  # license header
                raise XCFormatError(path, "expected a synset line starting with an 8-digit offset",
                                    lineno)
            synset = _parse_line(path, lineno, raw.decode("utf-8"))
            synsets[synset.offset] = synset
    if not synsets:
        raise XCFormatError(path, "no synsets found")
    return synsets


def _parse_line(path: Path, lineno: int, line: str) -> Synset:
    data, bar, gloss = line.partition(" | ")
    if not bar:
        data, gloss = line.rstrip(), ""
    f = data.split()
    try:
        offset = int(f[0])
        if f[2] != "n":
            raise ValueError(f"synset type {f[2]!r} is not 'n'")
        w_cnt = int(f[3], 16)
        lemmas = [f[4 + 2 * i].replace("_", " ") for i in range(w_cnt)]
        pos = 4 + 2 * w_cnt
        p_cnt = int(f[pos])
        parents = []
        for i in range(p_cnt):
            symbol, target, target_pos = f[pos + 1 + 4 * i : pos + 4 + 4 * i]
            if symbol in _HYPERNYM_POINTERS and target_pos == "n":
                parents.append(int(target))
        if len(f) < pos + 1 + 4 * p_cnt:
            raise IndexError
    except (IndexError, ValueError) as e:
        detail = f" ({e})" if str(e) else ""
        raise XCFormatError(
            path,
            f"malformed synset line{detail}: expected 'offset lex_filenum n w_cnt word lex_id ... "
            "p_cnt pointers | gloss'",
            lineno,
        ) from None
    return Synset(offset, lemmas, " ".join(gloss.split()), parents)


def ancestors_within(synsets: dict[int, Synset], depth: int) -> tuple[list[int], sp.csr_matrix]:
    """(offsets, R): R[i, j] = 1 when synset j is an ancestor of synset i within ``depth`` steps.

    Rows and columns both follow ``offsets`` (sorted). Computed as the union of A, A², ..., A^depth
    over the parent adjacency A, so the whole of WordNet takes a few sparse products.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    offsets = sorted(synsets)
    index = {o: i for i, o in enumerate(offsets)}
    rows, cols = [], []
    for o in offsets:
        for p in synsets[o].parents:
            if p not in index:
                raise KeyError(f"synset {o:08d} points to missing hypernym {p:08d}")
            rows.append(index[o])
            cols.append(index[p])
    n = len(offsets)
    A = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
    A.sum_duplicates()
    A.data[:] = 1
    reach = A.copy()
    step = A
    for _ in range(depth - 1):
        step = step @ A
        step.data[:] = 1
        reach = reach + step
    reach = sp.csr_matrix(reach)
    reach.data[:] = 1
    reach.sort_indices()
    return offsets, reach


@dataclass
class WordNetBuild:
    """What :func:`build_wordnet_dataset` produced, for the CLI's summary line."""

    out: Path
    num_train: int
    num_test: int
    num_labels: int
    dropped_rootless: int
    parse_seconds: float
    total_seconds: float


def build_wordnet_dataset(
    out: str | os.PathLike,
    *,
    wordnet_dir: str | os.PathLike | None = None,
    max_docs: int | None = None,
    seed: int = 0,
    depth: int = 3,
    test_fraction: float = 0.2,
) -> WordNetBuild:
    """Build the WordNet taxonomy-completion dataset into ``out`` (Renée/LEVER layout).

    ``max_docs`` keeps a seeded random sample of that many documents; the label space is then the
    ancestors of the sampled documents only. Documents without ancestors (the root ``entity``)
    are dropped. The split is a seeded permutation: the first ``1 - test_fraction`` go to train.
    """
    t0 = time.perf_counter()
    wn = find_wordnet(wordnet_dir)
    synsets = parse_data_noun(wn / "data.noun")
    parse_seconds = time.perf_counter() - t0
    offsets, reach = ancestors_within(synsets, depth)

    has_labels = np.flatnonzero(np.diff(reach.indptr) > 0)
    dropped = len(offsets) - has_labels.size
    rng = np.random.default_rng(seed)
    docs = has_labels
    if max_docs is not None:
        if max_docs < 2:
            raise ValueError(f"--max-docs must be at least 2, got {max_docs}")
        if max_docs < docs.size:
            docs = np.sort(rng.choice(docs, size=max_docs, replace=False))
    perm = rng.permutation(docs.size)
    n_test = round(test_fraction * docs.size)
    n_test = min(max(n_test, 1), docs.size - 1)
    trn_docs = np.sort(docs[perm[n_test:]])
    tst_docs = np.sort(docs[perm[:n_test]])

    sub = reach[docs]
    label_cols = np.flatnonzero(np.diff(sub.tocsc().indptr) > 0)  # ancestors of kept docs
    col_map = -np.ones(len(offsets), dtype=np.int64)
    col_map[label_cols] = np.arange(label_cols.size)

    def labels_of(rows: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix(reach[rows][:, label_cols], dtype=np.float32)

    def self_pairs(rows: np.ndarray) -> sp.csr_matrix:
        cols = col_map[rows]
        keep = cols >= 0
        return sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (np.flatnonzero(keep), cols[keep])),
            shape=(rows.size, label_cols.size),
        )

    def texts(rows: np.ndarray) -> list[str]:
        return [synsets[offsets[i]].text for i in rows.tolist()]

    version = _wordnet_version(wn / "data.noun")
    meta = DatasetMeta(
        name="WordNet-Hierarchy" if max_docs is None else f"WordNet-Hierarchy-{docs.size}",
        propensity_a=PROPENSITY_A,
        propensity_b=PROPENSITY_B,
        source=f"WordNet {version}" if version else "WordNet",
        extra={
            "builder": "lever.data.wordnet",
            "wordnet_file": str(wn / "data.noun"),
            "depth": depth,
            "seed": seed,
            "max_docs": max_docs,
            "test_fraction": test_fraction,
            "pointers": sorted(_HYPERNYM_POINTERS),
            "text": "lemmas joined by ', ' (underscores as spaces), ': ', gloss",
            "dropped_docs_without_ancestors": int(dropped),
            "propensity_choice": "0.55/1.5, pyxclib/LEVER-teacher default; WordNet has no "
            "published A/B (Renée's name rule would give LF-WikiHierarchy 0.5/0.4)",
            "label_offsets_note": "labels are ordered by WordNet offset; see label_offsets.txt",
        },
    )
    outp = write_dataset(
        out,
        trn_texts=texts(trn_docs),
        tst_texts=texts(tst_docs),
        lbl_texts=texts(label_cols),
        trn_Y=labels_of(trn_docs),
        tst_Y=labels_of(tst_docs),
        tst_filter=self_pairs(tst_docs),
        trn_filter=self_pairs(trn_docs),
        meta=meta,
    )
    # Synset offsets of every row, so results can be traced back to WordNet.
    for name, rows in (("trn", trn_docs), ("tst", tst_docs), ("label", label_cols)):
        write_text_atomic(
            outp / f"{name}_offsets.txt", "".join(f"{offsets[i]:08d}\n" for i in rows.tolist())
        )
    return WordNetBuild(
        out=outp,
        num_train=trn_docs.size,
        num_test=tst_docs.size,
        num_labels=label_cols.size,
        dropped_rootless=int(dropped),
        parse_seconds=parse_seconds,
        total_seconds=time.perf_counter() - t0,
    )


def _wordnet_version(path: Path) -> str | None:
    with open(path, "rb") as fh:
        for _, raw in zip(range(40), fh):
            m = re.search(rb"WordNet (\d+\.\d+)", raw)
            if m:
                return m.group(1).decode()
    return None
