"""Balanced hierarchical 2-means over unit-norm embeddings, and the cluster-size curriculum.

NGAME/LEVER build hard in-batch negatives by clustering the (stale) input-side embeddings into
small clusters of similar items and concatenating shuffled clusters into the sample order, so each
batch is a union of many tight clusters.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def num_clusters_for(n: int, cl_size: int) -> int:
    """2^(depth−1), depth = ceil(log2(n / cl_size)) + 1: clusters of cl_size/2 … cl_size items."""
    if n <= cl_size:
        return 1
    return 2 ** math.ceil(math.log2(n / cl_size))


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _split_equal_groups(
    emb: np.ndarray, groups: np.ndarray, rng: np.random.Generator, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced 2-means on g clusters of the same size s at once (``groups``: g×s item ids).

    Two distinct random members seed the centroids; items are sorted by
    sim(c1) − sim(c0) and the lower half goes to c0, so the halves differ by at most one item.
    Iterates until the mean similarity gains less than ``tol`` in every cluster.
    """
    g, s = groups.shape
    x = emb[groups]  # g×s×d
    seeds = np.argsort(rng.random((g, s)), axis=1)[:, :2]
    cent = np.take_along_axis(x, seeds[:, :, None], axis=1)  # g×2×d
    half = s // 2
    prev = np.full(g, -np.inf)
    order = None
    for _ in range(max_iter):
        sims = np.einsum("gsd,gkd->gsk", x, cent)  # g×s×2
        order = np.argsort(sims[:, :, 1] - sims[:, :, 0], axis=1, kind="stable")
        to_c1 = np.zeros((g, s), dtype=bool)
        np.put_along_axis(to_c1, order[:, half:], True, axis=1)
        obj = np.where(to_c1, sims[:, :, 1], sims[:, :, 0]).mean(axis=1)
        w1 = to_c1[:, :, None].astype(x.dtype)
        cent = _normalise(np.stack([((1 - w1) * x).sum(1), (w1 * x).sum(1)], axis=1))
        if np.all(obj - prev < tol):
            break
        prev = obj
    left = np.take_along_axis(groups, order[:, :half], axis=1)
    right = np.take_along_axis(groups, order[:, half:], axis=1)
    return left, right


def balanced_kmeans(
    emb: np.ndarray,
    num_clusters: int,
    seed: int | np.random.Generator = 0,
    tol: float = 1e-4,
    max_iter: int = 25,
) -> list[np.ndarray]:
    """Split ``emb`` (n×d, cosine) into ``num_clusters`` (a power of two) balanced clusters by
    recursive balanced 2-means; returns member-index arrays whose sizes differ by at most one.

    Each level splits all current clusters together, vectorised over clusters of equal size
    (at most two sizes occur per level).
    """
    if num_clusters < 1 or num_clusters & (num_clusters - 1):
        raise ValueError(f"num_clusters={num_clusters}: expected a power of two")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    emb = _normalise(np.asarray(emb, dtype=np.float32))
    n = emb.shape[0]
    clusters = [np.arange(n)]
    while len(clusters) < num_clusters and max(len(c) for c in clusters) >= 2:
        nxt: list[np.ndarray] = []
        sizes = np.array([len(c) for c in clusters])
        for size in np.unique(sizes):
            idx = np.flatnonzero(sizes == size)
            if size < 2:
                nxt.extend(clusters[i] for i in idx)
                continue
            left, right = _split_equal_groups(
                emb, np.stack([clusters[i] for i in idx]), rng, tol, max_iter
            )
            for a, b in zip(left, right):
                nxt.extend((a, b))
        clusters = nxt
    return clusters


def clustered_order(clusters: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Shuffle the clusters and concatenate their members into one sample order."""
    perm = rng.permutation(len(clusters))
    return np.concatenate([clusters[i] for i in perm]) if clusters else np.zeros(0, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class ClusterSchedule:
    """When to (re-)cluster and with what cluster size.

    Clustering starts at epoch ``cl_start`` and is refreshed every ``cl_update`` epochs; ``cl_size``
    doubles at each epoch in ``curr_steps``. Unlike the released code we also re-cluster at a
    curriculum step that does not fall on a refresh epoch, so the new size takes effect at once.
    """

    cl_size: int
    cl_start: int
    cl_update: int
    curr_steps: tuple[int, ...] = ()

    def clustered(self, epoch: int) -> bool:
        return epoch >= self.cl_start

    def cluster_size(self, epoch: int) -> int:
        return self.cl_size * 2 ** sum(1 for s in self.curr_steps if s <= epoch)

    def refresh(self, epoch: int) -> bool:
        if not self.clustered(epoch):
            return False
        return (epoch - self.cl_start) % self.cl_update == 0 or epoch in self.curr_steps
