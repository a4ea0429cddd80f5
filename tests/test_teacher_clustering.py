"""Balanced 2-means clustering, the cluster count rule and the cluster-size curriculum."""

from __future__ import annotations

import numpy as np
import pytest

from lever.teacher.clustering import (
    ClusterSchedule,
    balanced_kmeans,
    clustered_order,
    num_clusters_for,
)


def _blobs(groups: int, per: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim))
    labels = np.repeat(np.arange(groups), per)
    x = centres[labels] + 0.05 * rng.normal(size=(groups * per, dim))
    perm = rng.permutation(len(x))
    return x[perm].astype(np.float32), labels[perm]


def test_balanced_sizes_and_partition():
    x = np.random.default_rng(1).normal(size=(1003, 8)).astype(np.float32)
    clusters = balanced_kmeans(x, 64, seed=0)
    sizes = [len(c) for c in clusters]
    assert len(clusters) == 64
    assert max(sizes) - min(sizes) <= 1
    assert sorted(np.concatenate(clusters).tolist()) == list(range(1003))


def test_similar_items_end_up_together():
    x, labels = _blobs(groups=8, per=16)
    clusters = balanced_kmeans(x, 8, seed=3)
    purity = [np.bincount(labels[c]).max() / len(c) for c in clusters]
    assert min(purity) == 1.0
    finer = balanced_kmeans(x, 32, seed=3)  # sub-clusters never mix blobs either
    assert all(len(set(labels[c].tolist())) == 1 for c in finer)


def test_num_clusters_rule_and_errors():
    # depth = ceil(log2(n / cl_size)) + 1 -> 2^(depth−1) clusters of cl_size/2 … cl_size items
    assert num_clusters_for(17000, 8) == 4096
    assert num_clusters_for(1600, 8) == 256
    assert num_clusters_for(5, 8) == 1
    n = 17000
    assert 8 / 2 <= n / num_clusters_for(n, 8) <= 8
    with pytest.raises(ValueError, match="power of two"):
        balanced_kmeans(np.ones((10, 2)), 3)


def test_clustered_order_keeps_clusters_contiguous():
    clusters = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])]
    order = clustered_order(clusters, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(6))
    pairs = {tuple(sorted(order[i : i + 2].tolist())) for i in range(0, 6, 2)}
    assert pairs == {(0, 1), (2, 3), (4, 5)}


def test_curriculum_matches_released_readme():
    sched = ClusterSchedule(
        cl_size=8, cl_start=10, cl_update=5, curr_steps=(25, 50, 75, 100, 125, 150, 200)
    )
    table = {
        0: None,
        9: None,
        10: 8,
        24: 8,
        25: 16,
        49: 16,
        50: 32,
        75: 64,
        100: 128,
        125: 256,
        150: 512,
        199: 512,
        200: 1024,
        299: 1024,
    }
    for epoch, size in table.items():
        assert sched.clustered(epoch) == (size is not None)
        if size is not None:
            assert sched.cluster_size(epoch) == size
    refresh = [e for e in range(40) if sched.refresh(e)]
    assert refresh == [10, 15, 20, 25, 30, 35]
    # A curriculum step off the refresh grid re-clusters at once.
    assert ClusterSchedule(8, 2, 4, (5,)).refresh(5)
