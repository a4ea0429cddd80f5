"""What the encoder reads for each row: token ids, frozen embeddings, TF-IDF/BoW bags, or a mix.

``RowFeatures`` serves one split (the training split may carry label-as-datapoint rows after its
documents) and turns an array of row ids into the batch dict :class:`EmbeddingHead` consumes. It
holds plain arrays, memmaps and CSR matrices only, so DataLoader workers can pickle it.

The TF-IDF featuriser is fitted on the training texts only (vocabulary capped by document
frequency, ties broken alphabetically by scikit-learn, hence deterministic) and saved as JSON beside
the model so prediction uses the very same vocabulary and idf.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from lever.utils.atomic import write_json_atomic


class TfidfFeaturizer:
    """Sublinear-tf TF-IDF over word n-grams, rows L2-normalised, float32 CSR."""

    def __init__(self, max_features: int = 50_000, ngram_max: int = 2, min_df: int = 2):
        self.max_features, self.ngram_max, self.min_df = (
            int(max_features),
            int(ngram_max),
            int(min_df),
        )
        self._vec = None

    def _new_vectorizer(self, vocabulary=None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            lowercase=True,
            ngram_range=(1, self.ngram_max),
            min_df=1 if vocabulary is not None else self.min_df,
            max_features=None if vocabulary is not None else self.max_features,
            sublinear_tf=True,
            dtype=np.float32,
            vocabulary=vocabulary,
        )

    def fit(self, texts: list[str]) -> TfidfFeaturizer:
        self._vec = self._new_vectorizer().fit(texts)
        return self

    @property
    def vocab_size(self) -> int:
        return len(self._vec.vocabulary_)

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        if self._vec is None:
            raise RuntimeError("TfidfFeaturizer: call fit() or load() first")
        return self._vec.transform(texts).tocsr().astype(np.float32)

    def save(self, path: str | os.PathLike) -> None:
        vocab = sorted(self._vec.vocabulary_.items(), key=lambda kv: kv[1])
        write_json_atomic(
            path,
            {
                "max_features": self.max_features,
                "ngram_max": self.ngram_max,
                "min_df": self.min_df,
                "vocabulary": [t for t, _ in vocab],
                "idf": [float(x) for x in self._vec.idf_],
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> TfidfFeaturizer:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            self = cls(d["max_features"], d["ngram_max"], d["min_df"])
            vocab = {t: i for i, t in enumerate(d["vocabulary"])}
            idf = np.asarray(d["idf"], dtype=np.float64)
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a TF-IDF featuriser file ({e})") from None
        if idf.shape != (len(vocab),):
            raise ValueError(
                f"{path}: 'idf' has {idf.size} values for {len(vocab)} vocabulary terms"
            )
        vec = self._new_vectorizer(vocabulary=vocab)
        vec.fit([""])  # sets up the analyzer; idf is replaced just below
        vec.idf_ = idf
        self._vec = vec
        return self


class StackedRows:
    """Row lookup over several 2-d arrays (e.g. document and label embedding memmaps) stacked."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.starts = np.cumsum([0] + [p.shape[0] for p in parts])
        self.dim = int(parts[0].shape[1])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        which = np.searchsorted(self.starts, ids, side="right") - 1
        for k, part in enumerate(self.parts):
            sel = np.flatnonzero(which == k)
            if sel.size:
                out[sel] = part[ids[sel] - self.starts[k]]
        return out


def csr_bag(rows: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices, offsets, per-sample weights) of CSR rows, the input of ``nn.EmbeddingBag``."""
    return (
        torch.from_numpy(rows.indices.astype(np.int64)),
        torch.from_numpy(rows.indptr[:-1].astype(np.int64)),
        torch.from_numpy(rows.data.astype(np.float32)),
    )


class RowFeatures:
    """Encoder inputs of one split, indexed by row id.

    texts: raw texts (for a transformer, tokenised per batch); dense: frozen embeddings
    (``StackedRows``); bag: sparse CSR rows for the embedding bag.
    """

    def __init__(
        self,
        num_rows: int,
        texts: list[str] | None = None,
        dense: StackedRows | None = None,
        bag: sp.csr_matrix | None = None,
        tokenizer_path: str | None = None,
        max_len: int = 32,
    ):
        self.num_rows = int(num_rows)
        self.texts, self.dense, self.bag = texts, dense, bag
        self.tokenizer_path, self.max_len = tokenizer_path, int(max_len)
        self._tokenizer = None
        for name, part in (("texts", texts), ("dense", dense), ("bag", bag)):
            rows = None if part is None else (part.shape[0] if name == "bag" else len(part))
            if rows is not None and rows != self.num_rows:
                raise ValueError(f"RowFeatures: {name} has {rows} rows, expected {self.num_rows}")

    def __len__(self) -> int:
        return self.num_rows

    def __getstate__(self):  # tokenizers are rebuilt in each worker
        state = dict(self.__dict__)
        state["_tokenizer"] = None
        return state

    def __call__(self, ids: np.ndarray) -> dict:
        ids = np.asarray(ids, dtype=np.int64)
        batch: dict = {}
        if self.texts is not None and self.tokenizer_path is not None:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
            enc = self._tokenizer(
                [self.texts[i] for i in ids],
                padding=True,
                truncation=True,
                max_length=self.max_len,
                return_tensors="pt",
            )
            batch["tokens"] = {
                "input_ids": enc["input_ids"],
                "attention_mask": enc["attention_mask"],
            }
        if self.dense is not None:
            batch["dense"] = torch.from_numpy(self.dense.take(ids))
        if self.bag is not None:
            batch["bag"] = csr_bag(self.bag[ids])
        return batch


def batch_to(batch: dict, device: torch.device | str) -> dict:
    """The batch dict with every tensor on ``device``."""
    out: dict = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = {kk: vv.to(device, non_blocking=True) for kk, vv in v.items()}
        elif isinstance(v, tuple):
            out[k] = tuple(t.to(device, non_blocking=True) for t in v)
        else:
            out[k] = v.to(device, non_blocking=True)
    return out
