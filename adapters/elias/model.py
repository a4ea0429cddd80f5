"""ELIAS's model (Gupta et al., NeurIPS 2022): encoder → cluster classifier → row-sparse label↔cluster
adjacency → shortlist → per-label classifier; the label score is a product of probabilities,

    ŝ_c = min(1, α·softmax_c(W_C·φ(x)))                  cluster score
    ŝ_cl = 1 (stage 1)  or  min(1, β·softmax_{row c}(a_c)) (stage 2, learnable a)
    ŝ_l = max over the searched clusters of ŝ_c·ŝ_cl      shortlist score
    p_l = ŝ_l · σ(w_l·φ(x) + b_l)                          final score

All scores are kept as logarithms (log ŝ = min(0, log α + log-softmax)), so products are sums and
nothing underflows. The adjacency is stored as padded rows: ``adj_ids [C, M]`` (label ids, padded
with L at the end of each row) and ``adj_logits [C, M]`` (the learnable a); ``learned`` says which
stage's edge scores apply, ``parent [L]`` is each label's best cluster. All of it lives in the
state dict, so a saved model predicts alone and a checkpoint resumes its index.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lever_adapters.renee.model import EmbeddingHead


def logit_from_log(logp: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``logit(p)`` from ``log p`` (p kept ≤ 1 − eps), so BCE-with-logits on it is BCE on p."""
    logp = logp.clamp(max=math.log1p(-eps))
    return logp - torch.log(-torch.expm1(logp))


