"""``SoftLabels``: the calibrated teacher scores a student is trained against.

The matrix is the label-augmented training matrix of the dataset it was built for: (N + L) × L,
rows ``0 .. N-1`` are the training documents, row ``N + l`` is label ``l`` used as a data point
(its ground-truth positive is ``l`` itself). Every stored value is a calibrated teacher score
p̂(l | x) in [0, 1]:

* every ground-truth pair (train rows and the label rows' self entries) has one, so the LEVER
  target ``λ·y + (1-λ)·p̂`` is defined on every positive;
* teacher-added pairs (label→label neighbours, label→document top-ups) are stored with their
  score; their ``y`` is 0.

Which stored pairs are ground truth is a property of the dataset (``XCDataset.with_label_rows()``),
not of this file. On disk a soft-label set is ``NAME.npz`` (``scipy.sparse.save_npz``, no pickle)
plus the JSON sidecar ``NAME.json`` holding ``meta``; both are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

FORMAT_VERSION = 1


class SoftLabelsError(ValueError):
    """A soft-label file (or matrix) does not match what it is used with."""


def sidecar_path(path: str | os.PathLike) -> Path:
    """``X.npz`` → ``X.json``."""
    path = Path(path)
    return path.with_suffix(".json") if path.suffix == ".npz" else path.with_name(path.name + ".json")


def _check_values(csr: sp.csr_matrix, where: str) -> None:
    data = csr.data
    if data.size == 0:
        return
    if not np.all(np.isfinite(data)):
        bad = int(np.flatnonzero(~np.isfinite(data))[0])
        row = int(np.searchsorted(csr.indptr, bad, side="right") - 1)
        raise SoftLabelsError(
            f"{where}: value at row {row}, column {int(csr.indices[bad])} is {data[bad]}; "
            "expected finite scores in [0, 1]"
        )
    lo, hi = float(data.min()), float(data.max())
    if lo < 0.0 or hi > 1.0:
        bad = int(np.flatnonzero((data < 0.0) | (data > 1.0))[0])
        row = int(np.searchsorted(csr.indptr, bad, side="right") - 1)
        raise SoftLabelsError(
            f"{where}: values span [{lo:.6g}, {hi:.6g}], e.g. {data[bad]:.6g} at row {row}, column "
            f"{int(csr.indices[bad])}; expected calibrated teacher scores in [0, 1]"
        )


def _as_csr(matrix: Any, where: str) -> sp.csr_matrix:
    if not sp.issparse(matrix):
        raise SoftLabelsError(f"{where}: expected a scipy sparse matrix, got {type(matrix).__name__}")
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    if csr.ndim != 2:
        raise SoftLabelsError(f"{where}: expected a 2-d matrix, got shape {csr.shape}")
    csr.sum_duplicates()  # sorts indices; duplicates would be a builder bug, summed like scipy does
    return csr


class SoftLabels:
    """Calibrated teacher scores over the label-augmented training rows, plus how they were made.

    ``meta`` keys written by ``lever soft-labels build``: ``num_docs``, ``num_labels``,
    ``dataset_fingerprint``, ``dataset``, ``teacher``, ``calibration`` (method and parameters),
    ``tau_l``, ``tau_d``, ``label_threshold``, ``doc_threshold``, ``index``, ``counts``.
    """

    def __init__(self, csr: sp.csr_matrix, meta: dict[str, Any]):
        self.csr = csr
        self.meta = meta

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_csr(cls, csr: Any, meta: dict[str, Any] | None = None) -> SoftLabels:
        """Wrap an in-memory (N + L) × L matrix. ``meta['num_docs']`` defaults to rows − columns."""
        csr = _as_csr(csr, "SoftLabels.from_csr")
        _check_values(csr, "SoftLabels.from_csr")
        meta = dict(meta or {})
        n_rows, n_labels = csr.shape
        meta.setdefault("num_labels", n_labels)
        meta.setdefault("num_docs", n_rows - n_labels)
        if meta["num_labels"] != n_labels or meta["num_docs"] + n_labels != n_rows:
            raise SoftLabelsError(
                f"SoftLabels.from_csr: matrix shape {csr.shape} does not match meta num_docs="
                f"{meta['num_docs']} + num_labels={meta['num_labels']} rows × num_labels columns"
            )
        if meta["num_docs"] < 0:
            raise SoftLabelsError(
                f"SoftLabels.from_csr: shape {csr.shape} has fewer rows than labels; expected "
                "(N + L) × L with one row per label after the N training rows"
            )
        return cls(csr, meta)

    # -- views ----------------------------------------------------------------------------------
    @property
    def num_docs(self) -> int:
        return int(self.meta["num_docs"])

    @property
    def num_labels(self) -> int:
        return int(self.csr.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.csr.shape

    @property
    def nnz(self) -> int:
        return int(self.csr.nnz)

    def label_row(self, label: int) -> int:
        """Row index of label ``label`` used as a data point."""
        return self.num_docs + int(label)

    def rows(self, row_ids: Any) -> sp.csr_matrix:
        """The scores of a batch of rows (indices into the augmented matrix), as CSR."""
        ids = np.asarray(row_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.csr.shape[0]):
            raise IndexError(f"row ids must lie in [0, {self.csr.shape[0]}); got min {ids.min()}, max {ids.max()}")
        return self.csr[ids]

    def check_dataset(self, dataset: Any, where: str = "soft labels") -> None:
        """Refuse a dataset this file was not built for (fingerprint, then shape)."""
        want_shape = (dataset.num_train + dataset.num_labels, dataset.num_labels)
        if tuple(self.csr.shape) != want_shape:
            raise SoftLabelsError(
                f"{where}: shape {tuple(self.csr.shape)} does not fit dataset "
                f"{getattr(dataset, 'name', '?')!r} (expected {want_shape} = (num_train + num_labels, "
                "num_labels)); rebuild with `lever soft-labels build`"
            )
        have = self.meta.get("dataset_fingerprint")
        fp = dataset.fingerprint()
        if have is None:
            raise SoftLabelsError(f"{where}: no dataset_fingerprint in its metadata; cannot check it is for {dataset.name!r}")
        if have != fp:
            raise SoftLabelsError(
                f"{where}: built for dataset fingerprint {have} (dataset "
                f"{self.meta.get('dataset', '?')!r}), but {getattr(dataset, 'name', '?')!r} at "
                f"{getattr(dataset, 'root', '?')} has fingerprint {fp}; rebuild with `lever soft-labels build`"
            )

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (.npz) and its JSON sidecar atomically; returns the .npz path."""
        from lever.utils.atomic import atomic_path, write_json_atomic

        path = Path(path)
        if path.suffix != ".npz":
            raise SoftLabelsError(f"{path}: soft labels are saved as .npz (plus a .json sidecar)")
        meta = dict(self.meta)
        meta.update(
            format_version=FORMAT_VERSION,
            shape=list(self.csr.shape),
            nnz=int(self.csr.nnz),
            num_docs=self.num_docs,
            num_labels=self.num_labels,
        )
        with atomic_path(path, suffix=".npz") as tmp:
            sp.save_npz(tmp, self.csr, compressed=True)
        write_json_atomic(sidecar_path(path), meta)
        self.meta = meta
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, dataset: Any = None) -> SoftLabels:
        """Read a soft-label file; with ``dataset`` also check it was built for that dataset."""
        path = Path(path)
        side = sidecar_path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: soft-label file not found (make one with `lever soft-labels build`)")
        if not side.exists():
            raise SoftLabelsError(f"{path}: metadata sidecar {side.name} is missing; expected it beside the .npz")
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SoftLabelsError(f"{side}: line {e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(meta, dict):
            raise SoftLabelsError(f"{side}: expected a JSON object of metadata")
        try:
            raw = sp.load_npz(path)  # allow_pickle=False inside scipy
        except (ValueError, OSError, KeyError) as e:
            raise SoftLabelsError(f"{path}: not a scipy sparse .npz ({e})") from None
        csr = _as_csr(raw, str(path))
        for key in ("num_docs", "num_labels"):
            if key not in meta:
                raise SoftLabelsError(f"{side}: field {key!r} is missing")
        want = (int(meta["num_docs"]) + int(meta["num_labels"]), int(meta["num_labels"]))
        if tuple(csr.shape) != want:
            raise SoftLabelsError(
                f"{path}: matrix shape {tuple(csr.shape)} differs from its sidecar {side.name} "
                f"(num_docs + num_labels, num_labels) = {want}; the two files do not belong together"
            )
        if "nnz" in meta and int(meta["nnz"]) != csr.nnz:
            raise SoftLabelsError(
                f"{path}: {csr.nnz} stored entries but its sidecar {side.name} says nnz={meta['nnz']}; "
                "the two files do not belong together"
            )
        _check_values(csr, str(path))
        out = cls(csr, meta)
        if dataset is not None:
            out.check_dataset(dataset, where=str(path))
        return out

    def __repr__(self) -> str:
        calib = self.meta.get("calibration")
        method = calib.get("method") if isinstance(calib, dict) else calib
        return (
            f"SoftLabels(shape={self.csr.shape}, nnz={self.csr.nnz}, num_docs={self.num_docs}, "
            f"calibration={method!r})"
        )
