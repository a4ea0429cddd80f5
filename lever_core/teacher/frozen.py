"""The frozen-feature teacher (kind ``frozen``): a small trainable Siamese tower over cached
frozen-encoder embeddings (MiniLM by default), shared by documents and label texts.

Fine-tuning MiniLM costs about an hour per WordNet epoch on a 2-core CPU; the frozen embeddings are
computed once (cached), after which a tower epoch over every (document, label) pair is seconds, so
many epochs over every (document, label) pair become affordable, and so would the NGAME schedule
(clustered batches re-clustered on *fresh* tower embeddings instead of a stale bank), though the
``frozen-cpu`` default uses random batches and the softmax loss (measured: docs/teacher.md). Labels without training
documents still get an embedding: the tower is applied to their text's features.

Everything else (batching, losses, clustering, export) is ``lever.teacher.train.SiameseTeacher``'s,
and the loop (schedule, checkpoints, resume) the one trainer's; this class only swaps the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lever.teacher.batching import PairBatcher
from lever.teacher.clustering import batch_clusters, clustered_order
from lever.teacher.train import SiameseTeacher
from lever.train.embeddings import frozen_embeddings

TOWER_FILE = "tower.safetensors"


class ResidualTower(nn.Module):
    """x ↦ normalise(c + W2·gelu(W1·c/σ + b1)), c = x − μ (μ, σ: per-dimension mean and standard
    deviation of the training features, fixed buffers saved with the weights).

    W2 starts at zero, so the untrained tower is the frozen encoder with its mean removed (the
    zero-shot teacher's cosines, centred) and training starts there. Why centre: sentence
    embeddings share a common direction (mean pairwise cosine 0.99 for a random BERT, lower but
    not zero for MiniLM); left in, it dominates every cosine and the tower collapses everything
    onto it instead of separating texts (measured on the tiny test data: all scores → 1)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        # No output bias: a shared offset only pulls every embedding toward one direction.
        self.down = nn.Linear(hidden, dim, bias=False)
        nn.init.zeros_(self.down.weight)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @torch.no_grad()
    def set_input_stats(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(0))
        self.scale.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.mean
        return F.normalize(x + self.down(F.gelu(self.up(x / self.scale))), dim=-1)


def _as_tensor(rows, device) -> torch.Tensor:
    if isinstance(rows, torch.Tensor):
        return rows.to(device).float()
    return torch.from_numpy(np.array(rows, dtype=np.float32)).to(device)  # copies memmap rows


@torch.no_grad()
def apply_tower(
    tower: nn.Module, features: np.ndarray | torch.Tensor, chunk: int = 16384
) -> np.ndarray:
    """Unit-norm float32 teacher embeddings of feature rows (eval mode, chunked)."""
    was_training = tower.training
    tower.eval()
    device = next(tower.parameters()).device
    try:
        out = [
            tower(_as_tensor(features[s : s + chunk], device))
            .cpu()
            .numpy()
            for s in range(0, len(features), chunk)
        ]
    finally:
        tower.train(was_training)
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def load_tower(path: str | os.PathLike, hidden: int | None = None) -> ResidualTower:
    """A tower from ``T/tower.safetensors`` (shapes read from the file)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    try:
        hid, dim = state["up.weight"].shape
    except KeyError:
        raise ValueError(f"{path}: not a teacher tower (no 'up.weight' tensor)") from None
    if hidden is not None and hid != hidden:
        raise ValueError(f"{path}: tower width {hid}, but the teacher config says hidden={hidden}")
    tower = ResidualTower(dim, hid)
    tower.load_state_dict(state)
    return tower


class FrozenTeacher(SiameseTeacher):
    """``SiameseTeacher`` with the encoder replaced by a tower over cached frozen features."""

    saves_bank = False  # clustering always re-embeds with the current tower: nothing stale to keep

    @property
    def cache_dir(self) -> Path:
        return Path(self.params.cache_dir) if self.params.cache_dir else self.out / "cache"

    def features(self, splits: tuple[str, ...]) -> dict[str, np.ndarray]:
        p = self.params
        return frozen_embeddings(
            self.dataset, self.cache_dir, p.encoder, splits, p.embed_batch_size, max_len=p.max_len
        )

    def build_model(self) -> int:
        p = self.params
        self.feats = {
            side: torch.from_numpy(np.array(a, dtype=np.float32)).to(self.device)
            for side, a in self.features(("trn", "lbl")).items()
        }
        dim = int(self.feats["lbl"].shape[1])
        torch.manual_seed(p.seed)
        self.tower = ResidualTower(dim, p.hidden).to(self.device)
        self.tower.set_input_stats(torch.cat([self.feats["trn"], self.feats["lbl"]]))
        self.module = self.tower
        self.trainable = list(self.tower.parameters())
        return dim

    def _epoch_order(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        """Pair batches: cluster the distinct *documents* (fresh tower embeddings) and expand each
        document into all its pairs, instead of clustering the pair items themselves. Identical
        copies of a document (one per label) are what a pair-level clustering spends most of its
        time on (34k pair rows vs 8k documents on FOLDOC, 210k vs 66k on WordNet), and they land
        in the same cluster anyway. ``cl_size`` then counts documents."""
        b = self.batcher
        if not isinstance(b, PairBatcher) or not self.schedule.clustered(epoch):
            return super()._epoch_order(epoch, rng)
        if self.schedule.refresh(epoch) or self.clusters is None:
            docs = np.unique(b.inputs)
            emb = apply_tower(self.tower, self.feats[b.input_side][torch.from_numpy(docs)])
            self.clusters = [docs[c] for c in batch_clusters(emb, self.schedule.cluster_size(epoch), rng)]
        doc_order = clustered_order(self.clusters, rng)
        # PairBatcher items are in CSR order: document d owns items indptr[d]:indptr[d + 1].
        indptr = b.positives.indptr
        start, count = indptr[doc_order], indptr[doc_order + 1] - indptr[doc_order]
        offsets = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        return np.repeat(start, count) + offsets

    def _fill_bank(self) -> None:
        """Called at every (re-)clustering: embed the input side afresh, a cheap forward pass."""
        b = self.batcher
        side_emb = apply_tower(self.tower, self.feats[b.input_side])
        self.bank = side_emb[b.inputs]
        self.bank_filled[:] = True

    def encode_pair(
        self, inputs: np.ndarray, sampled: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One tower pass over the batch's *distinct* rows of both sides, gathered back. Pair
        batches repeat rows (a document once per label, a popular label once per document, and
        clustered batches group a document's pairs), so this is up to ~3x fewer rows to push
        through the tower forward and backward, which is nearly all of a step's cost."""
        b = self.batcher
        u_in, inv_in = np.unique(inputs, return_inverse=True)
        u_out, inv_out = np.unique(sampled, return_inverse=True)
        dev = self.device
        x = torch.cat(
            [
                self.feats[b.input_side][torch.from_numpy(u_in).to(dev)],
                self.feats[b.output_side][torch.from_numpy(u_out).to(dev)],
            ]
        )
        e = self.tower(x)
        e_in = e[: len(u_in)][torch.from_numpy(inv_in.reshape(-1)).to(dev)]
        e_out = e[len(u_in) :][torch.from_numpy(inv_out.reshape(-1)).to(dev)]
        return e_in, e_out

    def embed_split(self, split: str) -> np.ndarray:
        if split in ("trn", "lbl") and hasattr(self, "feats"):
            return apply_tower(self.tower, self.feats[split])
        return apply_tower(self.tower, self.features((split,))[split])

    def save_model(self) -> None:
        from safetensors.torch import save_file

        from lever.utils.atomic import atomic_path

        state = {k: v.detach().contiguous().cpu() for k, v in self.tower.state_dict().items()}
        with atomic_path(self.out / TOWER_FILE, suffix=".safetensors") as tmp:
            save_file(state, str(tmp))

    def meta_extra(self) -> dict:
        from lever.encoders import resolve_encoder_path

        # The base encoder, as lever.train.embeddings reads it; the tower is applied on top of it.
        return {"encoder": resolve_encoder_path(self.params.encoder), "tower": TOWER_FILE}
