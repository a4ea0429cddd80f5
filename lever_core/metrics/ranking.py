"""Top-k extraction shared by evaluation, teacher evaluation and prediction.

Every prediction form (a dense score matrix, a sparse matrix of scores, or an ``(indices,
scores)`` pair) becomes the same thing: ``indices`` ``[n, k]`` int64 and ``scores`` ``[n, k]``
float32, best first, padded with ``-1`` / ``-inf`` where a row has fewer than ``k`` candidates.

Rules that make the forms agree exactly:

- Ties are broken by the smaller label index.
- A score of ``-inf`` means "not predicted"; such entries come back as padding.
- Filtered (reciprocal) pairs are removed *before* the top-k is taken, so they can never be
  predicted and the next-best label takes their place.
- In a sparse matrix only the stored entries are candidates (a stored 0.0 is a real score);
  in a dense matrix every column is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

PAD_INDEX = -1

# Elements of the padded [rows, width] work matrix handled at once; bounds temporary memory
# (about 20 bytes per element) whatever the row length.
_WORK_ELEMENTS = 1 << 22


def topk(
    preds: Any,
    k: int,
    filter: sp.spmatrix | sp.sparray | None = None,
    num_labels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(indices, scores)`` of the ``k`` best labels of every row of ``preds``.

    ``preds`` is a dense ``[n, L]`` array (numpy, or anything ``np.asarray`` accepts such as a CPU
    torch tensor), a scipy sparse matrix/array of scores, or a pair ``(indices, scores)`` of
    ``[n, m]`` arrays where ``indices`` may hold ``-1`` padding (``scores=None`` means the indices
    are already ranked best first). ``filter`` is a sparse ``[n, L]`` matrix whose non-zero
    positions may never be predicted. ``num_labels`` checks label indices (and is required to
    apply a filter to the ``(indices, scores)`` form).
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if isinstance(preds, (tuple, list)):
        if len(preds) != 2:
            raise ValueError("predictions given as a sequence must be an (indices, scores) pair")
        return _topk_pairs(preds[0], preds[1], k, filter, num_labels)
    if sp.issparse(preds):
        return _topk_sparse(preds, k, filter, num_labels)
    return _topk_dense(preds, k, filter, num_labels)


def _check_filter(filter, shape: tuple[int, int]) -> sp.csr_matrix | None:
    if filter is None:
        return None
    if not sp.issparse(filter):
        raise TypeError(f"filter must be a scipy sparse matrix, got {type(filter).__name__}")
    if filter.shape != shape:
        raise ValueError(f"filter has shape {filter.shape} but the predictions have shape {shape}")
    return sp.csr_matrix(filter)


def _row_keys(csr: sp.csr_matrix, num_cols: int) -> np.ndarray:
    """Sorted int64 keys ``row * num_cols + col`` of the non-zero positions of a canonical CSR."""
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    return rows * num_cols + csr.indices.astype(np.int64)


def canonical_binary(matrix, name: str = "matrix") -> sp.csr_matrix:
    """A binary float32 CSR copy with sorted indices, no duplicates and no stored zeros."""
    if not sp.issparse(matrix):
        matrix = np.asarray(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {matrix.shape}")
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.data[:] = 1.0
    csr.sort_indices()
    return csr


def member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask: which ``keys`` occur in the ascending array ``sorted_keys``."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    np.minimum(pos, sorted_keys.size - 1, out=pos)
    return sorted_keys[pos] == keys


def _topk_dense(preds, k, filter, num_labels):
    scores = np.asarray(preds)
    if scores.ndim != 2:
        raise ValueError(f"dense predictions must be 2-D [points, labels], got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise TypeError(f"dense predictions must be real numbers, got dtype {scores.dtype}")
    n, width = scores.shape
    if num_labels is not None and width != num_labels:
        raise ValueError(f"predictions have {width} label columns but {num_labels} were expected")
    filt = _check_filter(filter, scores.shape)
    out_i = np.full((n, k), PAD_INDEX, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    step = max(1, _WORK_ELEMENTS // max(width, 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = scores[start:stop].astype(np.float64, copy=True)
        if np.isnan(block).any():
            raise ValueError(f"predictions contain NaN scores (rows {start}..{stop - 1})")
        if filt is not None:
            fb = filt[start:stop]
            block[np.repeat(np.arange(stop - start), np.diff(fb.indptr)), fb.indices] = -np.inf
        cols = np.broadcast_to(np.arange(width, dtype=np.int64), block.shape)
        out_i[start:stop], out_s[start:stop] = _select(block, cols, k)
    return out_i, out_s


def _topk_sparse(preds, k, filter, num_labels):
    csr = sp.csr_matrix(preds)
    n, width = csr.shape
    if num_labels is not None and width != num_labels:
        raise ValueError(f"predictions have {width} label columns but {num_labels} were expected")
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()  # also sorts indices, which the label-index tie-break relies on
    filt = _check_filter(filter, csr.shape)
    out_i = np.full((n, k), PAD_INDEX, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    lens = np.diff(csr.indptr)
    # Chunks of rows whose padded [rows, longest row] block fits the work budget.
    for start, stop in _chunks(lens):
        lo, hi = csr.indptr[start], csr.indptr[stop]
        data = csr.data[lo:hi].astype(np.float64)
        if np.isnan(data).any():
            raise ValueError(f"predictions contain NaN scores (rows {start}..{stop - 1})")
        idx = csr.indices[lo:hi].astype(np.int64)
        blens = lens[start:stop]
        rows = np.repeat(np.arange(stop - start, dtype=np.int64), blens)
        if filt is not None:
            fkeys = _row_keys(filt[start:stop], width)
            data[member(rows * width + idx, fkeys)] = -np.inf
        w = int(blens.max()) if blens.size else 0
        if w == 0:
            continue
        pos = np.arange(hi - lo, dtype=np.int64) - np.repeat(csr.indptr[start:stop] - lo, blens)
        block = np.full((stop - start, w), -np.inf)
        block[rows, pos] = data
        cols = np.full((stop - start, w), PAD_INDEX, dtype=np.int64)
        cols[rows, pos] = idx
        out_i[start:stop], out_s[start:stop] = _select(block, cols, k)
    return out_i, out_s


def _chunks(lens: np.ndarray):
    """Yield ``(start, stop)`` row ranges whose padded width times rows fits the work budget."""
    n = lens.size
    start = 0
    rows = max(1, _WORK_ELEMENTS // max(int(np.median(lens)) if n else 1, 1))
    while start < n:
        stop = min(n, start + rows)
        while stop - start > 1 and (stop - start) * int(lens[start:stop].max()) > _WORK_ELEMENTS:
            stop = start + (stop - start) // 2
        yield start, stop
        start = stop


def _topk_pairs(indices, scores, k, filter, num_labels):
    idx = np.asarray(indices)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"prediction indices must be a 2-D integer array, got shape {idx.shape} dtype {idx.dtype}"
        )
    idx = idx.astype(np.int64)
    n, m = idx.shape
    if scores is None:
        # Already ranked: column order is the ranking.
        sc = np.broadcast_to(-np.arange(m, dtype=np.float64), (n, m)).copy()
    else:
        sc = np.asarray(scores, dtype=np.float64)
        if sc.shape != idx.shape:
            raise ValueError(f"prediction scores have shape {sc.shape} but indices have {idx.shape}")
        sc = sc.copy()
        if np.isnan(sc).any():
            raise ValueError("prediction scores contain NaN")
    if (idx < PAD_INDEX).any():
        raise ValueError("prediction indices must be >= 0, or -1 for padding")
    if num_labels is not None and (idx >= num_labels).any():
        raise ValueError(f"prediction indices must be < {num_labels} (the number of labels)")
    pad = idx == PAD_INDEX
    sc[pad] = -np.inf
    if filter is not None:
        if num_labels is None:
            raise ValueError("num_labels is needed to apply a filter to (indices, scores) predictions")
        filt = _check_filter(filter, (n, num_labels))
        keys = np.arange(n, dtype=np.int64)[:, None] * num_labels + idx
        hit = member(keys, _row_keys(filt, num_labels)) & ~pad
        sc[hit] = -np.inf
    # Label-index order inside each row (padding last) gives the same tie-break as the other forms.
    order = np.argsort(np.where(pad, np.iinfo(np.int64).max, idx), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    sc = np.take_along_axis(sc, order, axis=1)
    dup = (idx[:, 1:] == idx[:, :-1]) & (idx[:, 1:] != PAD_INDEX)
    if dup.any():
        row = int(np.nonzero(dup.any(axis=1))[0][0])
        raise ValueError(f"prediction row {row} lists the same label more than once")
    return _select(sc, idx, k)


def _select(block: np.ndarray, cols: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` entries of each row of ``block`` (float64, -inf = absent), ties to the left.

    ``cols`` holds the label index of each entry; columns are in ascending label order so
    "to the left" means "smaller label index".
    """
    b, w = block.shape
    if w > k:
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(block, part, axis=1).min(axis=1, keepdims=True)
        above = block > kth
        tied = block == kth
        need = k - above.sum(axis=1, keepdims=True)
        # Only the leftmost `need` tied entries are taken (exactly k per row in total).
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
        _, c = np.nonzero(chosen)
        pos = c.reshape(b, k)
    else:
        pos = np.broadcast_to(np.arange(w), (b, w))
    vals = np.take_along_axis(block, pos, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    pos = np.take_along_axis(pos, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    labels = np.take_along_axis(cols, pos, axis=1)
    absent = np.isneginf(vals) | (labels == PAD_INDEX)
    labels = np.where(absent, PAD_INDEX, labels)
    vals = np.where(absent, -np.inf, vals)
    out_i = np.full((b, k), PAD_INDEX, dtype=np.int64)
    out_s = np.full((b, k), -np.inf, dtype=np.float32)
    out_i[:, : labels.shape[1]] = labels
    out_s[:, : labels.shape[1]] = vals
    return out_i, out_s


def blockwise_topk(
    score_block,
    k: int,
    num_labels: int,
    exclude: sp.csr_matrix | None = None,
    label_block: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ``(label ids, scores)`` ``[b, k]`` over labels scored one block at a time by
    ``score_block(slice) -> Tensor [b, block]``, so memory is ``b × label_block``; pairs in
    ``exclude`` (rows × labels) are never returned, rows with fewer than k admissible labels are
    padded with -1 / -inf. Blocks are merged on the accelerator with ``torch.topk``; the
    per-process lists of a sharded model are merged afterwards by :func:`topk`."""
    import torch

    with torch.no_grad():
        return _blockwise_topk(score_block, k, num_labels, exclude, label_block)


def _blockwise_topk(score_block, k, num_labels, exclude, label_block):
    import torch

    best_s: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    ex = None if exclude is None else exclude.tocoo()
    for lo in range(0, num_labels, label_block):
        hi = min(num_labels, lo + label_block)
        s = score_block(slice(lo, hi)).float()
        if ex is not None and ex.nnz:
            sel = (ex.col >= lo) & (ex.col < hi)
            if sel.any():
                r = torch.as_tensor(ex.row[sel], dtype=torch.long, device=s.device)
                c = torch.as_tensor(ex.col[sel] - lo, dtype=torch.long, device=s.device)
                s[r, c] = float("-inf")
        kk = min(k, hi - lo)
        bs, bi = torch.topk(s, kk, dim=1)
        bi = bi + lo
        if best_s is not None:
            bs, bi = torch.cat([best_s, bs], 1), torch.cat([best_i, bi], 1)
            top = torch.topk(bs, min(k, bs.shape[1]), dim=1)
            bs, bi = top.values, torch.gather(bi, 1, top.indices)
        best_s, best_i = bs, bi
    assert best_s is not None and best_i is not None
    best_i = torch.where(torch.isneginf(best_s), torch.full_like(best_i, -1), best_i)
    return best_i.cpu().numpy().astype(np.int64), best_s.cpu().numpy().astype(np.float32)
