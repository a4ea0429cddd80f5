"""Balanced clustering: one balanced tree by recursive spherical 2-means (Parabel/CascadeXML style).

Every balanced clustering in lever comes from here: CascadeXML's label tree (path codes per
level), ELIAS's label clusters and the Siamese teacher's clustered batches (flat leaves).

A node that must end in ``k`` leaves is split into a left node with ``ceil(k/2)`` leaves and a
right one with ``floor(k/2)``, holding ``ceil(n·ceil(k/2)/k)`` and the rest of its ``n`` rows, so
every leaf holds ``floor(N/k)`` or ``ceil(N/k)`` rows (sizes differ by at most one). Each split is
balanced spherical 2-means: two distinct random members seed the centroids, rows are ranked by
``cos(x, c_right) − cos(x, c_left)`` and the top ones go right; centroids are re-estimated
(normalised means) until the mean similarity gains less than ``tol``. Nodes are split level by
level, left to right, from one random generator, so the result is fixed by the seed.

Leaves are numbered left to right. For ``k = 2^depth`` a leaf id is the ``depth``-bit path code
(``0`` = left) and the clusters at depth ``b`` are ``leaf >> (depth − b)``: every coarser partition
is nested in every finer one, cluster ``c`` at depth ``b`` has children ``c·2^Δ … c·2^Δ + 2^Δ − 1``
at depth ``b + Δ``, and the same seed with ``2^b`` leaves gives exactly that depth-``b`` partition.

Features may be dense (``numpy``, ``n × d``) or a scipy sparse matrix (e.g. TF-IDF rows); rows are
L2-normalised here. Dense and sparse parts are clustered together by concatenating their columns
(``sp.hstack``), as ELIAS does.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def normalise_rows(x):
    """Rows scaled to unit L2 norm (zero rows stay zero); dense or CSR, float32."""
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


def split_balanced(x, num_right: int, rng: np.random.Generator, tol: float = 1e-4, max_iter: int = 20) -> np.ndarray:
    """Balanced spherical 2-means of the (unit) rows of ``x``: a boolean mask, ``True`` = right,
    with exactly ``num_right`` rows on the right (``0 < num_right < rows``)."""
    n = x.shape[0]
    right = np.zeros(n, dtype=bool)
    seeds = rng.choice(n, size=2, replace=False)
    cent = np.stack([_unit(_mean_row(x[[s]])) for s in seeds])  # 2 × d
    prev = -np.inf
    for _ in range(max_iter):
        sims = np.asarray(x @ cent.T, dtype=np.float64)  # n × 2
        order = np.argsort(sims[:, 1] - sims[:, 0], kind="stable")
        right[:] = False
        right[order[n - num_right :]] = True
        obj = float(np.where(right, sims[:, 1], sims[:, 0]).mean())
        cent = np.stack([_unit(_mean_row(x[~right])), _unit(_mean_row(x[right]))])
        if obj - prev < tol:
            break
        prev = obj
    return right


def balanced_leaves(
    features, num_leaves: int, seed: int | np.random.Generator = 0, tol: float = 1e-4, max_iter: int = 20
) -> np.ndarray:
    """The leaf id (int64, ``0 … num_leaves − 1``, left to right) of every row of ``features`` in
    a balanced tree with ``num_leaves`` leaves; leaf sizes differ by at most one.

    Needs ``1 <= num_leaves <= rows`` (no empty leaf). ``seed`` may be a generator, which is then
    advanced (the teacher draws its batch order from the same one)."""
    n = features.shape[0]
    if num_leaves < 1 or (num_leaves > 1 and num_leaves > n):
        raise ValueError(f"balanced tree with {num_leaves} leaves over {n} rows: expected 1 <= leaves <= rows")
    x = normalise_rows(features)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    nodes = [(np.arange(n), num_leaves)]  # (members in increasing order, leaves below), left to right
    while any(k > 1 for _, k in nodes):
        nxt = []
        for members, k in nodes:
            if k == 1:
                nxt.append((members, k))
                continue
            k_left = (k + 1) // 2
            num_left = -(-len(members) * k_left // k)
            right = split_balanced(x[members], len(members) - num_left, rng, tol, max_iter)
            nxt += [(members[~right], k_left), (members[right], k - k_left)]
        nodes = nxt
    leaves = np.zeros(n, dtype=np.int64)
    for leaf, (members, _) in enumerate(nodes):
        leaves[members] = leaf
    return leaves


def balanced_tree_codes(features, depth: int, seed: int = 0, tol: float = 1e-4, max_iter: int = 20) -> np.ndarray:
    """The ``depth``-bit path code (int64, one per row of ``features``) of a balanced binary tree:
    the leaves of ``balanced_leaves`` with ``2**depth`` leaves. Needs ``2**depth <= rows``."""
    n = features.shape[0]
    if depth < 0 or (depth > 0 and 2**depth > n):
        raise ValueError(f"balanced tree of depth {depth} over {n} items: expected 0 <= depth and 2**depth <= {n}")
    return balanced_leaves(features, 2**depth, seed, tol, max_iter)


def leaf_members(leaves: np.ndarray, num_leaves: int) -> list[np.ndarray]:
    """The rows of each leaf (increasing ids), leaf by leaf."""
    order = np.argsort(leaves, kind="stable")
    return np.split(order, np.cumsum(np.bincount(leaves, minlength=num_leaves))[:-1])
