"""Label-side / document-side items, the in-batch target mask and the token table."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lever.teacher.batching import (
    DocSideBatcher,
    LabelSideBatcher,
    TokenTable,
    batch_slices,
    in_batch_target_mask,
)

# 4 documents x 4 labels; label 3 has no training document.
Y = sp.csr_matrix(
    np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]], dtype=np.float32)
)


def test_label_side_items_and_sampling():
    b = LabelSideBatcher(Y)
    assert b.inputs.tolist() == [0, 1, 2]  # only labels with >= 1 training document
    seen = {i: set() for i in range(3)}
    for seed in range(40):
        b.resample(np.random.default_rng(seed))
        for item, doc in enumerate(b.sampled.tolist()):
            assert Y[doc, b.inputs[item]] == 1  # always one of the label's documents
            seen[item].add(doc)
    assert seen == {0: {0, 1}, 1: {0, 2}, 2: {2, 3}}  # uniformly drawn: every positive shows up


def test_label_side_mask_marks_co_positives():
    b = LabelSideBatcher(Y)
    b.sampled = np.array([0, 2, 3])  # label 0 <- doc 0, label 1 <- doc 2, label 2 <- doc 3
    _, _, mask = b.batch(np.arange(3))
    # (i, j) = 1 when doc sampled for item j is a document of label i:
    # doc 0 has labels {0, 1}; doc 2 has {1, 2}; doc 3 has {2}.
    expected = [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert mask.int().tolist() == expected


def test_doc_side_mask_and_diagonal():
    b = DocSideBatcher(Y)
    assert b.inputs.tolist() == [0, 1, 2, 3]
    b.sampled = np.array([1, 0, 1, 2])
    _, _, mask = b.batch(np.arange(4))
    # (i, j) = 1 when label sampled for document j is a label of document i
    assert mask.int().tolist() == [[1, 1, 1, 0], [0, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 1]]
    direct = in_batch_target_mask(
        sp.csr_matrix(np.zeros((2, 2))), np.array([0, 1]), np.array([0, 1])
    )
    assert direct.int().tolist() == [[1, 0], [0, 1]]  # the diagonal is always a positive


def test_batch_slices_cover_order():
    order = np.arange(10)[::-1]
    chunks = batch_slices(order, 4)
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert np.concatenate(chunks).tolist() == order.tolist()


def test_token_table_clips_to_longest(tiny_bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    table = TokenTable.build(tok, ["dog", "a very long text " * 20, "the cat sat"], max_len=12)
    assert table.ids.shape == (3, 12)
    assert table.lengths.tolist()[1] == 12  # truncated at max_len
    feats = table.features(np.array([0, 2]))
    width = int(table.lengths[[0, 2]].max())
    assert feats["input_ids"].shape == (2, width)
    assert feats["attention_mask"].sum(1).tolist() == table.lengths[[0, 2]].tolist()