def dedup_best(ids: torch.Tensor, logs: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, keep each label id once with its best score (a label reachable through several
    clusters keeps its best path); dropped duplicates and padding become ``pad`` / −inf."""
    order = logs.argsort(dim=1, descending=True, stable=True)
    by_id = ids.gather(1, order).argsort(dim=1, stable=True)
    perm = order.gather(1, by_id)
    ids_s, logs_s = ids.gather(1, perm), logs.gather(1, perm)
    dup = torch.zeros_like(ids_s, dtype=torch.bool)
    dup[:, 1:] = ids_s[:, 1:] == ids_s[:, :-1]
    keep = ~dup & (ids_s < pad)
    return torch.where(keep, ids_s, pad), torch.where(keep, logs_s, float("-inf"))


class EliasModule(nn.Module):
    """The whole trainable ELIAS model; ``forward(inputs)`` is its prediction (see :meth:`search`)."""

    def __init__(self, head: EmbeddingHead, num_labels: int, num_clusters: int, width: int,
                 alpha: float, beta: float, beam: int, shortlist: int):
        super().__init__()
        self.head = head
        self.num_labels, self.num_clusters = int(num_labels), int(num_clusters)
        self.alpha, self.beta, self.beam, self.shortlist = float(alpha), float(beta), int(beam), int(shortlist)
        d = head.out_dim
        self.clusters = nn.Linear(d, self.num_clusters)
        self.label_weight = nn.Parameter(torch.empty(self.num_labels, d))
        self.label_bias = nn.Parameter(torch.empty(self.num_labels))
        self.adj_logits = nn.Parameter(torch.zeros(self.num_clusters, int(width)))
        self.register_buffer("adj_ids", torch.full((self.num_clusters, int(width)), self.num_labels))
        self.register_buffer("parent", torch.zeros(self.num_labels, dtype=torch.long))
        self.register_buffer("learned", torch.zeros((), dtype=torch.bool))
        nn.init.kaiming_uniform_(self.label_weight, a=math.sqrt(5))  # as nn.Linear, upstream
        nn.init.uniform_(self.label_bias, 0.0, 1.0)  # upstream: biases U[0, 1)
        labels = torch.arange(self.num_labels)
        self.set_partition(labels % self.num_clusters)  # a placeholder index until training builds one

    # -- the index ---------------------------------------------------------------------------------
    @torch.no_grad()
    def set_partition(self, assign: torch.Tensor) -> None:
        """Stage 1: every label in exactly one cluster (``assign [L]``), binary edges."""
        assign = assign.to(self.adj_ids.device, torch.long)
        order = torch.argsort(assign, stable=True)
        counts = torch.bincount(assign, minlength=self.num_clusters)
        if int(counts.max()) > self.adj_ids.shape[1]:
            raise ValueError(
                f"a cluster holds {int(counts.max())} labels, more than the adjacency's "
                f"{self.adj_ids.shape[1]} slots per cluster; raise kappa or the number of clusters"
            )
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(self.num_labels, device=assign.device) - starts[assign[order]]
        self.adj_ids.fill_(self.num_labels)
        self.adj_ids[assign[order], slot] = order
        self.adj_logits.zero_()
        self.learned.fill_(False)
        self.parent.copy_(assign)

    @torch.no_grad()
    def set_adjacency(self, ids: torch.Tensor, logits: torch.Tensor) -> None:
        """Stage 2: a learnable adjacency with the given pattern ``ids [C, M]`` (padded with L)."""
        self.adj_ids.copy_(ids)
        self.adj_logits.copy_(logits)
        self.learned.fill_(True)
        self.refresh_parent()

    @torch.no_grad()
    def refresh_parent(self) -> None:
        """``parent[l]``: the cluster whose edge to ``l`` scores highest (ties: the lower cluster);
        labels without an edge keep their previous parent."""
        log_e = self.edge_logs().flatten()
        ids = self.adj_ids.flatten()
        cluster = torch.arange(self.num_clusters, device=ids.device).repeat_interleave(self.adj_ids.shape[1])
        order = log_e.argsort(descending=True, stable=True)
        by_id = ids[order].argsort(stable=True)
        perm = order[by_id]
        ids_s = ids[perm]
        first = torch.ones_like(ids_s, dtype=torch.bool)
        first[1:] = ids_s[1:] != ids_s[:-1]
        first &= ids_s < self.num_labels
        self.parent[ids_s[first]] = cluster[perm][first]

    def edge_logs(self) -> torch.Tensor:
        """log ŝ_cl ``[C, M]``: 0 on stage-1 edges, min(0, log β + log-softmax over the row's real
        edges) in stage 2; −inf on padding."""
        valid = self.adj_ids < self.num_labels
        if not bool(self.learned):
            return torch.where(valid, 0.0, float("-inf"))
        masked = self.adj_logits.float().masked_fill(~valid, float("-inf"))
        logs = (torch.log_softmax(masked, dim=1) + math.log(self.beta)).clamp(max=0.0)
        return torch.where(valid, logs, float("-inf"))

    # -- the forward pieces ------------------------------------------------------------------------
    def cluster_logs(self, emb: torch.Tensor) -> torch.Tensor:
        """log ŝ_c ``[B, C]`` = min(0, log α + log-softmax(W_C·φ(x)))."""
        return (torch.log_softmax(self.clusters(emb).float(), dim=1) + math.log(self.alpha)).clamp(max=0.0)

    def expand(self, clusters: torch.Tensor, cluster_logs: torch.Tensor, edge_logs: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates of the chosen ``clusters [B, W]`` (−inf score: masked): label ids and log ŝ_l
        ``[B, W·M]``, each label once with its best path."""
        width = int((self.adj_ids < self.num_labels).sum(1).max())  # live slots per row
        ids = self.adj_ids[:, :width][clusters]  # [B, W, M]
        logs = cluster_logs.unsqueeze(2) + edge_logs[:, :width][clusters]
        ids = torch.where(torch.isfinite(logs), ids, self.num_labels)
        return dedup_best(ids.flatten(1), logs.flatten(1), self.num_labels)

    def label_logits(self, emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """z = w_l·φ(x) + b_l for ``ids [B, K]`` (padding scores 0)."""
        safe = ids.clamp(max=self.num_labels - 1)
        labels, where = torch.unique(safe, return_inverse=True)
        if labels.numel() <= 32 * ids.shape[1]:
            # Rows of a batch share most candidates (their clusters overlap): one GEMM against the
            # distinct labels beats gathering a [B, K, d] copy of the weights (memory bound).
            z = (emb.float() @ self.label_weight[labels].t()).gather(1, where)
        else:
            w = F.embedding(safe, self.label_weight)  # [B, K, d]
            z = torch.bmm(w, emb.float().unsqueeze(2)).squeeze(2)
        z = z + self.label_bias[safe]
        return torch.where(ids < self.num_labels, z, 0.0)

    # -- prediction ------------------------------------------------------------------------------
    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p [B, K], label ids [B, K])``: the ``shortlist`` best labels by p through the beam."""
        return self.search(inputs, self.shortlist)

    @torch.no_grad()
    def search(self, inputs: dict, k: int, exclude: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact top-``k`` labels by ``p_l`` among the labels of the ``beam`` best clusters,
        best first (ties: smaller id); ``exclude(ids) -> bool mask`` names pairs never returned (the
        filter, applied before any cut); padding is id −1, score −inf.

        Candidates are scored in chunks of ``shortlist`` by descending ŝ_l; since p_l ≤ ŝ_l, once a
        chunk's best ŝ_l is below every row's k-th best p found so far no later label can enter,
        so the result equals scoring every candidate while memory stays at one chunk."""
        emb = self.head(inputs).float()
        log_c = self.cluster_logs(emb)
        beam = min(self.beam, self.num_clusters)
        top_c = log_c.argsort(dim=1, descending=True, stable=True)[:, :beam]  # ties: lower cluster id
        ids, logs = self.expand(top_c, log_c.gather(1, top_c), self.edge_logs())
        if exclude is not None:
            logs = torch.where(exclude(ids), float("-inf"), logs)
            ids = torch.where(torch.isfinite(logs), ids, self.num_labels)
        order = logs.argsort(dim=1, descending=True, stable=True)
        ids, logs = ids.gather(1, order), logs.gather(1, order)
        rows = emb.shape[0]
        best_p = torch.full((rows, 0), float("-inf"), device=emb.device)
        best_i = torch.full((rows, 0), -1, dtype=torch.long, device=emb.device)
        chunk = max(self.shortlist, k)
        for lo in range(0, ids.shape[1], chunk):
            if best_p.shape[1] >= k and bool((logs[:, lo] < best_p[:, k - 1].log()).all()):
                break  # p ≤ ŝ: nothing further down can beat any row's k-th best
            c_ids, c_logs = ids[:, lo:lo + chunk], logs[:, lo:lo + chunk]
            p = (c_logs + F.logsigmoid(self.label_logits(emb, c_ids))).exp()
            p = torch.where(c_ids < self.num_labels, p, float("-inf"))
            best_p = torch.cat([best_p, p], 1)
            best_i = torch.cat([best_i, torch.where(c_ids < self.num_labels, c_ids, -1)], 1)
            keep = min(k, best_p.shape[1])
            # ties broken by the smaller label id: sort by id, then stably by score
            by_id = torch.where(best_i < 0, self.num_labels, best_i).argsort(dim=1, stable=True)
            best_p, best_i = best_p.gather(1, by_id), best_i.gather(1, by_id)
            top = best_p.argsort(dim=1, descending=True, stable=True)[:, :keep]
            best_p, best_i = best_p.gather(1, top), best_i.gather(1, top)
        if best_p.shape[1] < k:
            pad = k - best_p.shape[1]
            best_p = torch.cat([best_p, best_p.new_full((rows, pad), float("-inf"))], 1)
            best_i = torch.cat([best_i, best_i.new_full((rows, pad), -1)], 1)
        best_i = torch.where(torch.isfinite(best_p), best_i, -1)
        return best_p, best_i
