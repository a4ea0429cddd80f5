"""Reading a teacher folder's embeddings, and making a zero-shot teacher folder.

Teacher folder contract (what ``lever teacher train --out T`` writes): ``T/embeddings/trn.npy``,
``T/embeddings/tst.npy``, ``T/embeddings/lbl.npy`` (float32, unit norm, rows aligned with the
dataset's train texts, test texts and label texts) and ``T/config.json``.

A *zero-shot* teacher is the same folder made from an untrained sentence encoder (MiniLM by
default), embedded the way ``lever teacher train`` exports its embeddings. It is the baseline the
trained teacher must beat, and lets soft labels be built before a teacher exists.

``lever teacher train`` also writes ``embeddings/meta.json`` with the dataset fingerprint; when
present it is checked against the dataset (``check_teacher_dataset``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("trn", "tst", "lbl")
ZERO_SHOT = "zero-shot"


class TeacherFolderError(ValueError):
    """A teacher folder is missing a file or its embeddings do not fit the dataset."""


def embedding_path(teacher_dir: str | os.PathLike, split: str) -> Path:
    return Path(teacher_dir) / "embeddings" / f"{split}.npy"


def load_teacher_embeddings(
    teacher_dir: str | os.PathLike,
    expected_rows: dict[str, int] | None = None,
    splits: tuple[str, ...] = ("trn", "lbl"),
    norm_tol: float = 1e-2,
) -> dict[str, np.ndarray]:
    """Memory-mapped ``{split: embeddings}``, checked for shape, dtype, finiteness and unit norm.

    ``expected_rows`` maps a split to its row count in the dataset (e.g. ``{"trn": N, "lbl": L}``).
    """
    teacher_dir = Path(teacher_dir)
    if not teacher_dir.is_dir():
        raise FileNotFoundError(
            f"teacher folder {teacher_dir} not found; train one with `lever teacher train` or use "
            f"--teacher {ZERO_SHOT}"
        )
    out: dict[str, np.ndarray] = {}
    dim = None
    for split in splits:
        path = embedding_path(teacher_dir, split)
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; a teacher folder holds embeddings/{{trn,tst,lbl}}.npy")
        try:
            emb = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise TeacherFolderError(f"{path}: not a NumPy .npy array ({e})") from None
        if emb.ndim != 2 or emb.dtype != np.float32:
            raise TeacherFolderError(f"{path}: expected a 2-d float32 array, got {emb.dtype} of shape {emb.shape}")
        want = (expected_rows or {}).get(split)
        if want is not None and emb.shape[0] != want:
            raise TeacherFolderError(
                f"{path}: {emb.shape[0]} rows, but the dataset has {want} {split} texts; "
                "was this teacher trained on another dataset?"
            )
        if dim is not None and emb.shape[1] != dim:
            raise TeacherFolderError(f"{path}: dimension {emb.shape[1]} differs from the other splits' {dim}")
        dim = emb.shape[1]
        # the τ threshold and the calibration assume cosines: check unit norm on a sample of rows
        sample = np.asarray(emb[np.linspace(0, emb.shape[0] - 1, min(emb.shape[0], 1000)).astype(np.int64)])
        if not np.all(np.isfinite(sample)):
            raise TeacherFolderError(f"{path}: contains NaN or infinite values")
        norms = np.linalg.norm(sample, axis=1)
        if emb.shape[0] and np.abs(norms - 1).max() > norm_tol:
            raise TeacherFolderError(
                f"{path}: rows are not unit-norm (norms span {norms.min():.4f}..{norms.max():.4f}); "
                "expected L2-normalised embeddings"
            )
        out[split] = emb
    return out


def teacher_config(teacher_dir: str | os.PathLike) -> dict[str, Any]:
    """The teacher's ``config.json`` (empty dict when absent: the embeddings are what matter)."""
    path = Path(teacher_dir) / "config.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TeacherFolderError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None


def check_teacher_dataset(teacher_dir: str | os.PathLike, fingerprint: str, dataset_desc: str) -> None:
    """Refuse a teacher whose recorded dataset fingerprint differs from ``fingerprint``."""
    teacher_dir = Path(teacher_dir)
    for path, key in ((teacher_dir / "embeddings" / "meta.json", "fingerprint"),
                      (teacher_dir / "config.json", "dataset_fingerprint")):
        if not path.exists():
            continue
        try:
            have = json.loads(path.read_text(encoding="utf-8")).get(key)
        except (json.JSONDecodeError, AttributeError):
            raise TeacherFolderError(f"{path}: not a JSON object") from None
        if have is not None and have != fingerprint:
            raise TeacherFolderError(
                f"{path}: field {key!r} = {have}, but {dataset_desc} has fingerprint {fingerprint}; "
                "this teacher was made for another dataset"
            )


def write_zero_shot_teacher(
    dataset: Any,
    out: str | os.PathLike,
    encoder: str | os.PathLike | None = None,
    max_len: int = 32,
    batch_size: int = 256,
    splits: tuple[str, ...] = SPLITS,
    progress: bool = True,
) -> Path:
    """Embed the dataset's texts (``splits`` of trn, tst, lbl) with an untrained encoder into ``out``.

    Texts are embedded exactly as ``lever teacher train`` embeds them at export
    (``lever.teacher.model.load_teacher_encoder`` with the same ``max_len`` token limit, unit-norm
    float32), so a zero-shot and a trained teacher differ only in the weights. Each split is saved
    as soon as it is done and recorded in ``embeddings/meta.json``; a rerun reuses the splits
    already embedded for the same dataset, encoder and ``max_len`` (so an interrupted run resumes).
    """
    from lever.encoders import resolve_encoder_path
    from lever.teacher.model import embed, load_teacher_encoder
    from lever.utils.atomic import atomic_path, write_json_atomic

    out = Path(out)
    resolved = resolve_encoder_path(encoder)
    texts = {"lbl": dataset.lbl_texts, "trn": dataset.trn_texts, "tst": dataset.tst_texts}
    key = {
        "dataset": getattr(dataset, "name", None),
        "fingerprint": dataset.fingerprint(),
        "max_len": max_len,
        "normalised": True,
        "encoder": resolved,
    }
    meta_file = out / "embeddings" / "meta.json"
    meta: dict[str, Any] = {**key, "rows": {}, "dim": None}
    if meta_file.exists():
        try:
            old = json.loads(meta_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = None
        if isinstance(old, dict) and {k: old.get(k) for k in key} == key:
            meta = old
    model = None
    for split in (s for s in texts if s in splits):
        if meta["rows"].get(split) == len(texts[split]) and embedding_path(out, split).exists():
            continue  # already embedded by an earlier run
        if model is None:
            model = load_teacher_encoder(resolved, max_len)
        emb = embed(model, texts[split], batch_size, show_progress=progress)
        with atomic_path(embedding_path(out, split), suffix=".npy") as tmp:
            np.save(tmp, emb)
        meta["rows"][split] = int(emb.shape[0])
        meta["dim"] = int(emb.shape[1])
        write_json_atomic(meta_file, meta)
    write_json_atomic(
        out / "config.json",
        {
            "kind": ZERO_SHOT,
            "encoder": resolved,
            "max_len": max_len,
            "dataset": getattr(dataset, "name", None),
            "dataset_fingerprint": dataset.fingerprint(),
            "splits": sorted(meta["rows"]),
            "note": "untrained encoder, embedded as lever teacher train exports (lever.teacher.model.embed)",
        },
    )
    return out
