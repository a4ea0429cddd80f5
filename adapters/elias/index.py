"""ELIAS's label index, built offline between stages (elias.md §2.3, §3.1):

* stage 1: balanced k-means of the label centroids ``normalise(Yᵀ·F)`` into C clusters
  (recursive balanced 2-means, as PECOS's hierarchical k-means), each label in one cluster;
* stage 2: the adjacency pattern from the stage-1 model's predictions, ``Yᵀ·M`` with ``M`` the
  top-b cluster scores of every training row: each cluster keeps its κ best labels. Unlike
  upstream, a cluster first keeps its own stage-1 members, so every label stays reachable.

``Y`` here is the matrix the ``lever_label_index`` hook returns (Y + μ·T with soft labels).
Features are pairs ``(dense ndarray or None, sparse CSR or None)``, rows L2-normalised per part.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def normalise_rows(x):
    """Rows scaled to unit L2 norm (zero rows stay zero); dense or CSR, float32."""
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32, copy=True)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
        norms[norms == 0] = 1.0
        x.data /= np.repeat(norms, np.diff(x.indptr)).astype(np.float32)
        return x
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def label_centroids(y: sp.csr_matrix, parts: list) -> tuple[np.ndarray | None, sp.csr_matrix | None]:
    """``normalise(Yᵀ·F)`` per feature part, the parts weighted equally (1/√parts): the dense
    parts concatenated into one array, the sparse ones into one CSR."""
    yt = sp.csr_matrix(y, dtype=np.float32).T.tocsr()
    scale = np.float32(1.0 / np.sqrt(max(1, len(parts))))
    dense, sparse = [], []
    for part in parts:
        c = normalise_rows(yt @ part) if sp.issparse(part) else normalise_rows(yt @ np.asarray(part, dtype=np.float32))
        (sparse if sp.issparse(c) else dense).append(c * scale)
    return (np.hstack(dense) if dense else None), (sp.hstack(sparse).tocsr() if sparse else None)


def _project(dense, sparse, idx, direction) -> np.ndarray:
    d_dir, s_dir = direction
    out = np.zeros(len(idx), dtype=np.float64)
    if dense is not None:
        out += dense[idx] @ d_dir
    if sparse is not None:
        out += sparse[idx] @ s_dir
    return out


def _mean(dense, sparse, idx):
    d = dense[idx].mean(0) if dense is not None else None
    s = np.asarray(sparse[idx].mean(0)).ravel() if sparse is not None else None
    return d, s


def balanced_kmeans(dense: np.ndarray | None, sparse: sp.csr_matrix | None, num_clusters: int,
                    iters: int = 10, seed: int = 0) -> np.ndarray:
    """``assign [n]`` of the rows into ``num_clusters`` (a power of two) balanced clusters by
    recursive spherical 2-means: each split sorts a node's rows by their similarity to one centroid
    minus the other and cuts at the middle, so sizes differ by at most one per level."""
    n = (dense if dense is not None else sparse).shape[0]
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)]
    while len(groups) < num_clusters:
        nxt = []
        for idx in groups:
            left, right = _split(dense, sparse, idx, iters, rng)
            nxt += [left, right]
        groups = nxt
    assign = np.empty(n, dtype=np.int64)
    for c, idx in enumerate(groups):
        assign[idx] = c
    return assign


def _split(dense, sparse, idx, iters, rng):
    half = (len(idx) + 1) // 2
    if len(idx) < 2:
        return idx, idx[:0]
    a, b = rng.choice(len(idx), size=2, replace=False)
    c0, c1 = _mean(dense, sparse, idx[[a]]), _mean(dense, sparse, idx[[b]])
    order = np.arange(len(idx))
    for _ in range(iters):
        direction = tuple(None if x is None else x - y for x, y in zip(c0, c1))
        score = _project(dense, sparse, idx, direction)
        new = np.argsort(-score, kind="stable")
        if np.array_equal(new, order) and _ > 0:
            break
        order = new
        c0, c1 = _mean(dense, sparse, idx[order[:half]]), _mean(dense, sparse, idx[order[half:]])
    return np.sort(idx[order[:half]]), np.sort(idx[order[half:]])


def adjacency_pattern(y: sp.csr_matrix, beam_clusters: sp.csr_matrix, partition: np.ndarray,
                      num_clusters: int, kappa: int) -> np.ndarray:
    """``ids [C, κ]`` (padded with L): cluster c keeps its stage-1 members, then the labels with
    the largest ``(Yᵀ·M)[l, c]`` (ties: the smaller id), where ``beam_clusters`` M (rows × C) holds
    each training row's top-b cluster scores."""
    num_labels = y.shape[1]
    c_val = (sp.csr_matrix(y, dtype=np.float32).T @ sp.csr_matrix(beam_clusters, dtype=np.float32)).tocsc()
    out = np.full((num_clusters, kappa), num_labels, dtype=np.int64)
    members = [np.flatnonzero(partition == c) for c in range(num_clusters)]
    for c in range(num_clusters):
        own = members[c][:kappa]
        lo, hi = c_val.indptr[c], c_val.indptr[c + 1]
        labels, vals = c_val.indices[lo:hi], c_val.data[lo:hi]
        extra = labels[np.lexsort((labels, -vals))]
        extra = extra[~np.isin(extra, own)][: kappa - own.size]
        row = np.concatenate([own, extra])
        out[c, : row.size] = row
    return out
