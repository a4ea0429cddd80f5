"""CascadeXML inside lever's shared loop (``lever train --backbone cascadexml``) and under
``lever.wrap``: :class:`CascadeXMLBackbone`.

A training step (``training_levels``): the features of every level, then level 0 scores all its
clusters; for each next level the previous level's candidates are ranked by the
``lever_shortlist`` hook on that level's targets (the label targets projected by
``lever_level_targets``: a cluster is positive when any of its labels is, its soft target the max
over its labels). The default hook ranks ground-truth clusters first (upstream's teacher forcing:
its binary targets added to the scores before the top-k, so every positive is kept while the beam
holds them), then teacher clusters by their soft target (LEVER), then the rest by the model's
score; the ``beam`` best are kept and their children scored with the real logits. Every level is
returned as a :class:`lever.loss.Level`, so the contract's ``lever_loss`` (default: BCE of every
level against its blended targets, summed) trains all levels at once.

During training the backbone counts how many positive and teacher-only nodes of each level reach
that level's candidates (``shortlist_counts`` in the checkpoints' backbone state, and
``RUN/cascadexml_shortlists.json``, written by the loop).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from lever.loss import LABELS, Level, SparseTargets
from lever.metrics.ranking import topk
from lever.train.backbone import Backbone, BuildContext, ParamGroup, shortlists_file
from lever.utils.balanced_tree import balanced_tree_codes
from lever_adapters.cascadexml.features import (
    LayerStates,
    cached_layer_states,
    default_level_layers,
    encoder_depth,
)
from lever_adapters.cascadexml.label_graph import random_walk_graph, smooth_label_features
from lever_adapters.cascadexml.model import CascadeModule, auto_depths
from lever_adapters.cascadexml.params import CascadeXMLParams, resolve_params
from lever_adapters.renee.features import RowFeatures, StackedRows, TfidfFeaturizer
from lever_adapters.renee.train import _l2_rows

STATS_FILE = shortlists_file("cascadexml")


class CascadeXMLBackbone(Backbone):
    name = "cascadexml"
    params_class = CascadeXMLParams
    # Measured on this 2-core CPU with frozen MiniLM layers ⊕ TF-IDF (docs/cascadexml.md).
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 8, "batch_size": 64, "warmup_steps": 20}
    # The paper's loop (upstream README): 15 epochs, batch 64, three-phase one-cycle with one
    # warm-up epoch (warmup_steps 0 = one epoch under one_cycle).
    paper_train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 15, "batch_size": 64, "warmup_steps": 0, "schedule": "one_cycle"}

    def __init__(self, params: CascadeXMLParams | dict | None = None):
        super().__init__(params if isinstance(params, CascadeXMLParams) else resolve_params(params))
        if self.params.preset == "paper":
            self.train_defaults = self.paper_train_defaults
        self.train_rows: RowFeatures | None = None
        self.test_rows: RowFeatures | None = None
        self.counts: torch.Tensor | None = None  # [levels − 1, 4]: kept/all positives, kept/all teacher
        self._memo: tuple[Any, dict] | None = None

    # -- building ---------------------------------------------------------------------------------
    def build(self, ctx: BuildContext) -> CascadeModule:
        from lever.encoders import resolve_encoder_path

        p: CascadeXMLParams = self.params
        ds, enc = ctx.dataset, p.encoder
        depths = self.tree_depths(ds)
        levels = len(depths) + 1
        model_path = resolve_encoder_path(enc.model)
        layers, hidden = self.level_layers(model_path, levels)
        used = sorted({x for ls in layers for x in ls})
        tfidf = TfidfFeaturizer(enc.tfidf_max_features, enc.tfidf_ngram_max, enc.tfidf_min_df)
        tfidf.fit(list(ds.trn_texts))  # deterministic: prediction refits the same one
        encoder = self.row_features(ctx, model_path, used, tfidf)
        training = ctx.rows is not None
        codes = self.build_tree(ctx, tfidf, depths[-1]) if training else None  # else: from the weights
        self.counts = torch.zeros(levels - 1, 4, dtype=torch.float64)
        return CascadeModule(
            ds.num_labels, depths, layers, used, hidden,
            beam=p.per_level(p.beam, levels - 1, "beam"),
            predict_beam=p.per_level(p.predict_beam or p.beam, levels - 1, "predict_beam"),
            dropouts=p.per_level(p.dropouts, levels, "dropouts"),
            codes=codes, encoder=encoder,
            vocab_size=tfidf.vocab_size if enc.tfidf else 0, bag_dim=enc.bag_dim if enc.tfidf else 0,
            score=p.score, seed=int(ctx.train_params.run.seed),
        ).to(ctx.device)

    def tree_depths(self, ds) -> list[int]:
        """The cluster levels' depths: ``tree.depths``, or scaled to the number of labels."""
        tp = self.params.tree
        depths = list(tp.depths) or auto_depths(ds.num_labels, tp.cluster_levels, tp.branch_bits, tp.leaf_size)
        if 2 ** depths[-1] > ds.num_labels:
            raise ValueError(
                f"backbone_params.tree.depths={depths}: 2**{depths[-1]} clusters exceed the "
                f"{ds.num_labels} labels of {ds.root}"
            )
        return depths

    def level_layers(self, model_path: str, levels: int) -> tuple[list[list[int]], int]:
        """Per level, the encoder layers it reads (``encoder.layers``, negative numbers counted
        from the last layer, the last list repeating; empty: the paper's recipe scaled to the
        encoder), and the encoder's hidden size."""
        depth, hidden = encoder_depth(model_path)
        given = [list(x) for x in self.params.encoder.layers]
        layers = (
            [[x if x > 0 else depth + 1 + x for x in ls]
             for ls in self.params.per_level(given, levels, "encoder.layers")]
            if given else default_level_layers(depth, levels)
        )
        if min(min(x) for x in layers) < 1 or max(max(x) for x in layers) > depth:
            raise ValueError(
                f"backbone_params.encoder.layers={given}: layers {layers} are outside 1..{depth} "
                f"(the encoder's depth); negative numbers count from the last layer"
            )
        return layers, hidden

    def row_features(self, ctx: BuildContext, model_path: str, used: list[int], tfidf) -> LayerStates | None:
        """Set ``train_rows`` / ``test_rows`` (cached layer states or texts, and the TF-IDF bag);
        returns the encoder the module runs (``None`` when frozen: its states are cached)."""
        from lever.encoders import texts_fingerprint

        enc, ds = self.params.encoder, ctx.dataset
        training = ctx.rows is not None
        label_rows = training and ctx.rows.num_rows > ctx.rows.num_docs
        splits = {"tst": list(ds.tst_texts)}
        if training:  # documents, then (label rows) the label texts
            splits.update(trn=list(ds.trn_texts), **({"lbl": list(ds.lbl_texts)} if label_rows else {}))
        order = {"tst": ["tst"], "trn": [s for s in ("trn", "lbl") if s in splits]}
        parts: dict[str, dict] = {"tst": {}, "trn": {}}
        encoder = None
        if enc.frozen:
            key = f"{model_path}|{used}|{enc.pooling}|{enc.max_len}"
            folder = Path(ctx.cache_dir) / ("cascadexml-layers-" + hashlib.sha256(key.encode()).hexdigest()[:10])
            progress = ctx.progress and (ctx.env is None or ctx.env.is_main)
            states = {
                s: cached_layer_states(t, folder / f"{s}-{texts_fingerprint(t)[:12]}.npy", model_path, used,
                                       enc.pooling, enc.max_len, progress=progress)
                for s, t in splits.items()
            }
            for part, names in order.items():
                parts[part]["dense"] = StackedRows([states[s] for s in names]) if names else None
        else:
            encoder = LayerStates(model_path, used, enc.pooling)
            for part, names in order.items():
                parts[part].update(texts=[t for s in names for t in splits[s]],
                                   tokenizer_path=model_path, max_len=enc.max_len)
        if enc.tfidf:
            for part, names in order.items():
                parts[part]["bag"] = tfidf.transform([t for s in names for t in splits[s]]) if names else None
        self.test_rows = RowFeatures(ds.num_test, **parts["tst"])
        self.train_rows = RowFeatures(ctx.rows.num_rows, **parts["trn"]) if training else None
        return encoder

    def label_features(self, ctx: BuildContext, tfidf: TfidfFeaturizer):
        """What the tree clusters labels by (``tree.features``)."""
        tp, ds = self.params.tree, ctx.dataset
        if tp.features == "teacher":
            from lever.train.embeddings import frozen_embeddings

            return np.asarray(frozen_embeddings(ds, ctx.cache_dir, splits=("lbl",), teacher_dir=tp.teacher)["lbl"])
        own = _l2_rows(tfidf.transform(list(ds.lbl_texts)))
        if tp.features == "tfidf":
            return own
        # centroids: documents weighted by the (teacher-aware) label index, plus the label's text
        soft = ctx.rows.soft[: ds.num_train] if ctx.rows.soft is not None else None
        index = self.hooks.lever_label_index(y=ds.trn_Y.tocsr(), soft=soft, weight=tp.teacher_weight)
        docs = _l2_rows(tfidf.transform(list(ds.trn_texts)))
        return (_l2_rows(sp.csr_matrix(index.T @ docs)) + own).tocsr()

    def build_tree(self, ctx: BuildContext, tfidf: TfidfFeaturizer, depth: int) -> np.ndarray:
        tp = self.params.tree
        features = self.label_features(ctx, tfidf)
        if tp.walk_len > 0:
            graph = random_walk_graph(ctx.dataset.trn_Y, tp.walk_len, tp.walk_restart, tp.walk_top_k, seed=tp.seed)
            features = smooth_label_features(features, graph, tp.smooth_keep)
        return balanced_tree_codes(features, depth, seed=tp.seed)

    def param_groups(self, module: CascadeModule) -> list[ParamGroup]:
        p: CascadeXMLParams = self.params
        groups = [
            ParamGroup("classifier", list(module.weights), "adamw", p.lr_clf, p.wd_clf, eps=1e-6),
            ParamGroup("classifier_bias", list(module.biases), "adamw", p.lr_clf, 0.0, eps=1e-6),
        ]
        decay, no_decay = [], []
        for name, param in module.named_parameters():
            if param.requires_grad and not name.startswith(("weights.", "biases.")):
                (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
        if decay:
            groups.append(ParamGroup("encoder", decay, "adamw", p.lr_enc, p.wd_enc, eps=1e-6))
        if no_decay:
            groups.append(ParamGroup("encoder_no_decay", no_decay, "adamw", p.lr_enc, 0.0, eps=1e-6))
        return groups

    def batch_inputs(self, row_ids: np.ndarray) -> dict:
        return self.train_rows(row_ids)

    def test_inputs(self, row_ids: np.ndarray) -> dict:
        return self.test_rows(row_ids)

    # -- training ---------------------------------------------------------------------------------
    @classmethod
    def accepts(cls, classifier: Any) -> bool:
        return isinstance(classifier, CascadeModule)

    def cluster_map(self, module: CascadeModule, level: int) -> tuple[torch.Tensor, int]:
        return module.cluster_of(level), module.num_nodes(level)

    def level_targets(self, module, level: Level, targets: SparseTargets, hooks) -> SparseTargets:
        """Projected once per batch and level (the shortlist and the loss share them)."""
        if self._memo is None or self._memo[0] is not targets:
            self._memo = (targets, {})
        cache = self._memo[1]
        if level.space not in cache:
            cache[level.space] = super().level_targets(module, level, targets, hooks)
        return cache[level.space]

    def training_levels(self, module: CascadeModule, inputs: dict, targets: SparseTargets, hooks) -> list[Level]:
        feats = module.level_features(inputs)
        logits = module.scores(0, feats[0], None)
        levels = [Level(logits, None, space=0)]
        ids = torch.arange(logits.shape[1], device=logits.device).expand_as(logits)
        for i in range(1, module.num_levels):
            prev = Level(levels[-1].logits, ids, space=i - 1)
            keys = hooks.lever_shortlist(
                cand_ids=ids, cand_scores=prev.logits.detach(),
                targets=self.level_targets(module, prev, targets, hooks), level=i - 1,
            )
            kept = ids.gather(1, keys.topk(min(module.beam[i - 1], ids.shape[1]), dim=1).indices)
            ids = module.expand(i - 1, kept)
            space = LABELS if i == module.num_levels - 1 else i
            levels.append(Level(module.scores(i, feats[i], ids), ids, space=space))
            if module.training:
                self._count(i, self.level_targets(module, levels[-1], targets, hooks), ids)
        return levels

    @torch.no_grad()
    def _count(self, level: int, t: SparseTargets, ids: torch.Tensor) -> None:
        """Positive and teacher-only nodes of ``level`` among its candidates ``ids``."""
        t = t.coalesce()
        if t.positive is None or self.counts is None:
            return
        teacher = (t.vals > 0) & ~t.positive

        def reached(mask: torch.Tensor) -> torch.Tensor:
            marks = SparseTargets(t.rows, t.cols, mask.float(), t.shape, True)
            return (marks.lookup(ids) > 0).sum()

        row = torch.stack([reached(t.positive), t.positive.sum(), reached(teacher), teacher.sum()])
        self.counts[level - 1] += row.double().cpu()

    # -- state ------------------------------------------------------------------------------------
    def shortlist_shares(self) -> list[dict[str, float]]:
        """Per level ≥ 1: the share of its positive / teacher-only nodes that reached its candidates."""
        out = []
        for i, (pk, pa, tk, ta) in enumerate(self.counts.tolist() if self.counts is not None else []):
            out.append({"level": i + 1, "positives": pa, "positives_reached": pk / pa if pa else None,
                        "teacher": ta, "teacher_reached": tk / ta if ta else None})
        return out

    def extra_state(self, module: CascadeModule) -> dict[str, Any]:
        return {"shortlist_counts": self.counts.clone() if self.counts is not None else None}

    def load_extra_state(self, module: CascadeModule, state: dict[str, Any]) -> None:
        if state.get("shortlist_counts") is not None:
            self.counts = state["shortlist_counts"].to(torch.float64).cpu()

    # -- prediction -------------------------------------------------------------------------------
    def predict_topk(self, module, inputs, k, num_labels, exclude=None, label_block=65536):
        """The exact top-k of the beam's final candidates, filtered pairs removed first."""
        if num_labels != module.num_labels:
            raise ValueError(f"the model has {module.num_labels} labels, the data {num_labels}")
        ids, scores = module(inputs)
        return topk((ids.cpu().numpy(), scores.float().cpu().numpy()), k, filter=exclude, num_labels=num_labels)


def main(argv: list[str] | None = None) -> int:
    """``python -m lever_adapters.cascadexml.train ARGS`` is ``lever train --backbone cascadexml ARGS``."""
    from lever.cli import main as lever_main

    return lever_main(["train", "--backbone", "cascadexml", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
