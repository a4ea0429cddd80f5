"""ELIAS's label index, built offline between stages (elias.md §2.3, §3.1):

* stage 1: balanced k-means of the label centroids ``normalise(Yᵀ·F)`` into C clusters: the
  leaves of the one balanced tree (``lever.utils.balanced_tree``: recursive balanced spherical
  2-means, as PECOS's hierarchical k-means), each label in one cluster;
* stage 2: the adjacency pattern from the stage-1 model's predictions, ``Yᵀ·M`` with ``M`` the
  top-b cluster scores of every training row: each cluster keeps its κ best labels. Unlike
  upstream, a cluster first keeps its own stage-1 members, so every label stays reachable.

``Y`` here is the matrix the ``lever_label_index`` hook returns (Y + μ·T with soft labels).
Feature parts (dense embeddings, sparse TF-IDF) are L2-normalised per part and their columns
concatenated; the tree clusters the concatenated rows by cosine.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lever.utils.balanced_tree import normalise_rows


def label_centroids(y: sp.csr_matrix, parts: list):
    """``normalise(Yᵀ·F)`` per feature part, the parts weighted equally (1/√parts) and their
    columns concatenated: a dense array if every part is dense, else one CSR."""
    yt = sp.csr_matrix(y, dtype=np.float32).T.tocsr()
    scale = np.float32(1.0 / np.sqrt(max(1, len(parts))))
    cents = [normalise_rows(yt @ (p if sp.issparse(p) else np.asarray(p, dtype=np.float32))) * scale for p in parts]
    if not any(sp.issparse(c) for c in cents):
        return np.hstack(cents)
    return sp.hstack([sp.csr_matrix(c) for c in cents]).tocsr()


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
