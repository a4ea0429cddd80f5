"""Clustered batches (leaves of the one balanced tree), the cluster count rule and the curriculum."""

from __future__ import annotations

import numpy as np

from lever.teacher.clustering import (
    ClusterSchedule,
    batch_clusters,
    clustered_order,
    num_clusters_for,
)


def test_batch_clusters_follow_the_cluster_size_contract():
    x = np.random.default_rng(1).normal(size=(1003, 8)).astype(np.float32)
    clusters = batch_clusters(x, 16, np.random.default_rng(0))
    sizes = [len(c) for c in clusters]
    assert len(clusters) == num_clusters_for(1003, 16) == 64
    assert max(sizes) - min(sizes) <= 1 and 16 / 2 <= min(sizes) and max(sizes) <= 16
    assert sorted(np.concatenate(clusters).tolist()) == list(range(1003))
    again = batch_clusters(x, 16, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(clusters, again))


def test_num_clusters_rule():
    # depth = ceil(log2(n / cl_size)) + 1 -> 2^(depth−1) clusters of cl_size/2 … cl_size items
    assert num_clusters_for(17000, 8) == 4096
    assert num_clusters_for(1600, 8) == 256
    assert num_clusters_for(5, 8) == 1
    n = 17000
    assert 8 / 2 <= n / num_clusters_for(n, 8) <= 8
    assert num_clusters_for(5, 1) == 5  # never more clusters than items


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
