"""Frozen sentence embeddings of a dataset's splits, the one way every backbone gets them.

A teacher folder (``lever teacher train``, or the zero-shot one) supplies the splits it holds,
checked against the dataset; any other split is embedded once with the same encoder and token
limit and cached, so train and test rows always come from one encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def frozen_embeddings(
    dataset,
    cache_dir: str | os.PathLike,
    encoder: str | None = None,
    splits=("lbl", "tst", "trn"),
    batch_size: int = 256,
    teacher_dir: str | os.PathLike | None = None,
    max_len: int | None = None,
) -> dict[str, np.ndarray]:
    """Memory-mapped unit-norm ``{split: embeddings}`` for ``splits`` of ``trn``/``tst``/``lbl``.

    Without ``teacher_dir`` every split is computed with ``encoder`` (None: the packaged MiniLM)
    truncated to ``max_len`` tokens (None: the encoder's own limit) into ``cache_dir``, in a
    folder keyed by the encoder and token limit and files keyed by the texts, so the teacher and
    every student run may share one cache and each text is embedded once. With ``teacher_dir``
    the folder's encoder and token limit replace ``encoder`` and ``max_len``.
    """
    from lever.encoders import cached_embeddings, resolve_encoder_path, texts_fingerprint

    texts = {"lbl": dataset.lbl_texts, "tst": dataset.tst_texts, "trn": dataset.trn_texts}
    out: dict[str, np.ndarray] = {}
    if teacher_dir is not None:
        from lever.soft_labels.teacher_embeddings import (
            check_teacher_dataset,
            embedding_path,
            load_teacher_embeddings,
        )

        check_teacher_dataset(teacher_dir, dataset.fingerprint(), f"dataset {dataset.root}")
        meta_file = Path(teacher_dir) / "embeddings" / "meta.json"
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            encoder, max_len = meta["encoder"], meta.get("max_len")
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{meta_file}: expected the teacher folder's embedding metadata ({e})") from None
        have = tuple(s for s in splits if embedding_path(teacher_dir, s).exists())
        out.update(load_teacher_embeddings(teacher_dir, {s: len(texts[s]) for s in have}, have))

    resolved = resolve_encoder_path(encoder)
    key = resolved + (f"|max_len={max_len}" if max_len else "")
    folder = Path(cache_dir) / ("embeddings-" + hashlib.sha256(key.encode()).hexdigest()[:10])
    for split in splits:
        if split in out:
            continue
        name = f"{split}-{texts_fingerprint(texts[split])[:12]}.npy"
        out[split] = cached_embeddings(
            list(texts[split]), folder / name, resolved, batch_size=batch_size, max_len=max_len
        )
    return out
