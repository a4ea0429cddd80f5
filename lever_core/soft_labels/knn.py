"""Inner-product k-nearest-neighbour search with faiss, in bounded memory.

``knn(queries, database, k, index=...)`` is the one entry point:

* ``"exact"``: brute force, processed in database chunks × query chunks with a running top-k, so
  memory is one database chunk + one query chunk + the (num_queries × k) answer, whatever the
  database size. Inputs may be ``np.load(..., mmap_mode="r")`` arrays; only chunks are read.
  On a GPU (``faiss.get_num_gpus() > 0``) each block goes through ``faiss.knn_gpu``.
* ``"hnsw"``: ``faiss.IndexHNSWFlat`` with the inner-product metric (CPU; faiss has no GPU HNSW).
* ``"ivf"``: ``faiss.IndexIVFFlat`` with an inner-product flat quantiser, moved to the GPU when
  one is visible.

Scores are inner products (cosines for unit vectors), best first. Missing neighbours (database
smaller than ``k``) come back as id ``-1`` and score ``-inf``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

IndexKind = Literal["exact", "hnsw", "ivf"]
INDEX_KINDS = ("exact", "hnsw", "ivf")


def _rows(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    # faiss needs C-contiguous float32; a memmap slice is read here and only here.
    return np.ascontiguousarray(x[start:stop], dtype=np.float32)


def _check_inputs(queries: np.ndarray, database: np.ndarray, k: int) -> None:
    if queries.ndim != 2 or database.ndim != 2:
        raise ValueError(f"knn: expected 2-d arrays, got queries {queries.shape}, database {database.shape}")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"knn: dimension mismatch, queries have {queries.shape[1]} columns, database {database.shape[1]}"
        )
    if k < 1:
        raise ValueError(f"knn: k must be >= 1, got {k}")


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _resolve_gpu(use_gpu: bool | None) -> bool:
    if use_gpu is None:
        return gpu_available()
    if use_gpu and not gpu_available():
        raise RuntimeError(
            "kNN on GPU was requested, but faiss sees no GPU (install faiss-gpu, e.g. "
            "pip install 'lever-xc[gpu]', and check CUDA_VISIBLE_DEVICES), or use --use-gpu no"
        )
    return bool(use_gpu)


def merge_topk(
    scores_a: np.ndarray, ids_a: np.ndarray, scores_b: np.ndarray, ids_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of two candidate lists (best first); ties keep the earlier list first."""
    s = np.concatenate([scores_a, scores_b], axis=1)
    i = np.concatenate([ids_a, ids_b], axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def _clean(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # faiss marks missing results with id -1 and a huge negative score; make that -inf uniformly.
    scores = scores.astype(np.float32, copy=False)
    ids = ids.astype(np.int64, copy=False)
    scores[ids < 0] = -np.inf
    return scores, ids


def exact_knn(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    query_chunk: int = 16384,
    db_chunk: int = 262144,
    use_gpu: bool | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over chunks of the database and of the queries."""
    import faiss
    from tqdm.auto import tqdm

    _check_inputs(queries, database, k)
    use_gpu = _resolve_gpu(use_gpu)
    res = faiss.StandardGpuResources() if use_gpu else None
    nq, nb = queries.shape[0], database.shape[0]
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    n_db = max(1, math.ceil(nb / db_chunk))
    n_q = max(1, math.ceil(nq / query_chunk))
    bar = tqdm(total=n_db * n_q, desc="exact kNN", unit="block", disable=not progress)
    for b0 in range(0, nb, db_chunk):
        xb = _rows(database, b0, b0 + db_chunk)
        kb = min(k, xb.shape[0])
        for q0 in range(0, nq, query_chunk):
            xq = _rows(queries, q0, q0 + query_chunk)
            if use_gpu:
                d, i = faiss.knn_gpu(res, xq, xb, kb, metric=faiss.METRIC_INNER_PRODUCT)
            else:
                d, i = faiss.knn(xq, xb, kb, metric=faiss.METRIC_INNER_PRODUCT)
            d, i = _clean(d, i)
            i = np.where(i >= 0, i + b0, -1)
            sl = slice(q0, q0 + xq.shape[0])
            if n_db == 1:
                best_s[sl, :kb], best_i[sl, :kb] = d, i
            else:
                best_s[sl], best_i[sl] = merge_topk(best_s[sl], best_i[sl], d, i, k)
            bar.update(1)
    bar.close()
    return best_s, best_i


def _add_in_chunks(index, database: np.ndarray, chunk: int, progress: bool, desc: str) -> None:
    from tqdm.auto import tqdm

    for b0 in tqdm(range(0, database.shape[0], chunk), desc=desc, unit="chunk", disable=not progress):
        index.add(_rows(database, b0, b0 + chunk))


def _search_in_chunks(index, queries: np.ndarray, k: int, chunk: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    nq = queries.shape[0]
    scores = np.empty((nq, k), dtype=np.float32)
    ids = np.empty((nq, k), dtype=np.int64)
    for q0 in tqdm(range(0, nq, chunk), desc=desc, unit="chunk", disable=not progress):
        d, i = index.search(_rows(queries, q0, q0 + chunk), k)
        scores[q0 : q0 + d.shape[0]], ids[q0 : q0 + d.shape[0]] = _clean(d, i)
    return scores, ids


def hnsw_knn(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    chunk: int = 65536,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k with a faiss HNSW graph (inner product)."""
    import faiss

    _check_inputs(queries, database, k)
    index = faiss.IndexHNSWFlat(database.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    _add_in_chunks(index, database, chunk, progress, "HNSW build")
    index.hnsw.efSearch = max(ef_search, k)
    return _search_in_chunks(index, queries, k, chunk, progress, "HNSW search")


def default_nlist(n: int) -> int:
    # ~4·sqrt(n) lists, but at least 39 training points per list (faiss warns below that).
    return int(max(1, min(4 * math.sqrt(n), n // 39)))


def ivf_knn(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    train_size: int | None = None,
    chunk: int = 65536,
    use_gpu: bool | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k with a faiss inverted file (flat lists, inner product)."""
    import faiss

    _check_inputs(queries, database, k)
    nb, dim = database.shape
    nlist = nlist or default_nlist(nb)
    # nlist/8 probes keeps recall@10 above 0.99 on sentence embeddings in our benchmark.
    nprobe = min(nlist, nprobe or max(1, nlist // 8))
    train_size = min(nb, train_size or 64 * nlist)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(nb, size=train_size, replace=False))
    train = np.ascontiguousarray(database[sample], dtype=np.float32)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    use_gpu = _resolve_gpu(use_gpu)
    if use_gpu:
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, index)
    index.train(train)
    _add_in_chunks(index, database, chunk, progress, "IVF add")
    index.nprobe = nprobe
    return _search_in_chunks(index, queries, k, chunk, progress, "IVF search")


def knn(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    index: IndexKind = "exact",
    *,
    query_chunk: int = 16384,
    db_chunk: int = 262144,
    hnsw_m: int = 32,
    hnsw_ef_construction: int = 200,
    hnsw_ef_search: int = 128,
    ivf_nlist: int | None = None,
    ivf_nprobe: int | None = None,
    use_gpu: bool | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` database rows by inner product for each query: ``(scores, ids)``, best first.

    ``use_gpu=None`` uses a GPU whenever faiss sees one (exact and IVF; HNSW is CPU-only).
    """
    if index == "exact":
        return exact_knn(
            queries, database, k, query_chunk=query_chunk, db_chunk=db_chunk, use_gpu=use_gpu, progress=progress
        )
    if index == "hnsw":
        return hnsw_knn(
            queries,
            database,
            k,
            m=hnsw_m,
            ef_construction=hnsw_ef_construction,
            ef_search=hnsw_ef_search,
            chunk=query_chunk,
            progress=progress,
        )
    if index == "ivf":
        return ivf_knn(
            queries,
            database,
            k,
            nlist=ivf_nlist,
            nprobe=ivf_nprobe,
            chunk=query_chunk,
            use_gpu=use_gpu,
            seed=seed,
            progress=progress,
        )
    raise ValueError(f"knn: index must be one of {INDEX_KINDS}, got {index!r}")


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, chunk: int = 4096) -> float:
    """Mean fraction of the exact top-k ids found among the approximate ids (missing ids ignored)."""
    hits = 0
    total = 0
    for r0 in range(0, exact_ids.shape[0], chunk):
        e = exact_ids[r0 : r0 + chunk]
        a = approx_ids[r0 : r0 + chunk]
        found = (e[:, :, None] == a[:, None, :]).any(axis=2) & (e >= 0)
        hits += int(found.sum())
        total += int((e >= 0).sum())
    return hits / max(total, 1)
