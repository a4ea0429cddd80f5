"""An XC dataset folder (the Renée/LEVER layout) as one checked object.

``XCDataset.load(dir)`` finds the files under either naming convention, reads them and checks
them against each other, so every later stage can trust that row *i* of ``trn_Y`` belongs to
``trn_texts[i]`` and column *l* to ``lbl_texts[l]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever.data.formats import (
    XCFormatError,
    binarize,
    read_filter,
    read_json_corpus,
    read_matrix,
    read_texts,
    write_filter,
    write_sparse_text,
    write_texts,
)
from lever.utils.atomic import write_json_atomic

META_FILE = "lever_meta.json"

# Each role lists the names it may have, first match wins (Renée/LEVER names first).
TEXT_NAMES = {
    "trn": ("trn_X.txt", "trn.raw.txt", "raw/trn_X.txt"),
    "tst": ("tst_X.txt", "tst.raw.txt", "raw/tst_X.txt"),
    "lbl": ("Y.txt", "lbl.raw.txt", "raw/Y.txt"),
}
LABEL_NAMES = {
    "trn": ("trn_X_Y.txt", "trn_X_Y.npz"),
    "tst": ("tst_X_Y.txt", "tst_X_Y.npz"),
}
FILTER_NAMES = {
    "trn": ("trn_filter_labels.txt", "filter_labels_train.txt"),
    "tst": ("tst_filter_labels.txt", "filter_labels_test.txt"),
}
BOW_NAMES = {
    "trn": ("trn_X_Xf.txt", "trn_X_Xf.npz"),
    "tst": ("tst_X_Xf.txt", "tst_X_Xf.npz"),
}
JSON_NAMES = {"trn": "trn.json.gz", "tst": "tst.json.gz", "lbl": "lbl.json.gz"}

# Every file load() may pick up; when write_dataset rewrites a folder, those it did not write are
# removed so a stale file (an old filter, an old .npz) can never be read with the new data.
_LAYOUT_FILES = tuple(
    name
    for table in (TEXT_NAMES, LABEL_NAMES, FILTER_NAMES, BOW_NAMES)
    for names in table.values()
    for name in names
) + (META_FILE,)

@dataclasses.dataclass
class DatasetMeta:
    """What ``lever_meta.json`` records about a dataset.

    ``propensity_a``/``propensity_b`` are the Jain et al. (2016) constants used for PSP@k.
    """

    name: str
    propensity_a: float = 0.55
    propensity_b: float = 1.5
    source: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> DatasetMeta:
        if not isinstance(d, dict):
            raise XCFormatError(source, "expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        # Unknown keys are kept in `extra` rather than rejected: builders record their parameters.
        extra = dict(d.get("extra") or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        if "name" not in d or not isinstance(d["name"], str):
            raise XCFormatError(source, "field 'name' (a string) is required")
        for key in ("propensity_a", "propensity_b"):
            if key in d and not isinstance(d[key], (int, float)):
                raise XCFormatError(source, f"field '{key}' must be a number, got {d[key]!r}")
        return cls(
            name=d["name"],
            propensity_a=float(d.get("propensity_a", 0.55)),
            propensity_b=float(d.get("propensity_b", 1.5)),
            source=str(d.get("source", "")),
            extra=extra,
        )

    @classmethod
    def load(cls, folder: str | os.PathLike) -> DatasetMeta:
        """Read ``folder/lever_meta.json``; without one, defaults named after the folder."""
        path = Path(folder) / META_FILE
        if not path.exists():
            return cls.default_for(Path(folder).resolve().name)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise XCFormatError(path, f"not valid JSON ({e.msg})", e.lineno) from None
        return cls.from_dict(d, source=str(path))

    @classmethod
    def default_for(cls, name: str) -> DatasetMeta:
        """Defaults for a folder without ``lever_meta.json``: A/B = 0.55/1.5, with a warning.

        A and B are never guessed from the name (a substring rule silently gives WikiSeeAlso the
        Wikipedia constants); the warning says which constants published tables use instead.
        """
        warnings.warn(
            f"dataset {name!r} has no {META_FILE}: PSP@k uses A=0.55, B=1.5. Published tables use "
            "A=0.6, B=2.6 for Amazon datasets and A=0.5, B=0.4 for Wikipedia-500K; record yours in "
            f"{META_FILE} or pass --propensity-a/--propensity-b",
            stacklevel=3,
        )
        return cls(name=name, extra={"propensity_rule": "default 0.55/1.5 (no lever_meta.json)"})

    def save(self, folder: str | os.PathLike) -> None:
        write_json_atomic(Path(folder) / META_FILE, self.to_dict())


@dataclasses.dataclass(frozen=True)
class LabelAugmentedTrain:
    """Training set with one extra row per label ("label as data point", Renée's -Aug datasets).

    Rows ``0..num_docs-1`` are the training documents; row ``num_docs + l`` is label ``l``'s text
    with label ``l`` as its only positive. Construction checks that texts and rows line up and that
    the label block is the identity: the released LEVER notebook saved the un-augmented matrix
    beside augmented texts, which this object cannot represent.
    """

    texts: list[str]
    Y: sp.csr_matrix
    num_docs: int

    def __post_init__(self):
        n_rows, n_labels = self.Y.shape
        if len(self.texts) != n_rows:
            raise ValueError(f"LabelAugmentedTrain: {len(self.texts)} texts but Y has {n_rows} rows")
        if self.num_docs + n_labels != n_rows:
            raise ValueError(
                f"LabelAugmentedTrain: Y has {n_rows} rows; expected num_docs + num_labels = "
                f"{self.num_docs} + {n_labels}"
            )
        block = self.Y[self.num_docs :]
        if not (
            np.array_equal(np.diff(block.indptr), np.ones(n_labels, dtype=np.int64))
            and np.array_equal(block.indices, np.arange(n_labels))
        ):
            raise ValueError("LabelAugmentedTrain: rows after num_docs must be the identity")

    @property
    def num_labels(self) -> int:
        return self.Y.shape[1]


@dataclasses.dataclass
class XCDataset:
    """A loaded, cross-checked XC dataset. See docs/architecture.md for the contract."""

    name: str
    root: Path | None
    trn_texts: list[str]
    tst_texts: list[str]
    lbl_texts: list[str]
    trn_Y: sp.csr_matrix
    tst_Y: sp.csr_matrix
    trn_filter: sp.csr_matrix | None = None
    tst_filter: sp.csr_matrix | None = None
    trn_X_bow: sp.csr_matrix | None = None
    tst_X_bow: sp.csr_matrix | None = None
    meta: DatasetMeta | None = None

    def __post_init__(self):
        if self.meta is None:
            self.meta = DatasetMeta(name=self.name)
        for field in ("trn_Y", "tst_Y", "trn_filter", "tst_filter", "trn_X_bow", "tst_X_bow"):
            value = getattr(self, field)
            if value is not None and not (sp.isspmatrix_csr(value) and value.dtype == np.float32):
                setattr(self, field, sp.csr_matrix(value, dtype=np.float32))
        self.validate()

    @property
    def num_labels(self) -> int:
        return self.trn_Y.shape[1]

    @property
    def num_train(self) -> int:
        return self.trn_Y.shape[0]

    @property
    def num_test(self) -> int:
        return self.tst_Y.shape[0]

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        *,
        text_fields: str | None = None,
        text_encoding: str = "utf-8",
    ) -> XCDataset:
        """Load a dataset folder.

        Texts come from ``trn_X.txt``/``tst_X.txt``/``Y.txt`` or ``trn.raw.txt``/``tst.raw.txt``/
        ``lbl.raw.txt`` (also under ``raw/``); without them, from ``trn/tst/lbl.json.gz``
        (``text_fields``: ``"title"`` or ``"title+content"``; default ``"title"`` when the folder
        name contains "Titles", as NGAME does). Labels from ``*_X_Y.txt`` or ``.npz`` (the
        ``.txt`` wins if both exist). Ground truth is binarised, with a warning if it was not.
        """
        root = Path(folder)
        if not root.is_dir():
            raise XCFormatError(root, "dataset folder not found")
        meta = DatasetMeta.load(root)
        texts: dict[str, list[str]] = {}
        labels: dict[str, sp.csr_matrix | None] = {}

        text_paths = {role: _find(root, names) for role, names in TEXT_NAMES.items()}
        if all(p is None for p in text_paths.values()):
            json_paths = {role: root / name for role, name in JSON_NAMES.items()}
            if not all(p.exists() for p in json_paths.values()):
                raise XCFormatError(
                    root,
                    "no texts found: expected trn_X.txt/tst_X.txt/Y.txt, trn.raw.txt/tst.raw.txt/"
                    "lbl.raw.txt or trn.json.gz/tst.json.gz/lbl.json.gz",
                )
            fields = text_fields or ("title" if "titles" in root.resolve().name.lower() else
                                     "title+content")
            lbl_src = json_paths["lbl"]
            lbl = read_json_corpus(lbl_src)
            texts["lbl"] = lbl.texts(fields)
            for role in ("trn", "tst"):
                corpus = read_json_corpus(json_paths[role], num_labels=len(texts["lbl"]))
                texts[role] = corpus.texts(fields)
                labels[role] = corpus.Y
        else:
            lbl_src = text_paths["lbl"] or root / TEXT_NAMES["lbl"][0]
            for role, path in text_paths.items():
                if path is None:
                    raise XCFormatError(root, f"missing text file: one of {TEXT_NAMES[role]}")
                texts[role] = read_texts(path, encoding=text_encoding)

        for role in ("trn", "tst"):
            path = _find(root, LABEL_NAMES[role])
            if path is not None:
                labels[role] = binarize(read_matrix(path), path)
            elif labels.get(role) is None:
                raise XCFormatError(root, f"missing label file: one of {LABEL_NAMES[role]}")
            label_src = path or root / JSON_NAMES[role]
            text_src = text_paths.get(role) or label_src
            _check_rows(label_src, labels[role], str(text_src), len(texts[role]))
        for role in ("trn", "tst"):
            src = _find(root, LABEL_NAMES[role]) or root / JSON_NAMES[role]
            if labels[role].shape[1] != len(texts["lbl"]):
                raise XCFormatError(
                    src,
                    f"label matrix has {labels[role].shape[1]} columns but "
                    f"{lbl_src.name} has {len(texts['lbl'])} label texts",
                    1,
                )

        filters = {}
        for role in ("trn", "tst"):
            path = _find(root, FILTER_NAMES[role])
            filters[role] = read_filter(path, labels[role].shape) if path is not None else None

        bows = {}
        for role in ("trn", "tst"):
            path = _find(root, BOW_NAMES[role])
            bows[role] = read_matrix(path) if path is not None else None
            if bows[role] is not None and bows[role].shape[0] != labels[role].shape[0]:
                raise XCFormatError(
                    path,
                    f"BoW features have {bows[role].shape[0]} rows but the split has "
                    f"{labels[role].shape[0]} points",
                    1,
                )
        if (
            bows["trn"] is not None
            and bows["tst"] is not None
            and bows["trn"].shape[1] != bows["tst"].shape[1]
        ):
            raise XCFormatError(
                _find(root, BOW_NAMES["tst"]),
                f"BoW dimension {bows['tst'].shape[1]} differs from the train features' "
                f"{bows['trn'].shape[1]}",
                1,
            )

        return cls(
            name=meta.name,
            root=root,
            trn_texts=texts["trn"],
            tst_texts=texts["tst"],
            lbl_texts=texts["lbl"],
            trn_Y=labels["trn"],
            tst_Y=labels["tst"],
            trn_filter=filters["trn"],
            tst_filter=filters["tst"],
            trn_X_bow=bows["trn"],
            tst_X_bow=bows["tst"],
            meta=meta,
        )

    def validate(self) -> None:
        """Check that every part agrees on the number of points and labels."""
        where = self.root or self.name
        _check_rows(where, self.trn_Y, "trn_texts", len(self.trn_texts))
        _check_rows(where, self.tst_Y, "tst_texts", len(self.tst_texts))
        L = len(self.lbl_texts)
        for role, Y in (("trn", self.trn_Y), ("tst", self.tst_Y)):
            if Y.shape[1] != L:
                raise XCFormatError(
                    where, f"{role} labels have {Y.shape[1]} columns for {L} label texts"
                )
        for role, F, Y in (("trn", self.trn_filter, self.trn_Y), ("tst", self.tst_filter, self.tst_Y)):
            if F is not None and F.shape != Y.shape:
                raise XCFormatError(where, f"{role} filter shape {F.shape} != labels {Y.shape}")
        for role, X, Y in (("trn", self.trn_X_bow, self.trn_Y), ("tst", self.tst_X_bow, self.tst_Y)):
            if X is not None and X.shape[0] != Y.shape[0]:
                raise XCFormatError(where, f"{role} BoW has {X.shape[0]} rows for {Y.shape[0]} points")

    # ------------------------------------------------------------------ derived views

    def fingerprint(self) -> str:
        """Hex digest over shapes, the training labels and the label texts.

        Artifacts built from a dataset (soft labels, embeddings) store it so a mismatch is caught.
        """
        h = hashlib.sha256()
        h.update(f"{self.num_train} {self.num_test} {self.num_labels}\n".encode())
        Y = sp.csr_matrix(self.trn_Y)
        Y.sort_indices()
        h.update(np.ascontiguousarray(Y.indptr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(Y.indices, dtype=np.int64).tobytes())
        for t in self.lbl_texts:
            h.update(t.encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()[:32]

    def with_label_rows(self) -> LabelAugmentedTrain:
        """Training set plus one row per label whose only positive is itself."""
        L = self.num_labels
        Y = sp.vstack([self.trn_Y, sp.identity(L, dtype=np.float32, format="csr")], format="csr")
        return LabelAugmentedTrain(
            texts=list(self.trn_texts) + list(self.lbl_texts), Y=Y, num_docs=self.num_train
        )

    def __repr__(self) -> str:
        return (
            f"XCDataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"labels={self.num_labels})"
        )


def _find(root: Path, names) -> Path | None:
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def _check_rows(where, Y: sp.csr_matrix, texts: str, n_texts: int) -> None:
    """Texts and label rows must line up. ``where`` is the label source, ``texts`` names the text
    source; the error names both, since either may be the wrong one."""
    if Y.shape[0] != n_texts:
        raise XCFormatError(
            where, f"the label matrix has {Y.shape[0]} rows but {texts} has {n_texts} texts"
        )


def write_dataset(
    out_dir: str | os.PathLike,
    *,
    trn_texts,
    tst_texts,
    lbl_texts,
    trn_Y,
    tst_Y,
    meta: DatasetMeta,
    tst_filter=None,
    trn_filter=None,
    trn_X_bow=None,
    tst_X_bow=None,
) -> Path:
    """Write a dataset in the Renée/LEVER layout, checked first and all-or-nothing.

    Files are written into a temporary sibling folder; a new ``out_dir`` is then one rename, an
    existing one has each file replaced atomically (and stale layout files removed).
    """
    ds = XCDataset(
        name=meta.name,
        root=None,
        trn_texts=list(trn_texts),
        tst_texts=list(tst_texts),
        lbl_texts=list(lbl_texts),
        trn_Y=sp.csr_matrix(trn_Y, dtype=np.float32),
        tst_Y=sp.csr_matrix(tst_Y, dtype=np.float32),
        trn_filter=None if trn_filter is None else sp.csr_matrix(trn_filter),
        tst_filter=None if tst_filter is None else sp.csr_matrix(tst_filter),
        trn_X_bow=None if trn_X_bow is None else sp.csr_matrix(trn_X_bow),
        tst_X_bow=None if tst_X_bow is None else sp.csr_matrix(tst_X_bow),
        meta=meta,
    )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write_texts(tmp / "trn_X.txt", ds.trn_texts)
        write_texts(tmp / "tst_X.txt", ds.tst_texts)
        write_texts(tmp / "Y.txt", ds.lbl_texts)
        write_sparse_text(tmp / "trn_X_Y.txt", ds.trn_Y)
        write_sparse_text(tmp / "tst_X_Y.txt", ds.tst_Y)
        if ds.tst_filter is not None:
            write_filter(tmp / "tst_filter_labels.txt", ds.tst_filter)
        if ds.trn_filter is not None:
            write_filter(tmp / "trn_filter_labels.txt", ds.trn_filter)
        if ds.trn_X_bow is not None:
            write_sparse_text(tmp / "trn_X_Xf.txt", ds.trn_X_bow)
        if ds.tst_X_bow is not None:
            write_sparse_text(tmp / "tst_X_Xf.txt", ds.tst_X_bow)
        meta.save(tmp)
        if not out.exists():
            os.rename(tmp, out)
        else:
            written = {p.name for p in tmp.iterdir()}
            for name in sorted(written):
                os.replace(tmp / name, out / name)
            for name in _LAYOUT_FILES:
                if name not in written and (out / name).is_file():
                    (out / name).unlink()
            tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
