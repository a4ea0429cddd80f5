"""The one balanced clustering: leaves of a balanced tree by recursive spherical 2-means."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lever.utils.balanced_tree import (
    balanced_leaves,
    balanced_tree_codes,
    leaf_members,
    normalise_rows,
)


def _blobs(groups: int, per: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim))
    labels = np.repeat(np.arange(groups), per)
    x = centres[labels] + 0.05 * rng.normal(size=(groups * per, dim))
    perm = rng.permutation(len(x))
    return x[perm].astype(np.float32), labels[perm]


def _features(sparse: bool, n: int = 203, dim: int = 12):
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    return sp.csr_matrix(np.where(x > 0.5, x, 0)) if sparse else x


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3, 7, 8, 13, 64, 203])
def test_every_row_in_one_leaf_and_sizes_differ_by_at_most_one(sparse, k):
    x = _features(sparse)
    leaves = balanced_leaves(x, k, seed=5)
    assert leaves.dtype == np.int64 and leaves.shape == (203,)
    sizes = np.bincount(leaves, minlength=k)
    assert len(sizes) == k and sizes.min() == 203 // k and sizes.max() - sizes.min() <= 1
    members = leaf_members(leaves, k)
    assert all(np.array_equal(m, np.flatnonzero(leaves == c)) for c, m in enumerate(members))
    assert np.array_equal(np.sort(np.concatenate(members)), np.arange(203))


@pytest.mark.parametrize("sparse", [False, True])
def test_power_of_two_leaves_are_nested_path_codes(sparse):
    x, depth = _features(sparse), 5
    codes = balanced_tree_codes(x, depth, seed=2)
    assert np.array_equal(codes, balanced_leaves(x, 2**depth, seed=2))
    for b in range(depth + 1):
        # the same seed with 2^b leaves is exactly the depth-b partition of the deeper tree
        assert np.array_equal(balanced_leaves(x, 2**b, seed=2), codes >> (depth - b)), b


@pytest.mark.parametrize("sparse", [False, True])
def test_deterministic_by_seed_and_generator(sparse):
    x = _features(sparse)
    a = balanced_leaves(x, 13, seed=7)
    assert np.array_equal(a, balanced_leaves(x, 13, seed=7))
    assert not np.array_equal(a, balanced_leaves(x, 13, seed=8))
    rng = np.random.default_rng(7)
    assert np.array_equal(a, balanced_leaves(x, 13, rng))  # a generator seeded alike gives the same
    assert rng.random() != np.random.default_rng(7).random()  # ... and is advanced


@pytest.mark.parametrize("sparse", [False, True])
def test_similar_rows_share_a_leaf_at_every_depth(sparse):
    x, labels = _blobs(groups=8, per=16)
    feats = sp.csr_matrix(np.hstack([np.maximum(x, 0), np.maximum(-x, 0)])) if sparse else x
    for k in (8, 32):  # leaves (and sub-leaves) never mix blobs
        leaves = balanced_leaves(feats, k, seed=3)
        assert all(len(set(labels[m].tolist())) == 1 for m in leaf_members(leaves, k)), k


def test_dense_and_sparse_columns_cluster_together():
    # each half of the rows is tied together by one part only: the leaves follow both parts
    x, labels = _blobs(groups=4, per=20, dim=8)
    dense = np.where((labels < 2)[:, None], x, 0.0).astype(np.float32)
    sparse = sp.csr_matrix(np.where((labels >= 2)[:, None], np.abs(x), 0.0))
    both = sp.hstack([sp.csr_matrix(dense), sparse]).tocsr()
    leaves = balanced_leaves(both, 4, seed=0)
    assert all(len(set(labels[m].tolist())) == 1 for m in leaf_members(leaves, 4))


def test_rows_are_normalised_and_bad_counts_are_refused():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    assert np.allclose(normalise_rows(x), [[0.6, 0.8], [0.0, 0.0]])
    assert np.allclose(normalise_rows(sp.csr_matrix(x)).toarray(), [[0.6, 0.8], [0.0, 0.0]])
    assert np.array_equal(balanced_leaves(np.zeros((0, 3)), 1), np.zeros(0, dtype=np.int64))
    for k in (0, 11):
        with pytest.raises(ValueError, match="expected 1 <= leaves <= rows"):
            balanced_leaves(np.ones((10, 2)), k)
    with pytest.raises(ValueError, match="2\\*\\*depth"):
        balanced_tree_codes(np.ones((10, 2)), 4)
