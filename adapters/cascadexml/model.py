"""CascadeXML's model: a balanced label tree, one classifier per tree level, each reading the
features of its own encoder layer, and a beam that walks the tree from the coarsest level down.

Tree. Level ``i < m−1`` holds ``2^{b_i}`` clusters (``depths = [b_0 < … < b_{m−2}]``), the last
level the ``L`` labels. Every label has a path code of ``b_{m−2}`` bits (``codes``), its cluster at
level ``i`` is ``code >> (b_{m−2} − b_i)``; cluster ``c`` of level ``i`` has the children
``c·2^Δ … c·2^Δ + 2^Δ − 1`` (``Δ = b_{i+1} − b_i``) at level ``i+1``, and a finest cluster's
children are its labels (``leaf_labels``, padded with the id ``L``). The tree is in the module's
buffers, so it is saved with the weights and checkpoints.

Scores. Level ``i`` scores node ``c`` as ``z = ⟨W_i[c], h_i(x)⟩ + b_i[c]`` where ``h_i`` is the
dropout of the level's features (the pooled states of its encoder layers, several of them
projected back to the hidden size by a Linear, as the paper's level 0; the label level may add
Renée's TF-IDF bag). Level 0 scores all its clusters; level ``i ≥ 1`` scores the children of the
``beam[i−1]`` best clusters of level ``i−1`` (``predict_beam[i−1]`` at inference). The label table has a zero padding row (id ``L``).

Calling the module is inference: ``(label ids [B, K], scores [B, K])`` of the final beam, the
score ``log σ(z_label) + log σ(z_parent)`` (``weighted``, the paper's default: only the immediate
parent, as upstream) or ``log σ(z_label)`` (``level``); padding ids are ``-1`` with score −∞.
Training (teacher forcing through ``lever_shortlist``) lives in the backbone
(:mod:`lever_adapters.cascadexml.train`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lever_adapters.renee.model import BagPart

# Score a level's candidates by one matmul against the batch's distinct candidates while they
# number at most this many times one row's candidates (else gather each row's weight rows).
UNIQUE_FACTOR = 16


def auto_depths(num_labels: int, cluster_levels: int, branch_bits: int, leaf_size: int) -> list[int]:
    """Cluster-level depths scaled with L: the finest has about ``leaf_size`` labels per cluster,
    each coarser one ``branch_bits`` bits fewer; depths that would be < 1 are dropped."""
    finest = max(1, math.ceil(math.log2(max(num_labels / leaf_size, 1.0))))
    finest = min(finest, num_labels.bit_length() - 1)  # 2**finest <= L
    return [d for d in (finest - branch_bits * k for k in range(cluster_levels - 1, -1, -1)) if d >= 1]


def leaf_table(codes: np.ndarray, num_clusters: int) -> np.ndarray:
    """``[num_clusters, max size]`` labels of every finest cluster, ascending, padded with ``L``."""
    num_labels = codes.size
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=num_clusters)
    if counts.min() == 0:
        raise ValueError("label tree: a finest cluster is empty; the tree needs 2**depth <= labels")
    table = np.full((num_clusters, int(counts.max())), num_labels, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(num_labels) - np.repeat(starts, counts)
    table[codes[order], pos] = order
    return table


class CascadeModule(nn.Module):
    """See the module docstring. ``codes``: each label's path code at the finest cluster depth
    (``None``: all zeros, to be replaced by ``load_state_dict``); ``level_layers``: per level, the
    encoder layers it reads (positions within ``used_layers``, whose pooled states of width
    ``hidden`` make up ``inputs["dense"]`` or the output of ``encoder``)."""

    def __init__(
        self,
        num_labels: int,
        depths: list[int],
        level_layers: list[list[int]],
        used_layers: list[int],
        hidden: int,
        beam: list[int],
        dropouts: list[float],
        codes: np.ndarray | None = None,
        encoder: nn.Module | None = None,
        vocab_size: int = 0,
        bag_dim: int = 0,
        score: str = "weighted",
        seed: int = 0,
        predict_beam: list[int] | None = None,
    ):
        super().__init__()
        self.num_labels, self.depths = int(num_labels), [int(d) for d in depths]
        self.num_levels = len(self.depths) + 1
        if len(level_layers) != self.num_levels or len(dropouts) != self.num_levels:
            raise ValueError(f"{self.num_levels} levels need one layer list and one dropout each")
        if len(beam) != self.num_levels - 1:
            raise ValueError(f"{self.num_levels} levels need {self.num_levels - 1} beam widths, got {beam}")
        if predict_beam and len(predict_beam) != len(beam):
            raise ValueError(f"predict_beam {predict_beam}: expected {len(beam)} widths, as beam")
        if 2 ** self.depths[-1] > self.num_labels:
            raise ValueError(f"tree depth {self.depths[-1]}: 2**depth clusters exceed the {num_labels} labels")
        self.beam, self.score_mode = [int(b) for b in beam], score
        self.predict_beam = [int(b) for b in predict_beam] if predict_beam else list(self.beam)
        self.hidden, self.encoder = int(hidden), encoder
        pos = {layer: i for i, layer in enumerate(used_layers)}
        self.level_cols = [
            torch.cat([torch.arange(pos[x] * hidden, (pos[x] + 1) * hidden) for x in layers])
            for layers in level_layers
        ]
        self.combine = nn.ModuleList(
            nn.Linear(len(layers) * hidden, hidden) if len(layers) > 1 else nn.Identity()
            for layers in level_layers
        )
        self.bag = BagPart(vocab_size, bag_dim) if vocab_size and bag_dim else None
        self.drops = nn.ModuleList(nn.Dropout(p) for p in dropouts)
        sizes = [2**d for d in self.depths] + [self.num_labels]
        widths = [hidden] * (self.num_levels - 1) + [hidden + (bag_dim if self.bag is not None else 0)]
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (n, d) in enumerate(zip(sizes, widths)):
            last = i == self.num_levels - 1
            bound = math.sqrt(6.0 / (n + d))  # xavier-uniform, as upstream
            w = (torch.rand(n + last, d, generator=gen) * 2 - 1) * bound
            if last:
                w[n] = 0.0  # the padding label's row stays zero: its logit is exactly 0
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(n + last)))
        finest = 2 ** self.depths[-1]
        if codes is None:  # a placeholder of the saved shapes (a balanced tree's largest leaf)
            codes = np.zeros(self.num_labels, dtype=np.int64)
            table = np.full((finest, -(-self.num_labels // finest)), self.num_labels, dtype=np.int64)
        else:
            codes = np.asarray(codes, dtype=np.int64)
            if codes.shape != (self.num_labels,) or codes.min() < 0 or codes.max() >= finest:
                raise ValueError(f"label tree codes: expected {self.num_labels} codes in [0, {finest})")
            table = leaf_table(codes, finest)
        self.register_buffer("codes", torch.from_numpy(codes.copy()))
        self.register_buffer("leaf_labels", torch.from_numpy(table))

    # -- the tree --------------------------------------------------------------------------------
    def num_nodes(self, level: int) -> int:
        return 2 ** self.depths[level] if level < self.num_levels - 1 else self.num_labels

    def cluster_of(self, level: int) -> torch.Tensor:
        """``[L]``: every label's cluster at cluster level ``level``."""
        return self.codes >> (self.depths[-1] - self.depths[level])

    def expand(self, level: int, ids: torch.Tensor) -> torch.Tensor:
        """``[B, K·c]``: the level-``level+1`` children of the level-``level`` nodes ``ids [B, K]``
        (labels padded with ``L`` below the finest clusters)."""
        if level == self.num_levels - 2:
            return self.leaf_labels[ids].flatten(1)
        fan = 2 ** (self.depths[level + 1] - self.depths[level])
        return (ids.unsqueeze(-1) * fan + torch.arange(fan, device=ids.device)).flatten(1)

    # -- features and scores ---------------------------------------------------------------------
    def level_features(self, inputs: dict) -> list[torch.Tensor]:
        states = self.encoder(inputs["tokens"]) if self.encoder is not None else inputs["dense"]
        states = states.float()
        feats = []
        for i in range(self.num_levels):
            h = self.combine[i](states[:, self.level_cols[i].to(states.device)])
            if i == self.num_levels - 1 and self.bag is not None:
                h = torch.cat([h, self.bag(inputs["bag"])], dim=1)
            feats.append(self.drops[i](h))
        return feats

    def scores(self, level: int, feats: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """Logits ``[B, K]`` of nodes ``ids [B, K]`` (``None``: every node of the level)."""
        w, b = self.weights[level], self.biases[level]
        if ids is None:
            n = self.num_nodes(level)
            return feats @ w[:n].t() + b[:n]
        # Rows of a batch share most of their beam: one matmul against the distinct candidates
        # beats gathering a [B, K, d] copy of the rows (memory-bound, forward and backward) as
        # long as there are not many more distinct candidates than one row's K.
        uniq, inverse = torch.unique(ids, return_inverse=True)
        if uniq.numel() <= UNIQUE_FACTOR * ids.shape[1]:
            return (feats @ w[uniq].t() + b[uniq]).gather(1, inverse)
        return torch.einsum("bkd,bd->bk", w[ids], feats) + b[ids]

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def walk(self, inputs: dict) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The inference beam: ``(kept, ids, score)``: per cluster level the node ids kept
        ``[B, predict_beam[i]]``, then the final label candidates and their scores (padding id
        ``L``, not yet masked)."""
        feats = self.level_features(inputs)
        logp = nn.functional.logsigmoid(self.scores(0, feats[0], None).float())
        ids = torch.arange(logp.shape[1], device=logp.device).expand_as(logp)
        parent = torch.zeros_like(logp)
        kept_per_level = []
        for level in range(1, self.num_levels):
            top = logp.topk(min(self.predict_beam[level - 1], logp.shape[1]), dim=1)
            kept = ids.gather(1, top.indices)
            kept_per_level.append(kept)
            ids = self.expand(level - 1, kept)
            parent = top.values.repeat_interleave(ids.shape[1] // kept.shape[1], dim=1)
            logp = nn.functional.logsigmoid(self.scores(level, feats[level], ids).float())
        score = logp + parent if self.score_mode == "weighted" else logp
        return kept_per_level, ids, score

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        _, ids, score = self.walk(inputs)
        pad = ids >= self.num_labels
        return ids.masked_fill(pad, -1), score.masked_fill(pad, float("-inf"))
