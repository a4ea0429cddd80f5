"""ELIAS inside lever's shared loop (``lever train --backbone elias``) and ``lever.wrap``.

One training step (:meth:`EliasBackbone.training_levels`):

1. encoder (Renée's :class:`~lever_adapters.renee.model.EmbeddingHead` and feature code) → φ(x);
2. cluster scores ŝ_c over all C clusters: the **cluster level** (dense; targets are the label
   targets projected through each label's parent cluster by ``lever_level_targets``: a cluster's
   target is the max of its labels' targets);
3. the training beam: clusters kept by the ``lever_shortlist`` keys of the cluster level (default:
   positives' clusters, then the teacher's, then the rest by ŝ_c), ``beam + train_beam_extra`` per
   row but never fewer than the row's target clusters, so every positive's cluster is searched;
4. their labels with path scores ŝ_l (each label once, best path): the **recall level**
   (``−t·log ŝ_l`` on the target labels among them, ELIAS's shortlist loss, weight λ·K/P_row);
5. the top-K candidates by the ``lever_shortlist`` keys of the label level (positives first, then
   teacher labels, then ŝ_l), at least every target label found in step 4;
6. p_l = ŝ_l·σ(z_l) on them: the **shortlist level**, BCE on p (a Level holds logit(p)).

Every level's width is decided row by row, so a row's loss never depends on the other rows of its
micro-batch: 2 processes train exactly like one with the same global batch.

Stages (``Trainer`` stages, each with fresh AdamW optimizers): ``warmup`` on a k-means index of the
input features, ``clusters`` on a re-clustered index of [learned embedding ⊕ features], both with
fixed binary edges; ``adjacency`` with the learnable row-sparse adjacency whose pattern comes
from the stage-1 model's top-b clusters of every training row (Yᵀ·M).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from lever.loss import Level, SparseTargets
from lever.train.backbone import Backbone, BuildContext, ParamGroup, Stage, to_device
from lever.utils.balanced_tree import balanced_leaves, normalise_rows
from lever_adapters.elias.index import adjacency_pattern, label_centroids
from lever_adapters.elias.model import EliasModule, logit_from_log
from lever_adapters.elias.params import EliasParams, nest_keys
from lever_adapters.renee.train import SplitFeatures, build_features, build_head

INDEX_BATCH = 1024  # training rows embedded at once while an index is built


class EliasBackbone(Backbone):
    name = "elias"
    params_class = EliasParams
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 6, "batch_size": 128, "warmup_steps": 20}

    def __init__(self, params: EliasParams | dict | None = None):
        super().__init__(nest_keys(params) if isinstance(params, dict) else params)
        self.params.validate()
        self.features: SplitFeatures | None = None
        self.rows = None  # lever.train.rows.TrainRows (lever train only)
        self.device = torch.device("cpu")
        self.seed = 0
        self.stage: str | None = None
        self.parent_epoch: int | None = None
        # Shares of target entries that reached the scored sets (lever train; see docs/elias.md).
        self.reach = {"positives": [0, 0], "teacher": [0, 0]}

    @classmethod
    def accepts(cls, classifier: Any) -> bool:
        return isinstance(classifier, EliasModule)

    # -- building ---------------------------------------------------------------------------------
    def build(self, ctx: BuildContext) -> EliasModule:
        p: EliasParams = self.params
        self.rows, self.device = ctx.rows, ctx.device
        self.seed = int(ctx.train_params.run.seed)
        label_rows = ctx.rows is not None and ctx.rows.num_rows > ctx.rows.num_docs
        self.features = build_features(
            ctx.dataset, p.encoder, label_rows, Path(ctx.cache_dir), train=ctx.rows is not None
        )
        head = build_head(p.encoder, self.features)
        num_labels = ctx.dataset.num_labels
        clusters = p.clusters_for(num_labels)
        if clusters > num_labels:  # the balanced tree has no empty leaves
            raise ValueError(
                f"backbone_params (elias).num_clusters: {clusters} clusters for {num_labels} labels; "
                "expected at most one cluster per label (lower num_clusters)"
            )
        per_cluster = -(-num_labels // clusters)
        if p.kappa < per_cluster:
            raise ValueError(
                f"backbone_params (elias).kappa={p.kappa}: fewer adjacency slots than the "
                f"{per_cluster} labels of a stage-1 cluster ({num_labels} labels, {clusters} clusters); "
                "raise kappa or num_clusters"
            )
        return EliasModule(head, num_labels, clusters, p.kappa, p.alpha, p.beta, p.beam, p.shortlist)

    def _groups(self, module: EliasModule, adjacency: bool) -> list[ParamGroup]:
        p: EliasParams = self.params
        decay, no_decay = [], []
        for name, param in module.head.named_parameters():
            if param.requires_grad:
                (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
        groups = [
            ParamGroup("clusters", [module.clusters.weight], "adamw", p.lr_clusters, p.weight_decay),
            ParamGroup("clusters_bias", [module.clusters.bias], "adamw", p.lr_clusters, 0.0),
            ParamGroup("labels", [module.label_weight], "adamw", p.lr_labels, p.weight_decay),
            ParamGroup("labels_bias", [module.label_bias], "adamw", p.lr_labels, 0.0),
        ]
        if decay:
            groups.append(ParamGroup("encoder", decay, "adamw", p.lr_enc, p.weight_decay))
        if no_decay:
            groups.append(ParamGroup("encoder_no_decay", no_decay, "adamw", p.lr_enc, 0.0))
        if adjacency:
            groups.append(ParamGroup("adjacency", [module.adj_logits], "adamw", p.lr_adjacency, p.weight_decay))
        return groups

    def param_groups(self, module: EliasModule) -> list[ParamGroup]:
        return self._groups(module, adjacency=True)

    def stages(self, module: EliasModule) -> list[Stage]:
        p: EliasParams = self.params
        out = []
        if p.warmup_epochs:
            out.append(Stage("warmup", self._groups(module, False), epochs=p.warmup_epochs))
        if p.stage1_epochs - p.warmup_epochs:
            out.append(Stage("clusters", self._groups(module, False), epochs=p.stage1_epochs - p.warmup_epochs))
        out.append(Stage("adjacency", self._groups(module, True), epochs=None))
        return out

    def batch_inputs(self, row_ids: np.ndarray) -> dict:
        return self.features.train(row_ids)

    def test_inputs(self, row_ids: np.ndarray) -> dict:
        return self.features.test(row_ids)

    # -- stages: the index ------------------------------------------------------------------------
    def on_stage_start(self, module: EliasModule, stage: Stage) -> None:
        self.stage = stage.name
        if stage.name == "warmup" or (stage.name == "clusters" and not self.params.warmup_epochs):
            module.set_partition(torch.from_numpy(self._kmeans(module, with_embedding=False)))
        elif stage.name == "clusters":  # re-cluster on the warmed-up embedding, fresh W_C
            module.set_partition(torch.from_numpy(self._kmeans(module, with_embedding=True)))
            gen = torch.Generator().manual_seed(self.seed * 7919 + 17)
            with torch.no_grad():
                bound = 1.0 / math.sqrt(module.clusters.in_features)
                module.clusters.weight.copy_(torch.rand(module.clusters.weight.shape, generator=gen) * 2 * bound - bound)
                module.clusters.bias.copy_(torch.rand(module.clusters.bias.shape, generator=gen) * 2 * bound - bound)
        elif stage.name == "adjacency":
            self._build_adjacency(module)
        self.parent_epoch = None

    def on_epoch_start(self, module: EliasModule, epoch: int) -> None:
        # Parents follow the learned adjacency once per epoch (upstream); not again on a resume
        # inside the epoch, so a resumed run equals an uninterrupted one.
        if bool(module.learned) and self.parent_epoch != epoch:
            module.refresh_parent()
        self.parent_epoch = epoch

    def shortlist_shares(self) -> list[dict[str, Any]]:
        """The share of positive / teacher-only target entries that reached the scored shortlist
        (this process's rows, every epoch so far); CascadeXML's format with one level."""
        (pk, pa), (tk, ta) = self.reach["positives"], self.reach["teacher"]
        return [{"level": "shortlist", "positives": pa, "positives_reached": pk / pa if pa else None,
                 "teacher": ta, "teacher_reached": tk / ta if ta else None}]

    def extra_state(self, module: EliasModule) -> dict[str, Any]:
        return {"stage": self.stage, "parent_epoch": self.parent_epoch,
                "reach": {k: list(v) for k, v in self.reach.items()}}

    def load_extra_state(self, module: EliasModule, state: dict[str, Any]) -> None:
        self.stage, self.parent_epoch = state.get("stage"), state.get("parent_epoch")
        self.reach = {k: list(v) for k, v in state.get("reach", self.reach).items()}

    def _index_matrix(self) -> sp.csr_matrix:
        """Y of the training rows, or Y + μ·T from the ``lever_label_index`` hook."""
        rows = self.rows
        if rows is None:
            raise RuntimeError("elias: an index is built only while training (lever train)")
        y = self.hooks.lever_label_index(y=rows.Y, soft=rows.soft, weight=self.params.index_teacher_weight)
        return sp.csr_matrix(y, dtype=np.float32)

    def _input_parts(self) -> list:
        """The fixed input features of every training row (frozen embedding, TF-IDF bag)."""
        feats = self.features.train
        parts = []
        if feats.dense is not None:
            parts.append(normalise_rows(feats.dense.take(np.arange(feats.num_rows))))
        if feats.bag is not None:
            parts.append(normalise_rows(feats.bag))
        if not parts:  # a transformer alone: cluster on a TF-IDF of the texts
            from lever_adapters.renee.features import TfidfFeaturizer

            parts.append(TfidfFeaturizer().fit(feats.texts).transform(feats.texts))
        return parts

    @torch.no_grad()
    def _all_rows(self, module: EliasModule, fn) -> list:
        """``fn(embedding)`` over every training row in eval mode (no dropout), batch by batch."""
        was = module.training
        module.eval()
        out = []
        for lo in range(0, self.rows.num_rows, INDEX_BATCH):
            ids = np.arange(lo, min(self.rows.num_rows, lo + INDEX_BATCH))
            out.append(fn(module.head(to_device(self.features.train(ids), self.device)).float()))
        module.train(was)
        return out

    def _kmeans(self, module: EliasModule, with_embedding: bool) -> np.ndarray:
        parts = self._input_parts()
        if with_embedding:
            emb = np.concatenate([e.cpu().numpy() for e in self._all_rows(module, lambda e: e)])
            parts = [normalise_rows(emb)] + parts
        cents = label_centroids(self._index_matrix(), parts)
        return balanced_leaves(cents, module.num_clusters, self.seed, max_iter=self.params.kmeans_iters)

    def _build_adjacency(self, module: EliasModule) -> None:
        p: EliasParams = self.params
        b = min(p.approx_beam, module.num_clusters)

        def top_clusters(emb):
            top = module.cluster_logs(emb).topk(b, dim=1)
            return top.indices.cpu().numpy(), top.values.exp().cpu().numpy()

        found = self._all_rows(module, top_clusters)
        idx = np.concatenate([f[0] for f in found])
        val = np.concatenate([f[1] for f in found])
        n = idx.shape[0]
        m = sp.csr_matrix((val.ravel(), idx.ravel(), np.arange(0, n * b + 1, b)), shape=(n, module.num_clusters))
        pattern = adjacency_pattern(
            self._index_matrix(), m, module.parent.cpu().numpy(), module.num_clusters, module.adj_ids.shape[1]
        )
        gen = torch.Generator().manual_seed(self.seed * 7919 + 29)
        logits = torch.rand(pattern.shape, generator=gen)  # upstream: U[0, 1)
        if p.adj_init == "members":
            logits = _members_first(logits, pattern, module.parent.cpu().numpy(), module.num_labels, p.beta)
        module.set_adjacency(torch.from_numpy(pattern).to(module.adj_ids.device), logits.to(module.adj_logits.device))

    # -- the training step ------------------------------------------------------------------------
    def cluster_map(self, module: EliasModule, level: int) -> tuple[torch.Tensor, int]:
        if level != 0:
            raise ValueError(f"elias has one cluster level (0), not {level}")
        return module.parent, module.num_clusters

    def training_levels(self, module: EliasModule, inputs: Any, targets: SparseTargets, hooks) -> list[Level]:
        p: EliasParams = self.params
        emb = module.head(inputs).float()
        rows, num_labels, dev = emb.shape[0], module.num_labels, emb.device
        targets = targets.to(dev)
        log_c = module.cluster_logs(emb)
        cluster_level = Level(logit_from_log(log_c), None, space=0, weight=p.cluster_weight)
        t_c = self.level_targets(module, cluster_level, targets, hooks)

        # the training beam: every target cluster, at least beam + extra
        all_c = torch.arange(module.num_clusters, device=dev).expand(rows, -1)
        keys = hooks.lever_shortlist(cand_ids=all_c, cand_scores=log_c.exp().detach(), targets=t_c, level=0)
        per_row = torch.bincount(t_c.rows, minlength=rows).clamp(min=min(p.beam + p.train_beam_extra, module.num_clusters))
        chosen = _best(keys, int(per_row.max()))
        kept = torch.arange(chosen.shape[1], device=dev) < per_row[:, None]
        logs_sel = torch.where(kept, log_c.gather(1, chosen), float("-inf"))
        cand_ids, cand_logs = module.expand(chosen, logs_sel, module.edge_logs())
        recall_level = Level(logit_from_log(cand_logs), cand_ids, loss="recall",
                             weight=self._recall_weight(targets, rows, dev))

        # the top-K candidates: every target label found, at least K
        valid = cand_ids < num_labels
        probs = torch.where(valid, cand_logs.exp(), 0.0).detach()
        keys = hooks.lever_shortlist(cand_ids=cand_ids, cand_scores=probs, targets=targets, level=None)
        found = (targets.lookup(cand_ids) > 0) & valid
        per_row = found.sum(1).clamp(min=p.shortlist).clamp(max=cand_ids.shape[1])
        top = _best(keys, int(per_row.max()))
        ids = cand_ids.gather(1, top)
        ids = torch.where(torch.arange(top.shape[1], device=dev) < per_row[:, None], ids, num_labels)
        log_s = torch.where(ids < num_labels, cand_logs.gather(1, top), float("-inf"))
        log_p = log_s + torch.nn.functional.logsigmoid(module.label_logits(emb, ids))
        label_level = Level(logit_from_log(log_p), ids)
        if module.training:
            self._count_reach(targets, ids)
        levels = [cluster_level] if p.cluster_weight > 0 else []
        levels.append(label_level)
        if p.loss_lambda > 0:
            levels.append(recall_level)
        return levels

    def _recall_weight(self, targets: SparseTargets, rows: int, dev) -> torch.Tensor:
        """λ·K/P_row (summed loss) or λ/P_row (mean): upstream's L_c + λ·L_s ratio, with P the row's
        positives (upstream: the batch's most positives)."""
        mark = targets.positive if targets.positive is not None else targets.vals > 0
        positives = torch.bincount(targets.rows[mark], minlength=rows).clamp(min=1).float()
        scale = self.params.shortlist if self.loss_params.reduction == "sum" else 1.0
        return (self.params.loss_lambda * scale / positives).unsqueeze(1).to(dev)

    @torch.no_grad()
    def _count_reach(self, targets: SparseTargets, ids: torch.Tensor) -> None:
        """How many positive / teacher-only target entries reached the scored shortlist."""
        num_labels = targets.shape[1]
        rows = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1)
        scored = (rows * num_labels + ids)[ids < num_labels]
        hit = torch.isin(targets.rows * num_labels + targets.cols, scored)
        pos = targets.positive if targets.positive is not None else torch.ones_like(hit)
        for name, mask in (("positives", pos), ("teacher", ~pos)):
            self.reach[name][0] += int((hit & mask).sum())
            self.reach[name][1] += int(mask.sum())

    # -- prediction -------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_topk(self, module: EliasModule, inputs, k, num_labels, exclude=None, label_block=65536):
        if num_labels != module.num_labels:
            raise ValueError(f"the model has {module.num_labels} labels, the data {num_labels}")
        mask = None
        if exclude is not None and sp.csr_matrix(exclude).nnz:
            ex = SparseTargets.from_csr(sp.csr_matrix(exclude, dtype=np.float32))

            def mask(ids):
                return ex.lookup(ids.cpu()).to(ids.device) > 0

        p, ids = module.search(inputs, k, mask)
        return ids.cpu().numpy(), p.float().cpu().numpy()


def _members_first(logits: torch.Tensor, pattern: np.ndarray, parent: np.ndarray, num_labels: int,
                   beta: float, margin: float = 1.0) -> torch.Tensor:
    """Stage-2 start values that keep the stage-1 model: a cluster's n stage-1 members get the
    logit m = log(Σ_others e^u / (β − n)) + margin, so β·softmax ≥ 1 saturates them (ŝ_cl = 1, as
    in stage 1) while the added labels start low (≈ β·e^u / Z), below the members they join.
    (Upstream's 2022 code also started from the approximate A; its later U[0, 1) start gives every
    edge ≈ β/κ, which on small CPU clusters ranks newcomers with the members and loses stage 1.)"""
    ids = torch.from_numpy(pattern)
    valid = ids < num_labels
    cluster = torch.arange(ids.shape[0]).unsqueeze(1)
    member = valid & (torch.from_numpy(parent)[ids.clamp(max=num_labels - 1)] == cluster)
    n = member.sum(1, keepdim=True).float()
    if bool((n >= beta).any()):
        raise ValueError(f"backbone_params (elias).beta={beta}: adj_init=members needs beta above the "
                         f"{int(n.max())} stage-1 members of a cluster (raise beta and kappa, or use adj_init=uniform)")
    others = torch.where(valid & ~member, logits, float("-inf")).logsumexp(1, keepdim=True)
    m = torch.where(torch.isfinite(others), others, 0.0) - torch.log(beta - n) + margin
    return torch.where(member, m.expand_as(logits), logits)


def _best(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Positions of the ``n`` highest keys per row; ties keep their order (a row's choice never
    depends on the width the rest of the batch pads it to)."""
    return keys.argsort(dim=1, descending=True, stable=True)[:, :n]


def main(argv: list[str] | None = None) -> int:
    """``python -m lever_adapters.elias.train ARGS`` is ``lever train --backbone elias ARGS``."""
    from lever.cli import main as lever_main

    return lever_main(["train", "--backbone", "elias", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
