"""Renée prediction: exact one-vs-all scores over all labels, top-k taken label block by block.

The encoder runs once per batch of rows; the classifier is applied to one block of label rows at a
time, so memory stays at ``batch × label_block`` scores whatever the number of labels. Filtered
(reciprocal) pairs are excluded before the top-k, so the next-best label takes their place.
A label-sharded classifier (``label_shards=true`` under torchrun) predicts with
:func:`sharded_topk`: every process scores the same rows against its own labels and the
per-shard top-k lists are all-gathered and merged. Scores
are the logits (the shared ``lever.train`` convention: probabilities would tie at 1.0 in float32). ``lever predict --run RUN`` and the loop's evaluation call this through
``ReneeBackbone.predict_topk``; the sparse ``.npz`` is written by ``lever.train.predict``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from lever.metrics.ranking import blockwise_topk
from lever.metrics.ranking import topk as merge_topk
from lever_adapters.renee.model import ReneeModule


@torch.no_grad()
def renee_topk(
    module: ReneeModule,
    inputs: dict,
    k: int,
    exclude: sp.csr_matrix | None = None,
    label_block: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """``(label ids, scores)``, each ``[rows, k]``, best first; -1 / -inf pad rows with fewer than
    k admissible labels. ``module`` must hold every label (a gathered, not a sharded, classifier)."""
    clf = module.classifier
    if clf.shard_size != clf.num_labels:
        raise ValueError(
            f"classifier holds labels {clf.lo}..{clf.hi - 1} of {clf.num_labels} (one shard); predict with "
            "the gathered weights (lever_adapters.renee.train.full_state_dict)"
        )
    emb = module.head(inputs).float()
    w = clf.weight
    return blockwise_topk(
        lambda labels: emb @ w[labels].float().t(), k, clf.num_labels, exclude, label_block
    )


@torch.no_grad()
def sharded_topk(
    module: ReneeModule,
    inputs: dict,
    k: int,
    exclude: sp.csr_matrix | None,
    label_block: int,
    world_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`renee_topk` of a label-sharded classifier; every process calls it with the same rows.

    Each process takes the top-k of its labels ``[lo, hi)`` (``exclude`` is over all labels), the
    ``[rows, k]`` lists of all processes are all-gathered and merged by
    ``lever.metrics.ranking.topk`` (ties to the smaller label id), so every process returns the
    global top-k."""
    clf = module.classifier
    emb = module.head(inputs).float().contiguous()
    # The replicated encoders agree, but only rank 0's embeddings are used, so the shards score
    # exactly the same vectors.
    dist.broadcast(emb, src=0)
    rows = emb.shape[0]
    ids = np.full((rows, k), -1, dtype=np.int64)
    scores = np.full((rows, k), -np.inf, dtype=np.float32)
    if clf.shard_size > 0:
        ex = None if exclude is None else sp.csr_matrix(exclude)[:, clf.lo : clf.hi]
        w = clf.weight
        idx, sc = blockwise_topk(
            lambda labels: emb @ w[labels].float().t(), k, clf.shard_size, ex, label_block
        )
        ids[:, : idx.shape[1]] = np.where(idx >= 0, idx + clf.lo, -1)
        scores[:, : sc.shape[1]] = sc
    parts_i = [
        torch.empty((rows, k), dtype=torch.long, device=emb.device) for _ in range(world_size)
    ]
    parts_s = [
        torch.empty((rows, k), dtype=torch.float32, device=emb.device) for _ in range(world_size)
    ]
    dist.all_gather(parts_i, torch.from_numpy(ids).to(emb.device))
    dist.all_gather(parts_s, torch.from_numpy(scores).to(emb.device))
    all_i = torch.cat(parts_i, 1).cpu().numpy()
    all_s = torch.cat(parts_s, 1).cpu().numpy()
    return merge_topk((all_i, all_s), k, num_labels=clf.num_labels)
