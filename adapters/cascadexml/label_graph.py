"""CascadeXML's graph-augmented label features (ECLARE style, cascadexml.md §1.2 steps 2–3): a label
graph from random walks with restart over the label–document bipartite graph, then the label
features smoothed through its symmetric normalisation, ``G̃ = D_r^{-1/2} G D_c^{-1/2}``.

One hop goes label → a random training document of that label → a random label of that document;
each hop starts from the walk's source label with probability ``restart``, otherwise from the last
label visited. Visit counts per (source, label) are kept for each source's ``top_k`` most visited
labels plus itself. All labels walk at once (vectorised over labels), seeded.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def keep_row_topk(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """``matrix`` with only the ``k`` largest entries of each row (upstream: xclib ``retain_topk``)."""
    m = sp.csr_matrix(matrix, dtype=np.float32)
    m.sum_duplicates()
    lengths = np.diff(m.indptr)
    if k <= 0 or lengths.max(initial=0) <= k:
        return m
    rows, cols, vals = [], [], []
    for r in np.flatnonzero(lengths):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        keep = np.argpartition(-m.data[lo:hi], k - 1)[:k] if hi - lo > k else np.arange(hi - lo)
        rows.append(np.full(keep.size, r))
        cols.append(m.indices[lo:hi][keep])
        vals.append(m.data[lo:hi][keep])
    if not rows:
        return m
    out = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)
    out.sort_indices()
    return out


def random_walk_graph(y: sp.csr_matrix, walk_len: int = 400, restart: float = 0.8, top_k: int = 10,
                      seed: int = 0) -> sp.csr_matrix:
    """``[L, L]`` visit counts of ``walk_len`` hops from every label over ``y`` (documents × labels),
    each row kept to its ``top_k`` most visited labels plus the diagonal."""
    if not 0.0 <= restart <= 1.0:
        raise ValueError(f"restart={restart!r}: expected a probability in [0, 1]")
    y = sp.csr_matrix(y)
    num_labels = y.shape[1]
    docs_of = y.T.tocsr()  # label → its documents
    labels_of = y  # document → its labels
    degree = np.diff(docs_of.indptr)
    rng = np.random.default_rng(seed)
    source = np.flatnonzero(degree > 0)  # labels without documents have no walks
    current = source.copy()
    hits = []
    for _ in range(walk_len):
        start = np.where(rng.random(source.size) < restart, source, current)
        doc = docs_of.indices[docs_of.indptr[start] + (rng.random(start.size) * degree[start]).astype(np.int64)]
        doc_degree = np.diff(labels_of.indptr)[doc]
        current = labels_of.indices[labels_of.indptr[doc] + (rng.random(doc.size) * doc_degree).astype(np.int64)]
        hits.append(current)
    visited = np.concatenate(hits) if hits else np.empty(0, np.int64)
    counts = sp.csr_matrix(
        (np.ones(visited.size, np.float32), (np.tile(source, walk_len), visited)), shape=(num_labels, num_labels)
    )
    graph = keep_row_topk(counts, top_k)
    return (graph + sp.identity(num_labels, dtype=np.float32, format="csr")).tocsr()


def smooth_label_features(features, graph: sp.csr_matrix, keep: int = 1000):
    """``G̃ · features`` with ``G̃ = D_r^{-1/2} G D_c^{-1/2}``; sparse features keep their ``keep``
    largest entries per row (dense ones stay dense)."""
    graph = sp.csr_matrix(graph, dtype=np.float32)
    inv_sqrt = [np.asarray(graph.sum(axis=a)).ravel() for a in (1, 0)]
    d_r, d_c = (sp.diags(np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1e-30)), 0.0).astype(np.float32)) for d in inv_sqrt)
    normalised = (d_r @ graph @ d_c).tocsr()
    out = normalised @ features
    return keep_row_topk(sp.csr_matrix(out), keep) if sp.issparse(features) else np.asarray(out, dtype=np.float32)
