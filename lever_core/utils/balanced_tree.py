"""A balanced binary label tree by recursive spherical 2-means (Parabel/CascadeXML style).

Each node's items are split in two halves of equal size (±1) by balanced spherical 2-means: two
distinct random members seed the centroids, items are ranked by ``cos(x, c_left) − cos(x,
c_right)`` and the first ``ceil(n/2)`` go left; centroids are re-estimated (normalised means)
until the mean similarity gains less than ``tol``. Splitting every node ``depth`` times gives each
item a ``depth``-bit path code (``0`` = left); the clusters at depth ``b`` are ``code >> (depth −
b)``, so every coarser partition is nested in every finer one and cluster ``c`` at depth ``b`` has
children ``c·2^Δ … c·2^Δ + 2^Δ − 1`` at depth ``b + Δ``. Sizes at any depth differ by at most one.

Features may be dense (``numpy``, ``n × d``) or a scipy sparse matrix (e.g. TF-IDF rows); rows are
L2-normalised here. (``lever.teacher.clustering.balanced_kmeans`` is the vectorised dense variant
the teacher uses for batch order; it returns flat clusters, not nested paths.)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _normalised_rows(x):
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32, copy=True)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
        x.data /= np.repeat(np.maximum(norms, 1e-12), np.diff(x.indptr)).astype(np.float32)
        return x
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _mean_row(x) -> np.ndarray:
    return np.asarray(x.sum(0), dtype=np.float64).ravel()


def split_balanced(x, rng: np.random.Generator, tol: float = 1e-4, max_iter: int = 20) -> np.ndarray:
    """Balanced spherical 2-means of the (unit) rows of ``x``: a boolean mask, ``True`` = right,
    with ``n // 2`` rows on the right."""
    n = x.shape[0]
    right = np.zeros(n, dtype=bool)
    if n < 2:
        return right
    seeds = rng.choice(n, size=2, replace=False)
    cent = np.stack([_unit(_mean_row(x[[s]])) for s in seeds])  # 2 × d
    prev = -np.inf
    order = np.arange(n)
    for _ in range(max_iter):
        sims = np.asarray(x @ cent.T, dtype=np.float64)  # n × 2
        order = np.argsort(sims[:, 1] - sims[:, 0], kind="stable")
        right[:] = False
        right[order[n - n // 2 :]] = True
        obj = float(np.where(right, sims[:, 1], sims[:, 0]).mean())
        cent = np.stack([_unit(_mean_row(x[~right])), _unit(_mean_row(x[right]))])
        if obj - prev < tol:
            break
        prev = obj
    return right


def balanced_tree_codes(features, depth: int, seed: int = 0, tol: float = 1e-4, max_iter: int = 20) -> np.ndarray:
    """The ``depth``-bit path code (int64, one per row of ``features``) of a balanced binary tree.

    Needs ``2**depth <= rows`` (no empty cluster). Deterministic for a given ``seed``."""
    n = features.shape[0]
    if depth < 0 or (depth > 0 and 2**depth > n):
        raise ValueError(f"balanced tree of depth {depth} over {n} items: expected 0 <= depth and 2**depth <= {n}")
    x = _normalised_rows(features)
    rng = np.random.default_rng(seed)
    codes = np.zeros(n, dtype=np.int64)
    for _ in range(depth):
        order = np.argsort(codes, kind="stable")  # members of each node, node by node
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        new = codes * 2
        for members in np.split(order, bounds):
            new[members[split_balanced(x[members], rng, tol, max_iter)]] += 1
        codes = new
    return codes
