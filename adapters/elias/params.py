"""Typed settings of the ELIAS backbone (``--bp KEY=VALUE``; ``--bp preset=paper`` for Table 17).

Defaults are scaled to what this CPU trains (frozen MiniLM ⊕ TF-IDF bag features, small beams and
shortlists); ``preset=paper`` gives the LEVER paper's ELIAS settings (its Table 17,
LF-AmazonTitles-131K row; DistilBERT) with the upstream code's remaining defaults (elias.md §6).
Explicit keys always win over the preset's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lever.utils.params import Params, ParamsError
from lever_adapters.renee.params import EncoderParams

PRESETS = ("cpu", "paper")
ADJ_INITS = ("uniform", "members")  # stage-2 start values (see train._members_first)


@dataclasses.dataclass
class EliasParams(Params):
    """ELIAS settings (``TrainParams.backbone_params``); epochs, batch size, warm-up, soft labels,
    λ and the seed are the shared loop's.

    Index: ``num_clusters`` C (0: ``2^⌈log2(L / max_leaf)⌉``), ``alpha`` (ŝ_c = min(1,
    α·softmax)), ``kappa`` labels kept per cluster row of the stage-2 adjacency, ``beta`` (ŝ_cl =
    min(1, β·softmax over the row)), ``adj_init`` the stage-2 start values (``members``: each
    cluster's stage-1 members saturated at 1 and the added labels low, so stage 2 starts from the
    stage-1 model; ``uniform``: upstream's U[0, 1) logits), ``approx_beam`` clusters per training row when the adjacency
    pattern is built (Yᵀ·M). Search: ``beam`` clusters at prediction, ``beam + train_beam_extra``
    in training (never fewer than the row's positive clusters), ``shortlist`` labels K scored
    by the label classifier. Loss: ``loss_lambda`` (weight of the shortlist recall term),
    ``cluster_weight`` (BCE of the cluster scores against the projected targets; 0 = upstream).
    Stages: ``warmup_epochs`` on the first k-means index, then re-clustered on
    [learned embedding ⊕ features] for the rest of ``stage1_epochs``; stage 2 (learnable
    adjacency) takes the remaining epochs. ``index_teacher_weight`` μ: the index is built from
    Y + μ·T (the ``lever_label_index`` hook) when soft labels are given.
    """

    preset: str = "cpu"
    encoder: EncoderParams = dataclasses.field(default_factory=EncoderParams)
    max_leaf: int = 16
    num_clusters: int = 0
    alpha: float = 10.0
    beta: float = 24.0  # > the ≤ max_leaf stage-1 members a cluster keeps saturated (adj_init)
    adj_init: str = "members"
    kappa: int = 64  # 4·max_leaf: bench/results/elias_foldoc_stage2.md
    beam: int = 10
    train_beam_extra: int = 5
    shortlist: int = 300
    approx_beam: int = 20
    loss_lambda: float = 0.05
    cluster_weight: float = 1.0
    warmup_epochs: int = 1
    stage1_epochs: int = 3
    index_teacher_weight: float = 0.5
    kmeans_iters: int = 10
    lr_enc: float = 5e-3  # encoder / bag / projection ("tf" group upstream)
    lr_clusters: float = 5e-3  # W_C ("other" group upstream)
    lr_labels: float = 5e-3  # W_L ("wl" group upstream)
    lr_adjacency: float = 5e-2  # the adjacency values (in the "wl" group upstream); one
    # stage-2 epoch on CPU is ~130 steps, so the edges need a larger step than the weights
    weight_decay: float = 0.01  # all but biases and LayerNorms (upstream)

    def validate(self) -> EliasParams:
        def bad(name: str, expected: str) -> ParamsError:
            return ParamsError(f"EliasParams.{name}={getattr(self, name)!r}: expected {expected}")

        if self.preset not in PRESETS:
            raise bad("preset", f"one of {PRESETS}")
        if self.adj_init not in ADJ_INITS:
            raise bad("adj_init", f"one of {ADJ_INITS}")
        for name in ("max_leaf", "kappa", "beam", "shortlist", "approx_beam", "kmeans_iters"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "an integer >= 1")
        for name in ("num_clusters", "train_beam_extra", "warmup_epochs", "stage1_epochs"):
            if int(getattr(self, name)) < 0:
                raise bad(name, "an integer >= 0")
        if self.num_clusters == 1 or (self.num_clusters & (self.num_clusters - 1)):
            raise bad("num_clusters", "0 (derived from max_leaf) or a power of two >= 2")
        if self.warmup_epochs > self.stage1_epochs:
            raise bad("warmup_epochs", f"at most stage1_epochs={self.stage1_epochs}")
        for name in ("alpha", "beta"):
            if float(getattr(self, name)) <= 0:
                raise bad(name, "a number > 0")
        if self.beta >= self.kappa:  # β·softmax over κ slots would be ≥ 1 everywhere
            raise bad("beta", f"less than kappa={self.kappa}, else every edge saturates at 1 and the "
                      "adjacency cannot learn")
        for name in ("loss_lambda", "cluster_weight", "index_teacher_weight", "weight_decay"):
            if float(getattr(self, name)) < 0:
                raise bad(name, "a number >= 0")
        return self

    def clusters_for(self, num_labels: int) -> int:
        """C: ``num_clusters``, or ``2^⌈log2(L / max_leaf)⌉`` (at least 2, as upstream)."""
        if self.num_clusters:
            return int(self.num_clusters)
        c = 2
        while c * self.max_leaf < num_labels:
            c *= 2
        return c


# The LEVER paper's Table 17 (LF-AmazonTitles-131K row) and the upstream defaults it leaves out.
PAPER: dict[str, Any] = {
    "encoder": {"kind": "transformer", "model": "distilbert-base-uncased", "max_len": 32,
                "dropout": 0.5},
    "max_leaf": 100, "alpha": 10.0, "beta": 150.0, "adj_init": "uniform", "kappa": 1000, "beam": 20,
    "train_beam_extra": 5, "shortlist": 2000, "approx_beam": 20, "loss_lambda": 0.05,
    "cluster_weight": 0.0, "warmup_epochs": 5, "stage1_epochs": 20,
    "lr_enc": 1e-4, "lr_clusters": 2e-2, "lr_labels": 2e-2, "lr_adjacency": 2e-2,
}


def nest_keys(params: dict) -> dict:
    """Apply ``preset`` first (explicit keys win) and accept the CLI's flat ``encoder.KEY``
    forms (:func:`lever_adapters.renee.train.nest_encoder_keys`)."""
    from lever_adapters.renee.train import nest_encoder_keys

    given = nest_encoder_keys(params)
    preset = given.get("preset", "cpu")
    if preset not in PRESETS:
        raise ParamsError(f"backbone_params (elias).preset={preset!r}: expected one of {PRESETS}")
    base: dict[str, Any] = dict(PAPER) if preset == "paper" else {}
    base["encoder"] = {**base.get("encoder", {}), **given.pop("encoder", {})}
    base.update(given)
    if not base["encoder"]:
        base.pop("encoder")
    return base
