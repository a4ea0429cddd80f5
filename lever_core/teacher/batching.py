"""NGAME-style items, in-batch target masks, and tokenised batches for the Siamese teacher.

An *item* pairs an input text with one sampled positive:
- label side (LEVER's choice): the input is a label with ≥1 training document, the positive one
  of its documents drawn uniformly, redrawn every epoch;
- document side (NGAME's): the input is a training document with ≥1 label, the positive one of
  its labels drawn uniformly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch


def in_batch_target_mask(
    positives: sp.csr_matrix, inputs: np.ndarray, sampled: np.ndarray
) -> torch.Tensor:
    """B×B bool mask: (i, j) is True when item j's sampled positive is a true positive of item i's
    input (``positives`` rows are inputs, columns the positive side); the diagonal is always True.
    Such co-positives must never serve as negatives."""
    sub = positives[inputs][:, sampled]
    mask = torch.from_numpy(np.asarray(sub.todense()) > 0)
    mask.fill_diagonal_(True)
    return mask


def _sample_one_per_row(m: sp.csr_matrix, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column drawn uniformly from the non-zeros of each given row."""
    start = m.indptr[rows]
    count = m.indptr[rows + 1] - start
    return m.indices[start + (rng.random(len(rows)) * count).astype(np.int64)]


class _ItemBatcher:
    """Items of one side; ``positives`` is the binary inputs × outputs matrix."""

    input_side: str
    output_side: str

    def __init__(self, positives: sp.csr_matrix):
        positives = sp.csr_matrix(positives, dtype=np.float32)
        positives.sum_duplicates()
        positives.eliminate_zeros()
        positives.sort_indices()
        self.positives = positives
        self.inputs = np.flatnonzero(np.diff(positives.indptr) > 0)
        if len(self.inputs) == 0:
            raise ValueError(
                f"no {self.input_side} has a positive {self.output_side}: nothing to train on"
            )
        self.sampled = self.inputs.copy()

    def __len__(self) -> int:
        return len(self.inputs)

    def resample(self, rng: np.random.Generator) -> None:
        """Draw this epoch's positive for every item."""
        self.sampled = _sample_one_per_row(self.positives, self.inputs, rng)

    def batch(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Input ids, sampled positive ids and the target mask of the given items."""
        inputs, sampled = self.inputs[items], self.sampled[items]
        return inputs, sampled, in_batch_target_mask(self.positives, inputs, sampled)


class LabelSideBatcher(_ItemBatcher):
    """Items are labels with ≥1 training document, each paired per epoch with one of them."""

    input_side, output_side = "lbl", "trn"

    def __init__(self, trn_Y: sp.spmatrix):
        super().__init__(sp.csr_matrix(trn_Y).T.tocsr())


class DocSideBatcher(_ItemBatcher):
    """Items are training documents with ≥1 label; each epoch pairs each with one of its labels."""

    input_side, output_side = "trn", "lbl"

    def __init__(self, trn_Y: sp.spmatrix):
        super().__init__(sp.csr_matrix(trn_Y))


class PairBatcher(_ItemBatcher):
    """Items are all (document, label) positive pairs: every pair once per epoch, nothing sampled.
    Cheap only when an item costs little (the frozen-feature teacher); the document is the input
    side, so clustered batches group similar documents as NGAME does."""

    input_side, output_side = "trn", "lbl"

    def __init__(self, trn_Y: sp.spmatrix):
        super().__init__(sp.csr_matrix(trn_Y))
        m = self.positives
        self.inputs = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        self.sampled = m.indices.astype(np.int64)

    def resample(self, rng: np.random.Generator) -> None:
        """Every pair is its own item: nothing to draw."""


def make_batcher(batch_type: str, trn_Y: sp.spmatrix) -> _ItemBatcher:
    if batch_type == "label":
        return LabelSideBatcher(trn_Y)
    if batch_type == "doc":
        return DocSideBatcher(trn_Y)
    if batch_type == "pair":
        return PairBatcher(trn_Y)
    raise ValueError(f"batch_type {batch_type!r}: expected 'label', 'doc' or 'pair'")


def batch_slices(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive chunks of the sample order (the last one may be smaller)."""
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclasses.dataclass
class TokenTable:
    """Texts tokenised once to ``max_len`` (ids padded with the pad id, real lengths kept)."""

    ids: np.ndarray  # n × max_len int32
    lengths: np.ndarray  # n int32

    @classmethod
    def build(cls, tokenizer, texts: list[str], max_len: int, chunk: int = 4096) -> TokenTable:
        ids = np.full((len(texts), max_len), tokenizer.pad_token_id or 0, dtype=np.int32)
        lengths = np.zeros(len(texts), dtype=np.int32)
        for s in range(0, len(texts), chunk):
            enc = tokenizer(
                list(texts[s : s + chunk]),
                max_length=max_len,
                truncation=True,
                padding=False,
                add_special_tokens=True,
            )["input_ids"]
            for r, row in enumerate(enc):
                ids[s + r, : len(row)] = row
                lengths[s + r] = len(row)
        return cls(ids, lengths)

    def features(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Model inputs for ``rows``, clipped to the longest text among them."""
        lengths = self.lengths[rows]
        width = max(int(lengths.max()), 1)
        ids = torch.from_numpy(self.ids[rows, :width].astype(np.int64))
        mask = (torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]).long()
        return {"input_ids": ids, "attention_mask": mask}
