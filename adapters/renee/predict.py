"""Renée prediction: exact one-vs-all scores over all labels, top-k taken label block by block.

The encoder runs once per batch of rows; the classifier is applied to one block of label rows at a
time, so memory stays at ``batch × label_block`` scores whatever the number of labels. Filtered
(reciprocal) pairs are excluded before the top-k, so the next-best label takes their place. Scores
are the logits (the shared ``lever.train`` convention: probabilities would tie at 1.0 in float32). ``lever predict --run RUN`` and the loop's evaluation call this through
``ReneeBackbone.predict_topk``; the sparse ``.npz`` is written by ``lever.train.predict``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from lever.train.backbone import blockwise_topk
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
