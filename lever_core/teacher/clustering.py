"""Clustered batches: the cluster count rule, the batch order and the cluster-size curriculum.

NGAME/LEVER build hard in-batch negatives by clustering the (stale) input-side embeddings into
small clusters of similar items and concatenating shuffled clusters into the sample order, so each
batch is a union of many tight clusters. The clusters are the leaves of the one balanced tree,
``lever.utils.balanced_tree`` (``batch_clusters``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lever.utils.balanced_tree import balanced_leaves, leaf_members


def num_clusters_for(n: int, cl_size: int) -> int:
    """2^(depth−1), depth = ceil(log2(n / cl_size)) + 1: clusters of cl_size/2 … cl_size items
    (never more clusters than items)."""
    if n <= cl_size:
        return 1
    return min(n, 2 ** math.ceil(math.log2(n / cl_size)))


def batch_clusters(emb: np.ndarray, cl_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The member ids of ``num_clusters_for(n, cl_size)`` balanced clusters of the rows of ``emb``
    (cosine; sizes differ by at most one), drawn from ``rng``."""
    k = num_clusters_for(len(emb), cl_size)
    return leaf_members(balanced_leaves(emb, k, rng), k)


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
