"""Training Renée inside lever's shared loop (``lever train --backbone renee``).

:class:`ReneeBackbone` implements the loop's ``Backbone`` contract. Its ``forward_backward`` is
Renée's step: the encoder runs with autograd, the classifier does not. Embeddings of the batch go
through :func:`~lever_adapters.renee.model.ova_bce_grads` (logits into a preallocated buffer, σ in
place, the sparse — possibly LEVER-soft — targets subtracted in place, two matmuls), the weight
gradient is written into ``classifier.weight.grad`` and the embedding gradient is pushed through
the encoder with ``emb.backward(grad)``. The loss is summed over labels and rows, as in Renée; the
learning rates are tuned for that scale (the loop's ``batch.loss_scale`` only scales the logged
value).

Label sharding (``label_shards=True`` under torchrun): each process owns a slice of the label
columns; embeddings and targets of the global batch are all-gathered, each process computes the
logits of every row against its own labels, and the embedding gradients are all-reduced (summed)
so each process back-propagates the full gradient of its own rows. The classifier shard is kept out
of the loop's data-parallel gradient sum (``requires_grad=False``: its gradient never comes from
autograd) and is checkpointed per process. Evaluation is collective (``collective_predict``: each
process scores its own labels, the top-k lists are merged, see ``sharded_topk``), and
``export_state_dict`` gathers the shards into the single-process ``model.safetensors`` that
``lever predict`` loads into an unsharded module.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from lever.loss import Level, SparseTargets
from lever.train.backbone import AmpContext, Backbone, BuildContext, ParamGroup
from lever.train.embeddings import frozen_embeddings
from lever.train.params import TrainParams
from lever_adapters.renee.features import RowFeatures, StackedRows, TfidfFeaturizer
from lever_adapters.renee.model import (
    BagPart,
    DensePart,
    EmbeddingHead,
    OvAClassifier,
    ReneeModule,
    TransformerPart,
    fused_ova_bce,
    ova_bce_grads,
)
from lever_adapters.renee.params import EncoderParams, ReneeParams
from lever_adapters.renee.predict import renee_topk, sharded_topk


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SplitFeatures:
    train: RowFeatures | None
    test: RowFeatures
    dense_dim: int = 0
    vocab_size: int = 0
    tokenizer_path: str | None = None


def build_features(
    ds, ep: EncoderParams, label_rows: bool, cache_dir: Path, train: bool = True
) -> SplitFeatures:
    """Encoder inputs for the training rows (documents, then labels if ``label_rows``) and the test
    rows of ``ds`` (a ``lever.data.XCDataset``)."""
    from lever.encoders import resolve_encoder_path

    ep.validate()  # also when called outside a ReneeBackbone
    kinds = set(ep.kind.split("+"))
    n_train = ds.num_train + (ds.num_labels if label_rows else 0)
    trn_texts = list(ds.trn_texts) + (list(ds.lbl_texts) if label_rows else [])
    out = SplitFeatures(train=None, test=None)  # type: ignore[arg-type]
    trn: dict[str, Any] = {}
    tst: dict[str, Any] = {}
    if "transformer" in kinds:
        out.tokenizer_path = resolve_encoder_path(ep.model)
        trn.update(texts=trn_texts, tokenizer_path=out.tokenizer_path, max_len=ep.max_len)
        tst.update(texts=list(ds.tst_texts), tokenizer_path=out.tokenizer_path, max_len=ep.max_len)
    if "cached" in kinds:
        splits = ("tst",) + (("trn",) if train else ()) + (("lbl",) if train and label_rows else ())
        emb = frozen_embeddings(ds, cache_dir, ep.model, splits, teacher_dir=ep.embeddings,
                                max_len=ep.max_len)
        tst["dense"] = StackedRows([emb["tst"]])
        if train:
            trn["dense"] = StackedRows([emb["trn"]] + ([emb["lbl"]] if label_rows else []))
        out.dense_dim = tst["dense"].dim
    if "tfidf" in kinds:
        # Fitted on the training documents only; deterministic, so prediction refits the same one.
        tfidf = TfidfFeaturizer(ep.tfidf_max_features, ep.tfidf_ngram_max, ep.tfidf_min_df).fit(
            list(ds.trn_texts)
        )
        out.vocab_size = tfidf.vocab_size
        tst["bag"] = tfidf.transform(list(ds.tst_texts))
        if train:
            trn["bag"] = tfidf.transform(trn_texts)
    if "bow" in kinds:
        if ds.trn_X_bow is None or ds.tst_X_bow is None:
            raise ValueError(
                f"{ds.root}: encoder.kind={ep.kind!r} needs BoW feature files trn_X_Xf.txt and tst_X_Xf.txt; "
                "use 'tfidf' to build a bag from the raw texts instead"
            )
        if label_rows:
            raise ValueError(
                f"{ds.root}: label-as-datapoint rows need features for the label texts, which the BoW files "
                "lack; use encoder.kind 'tfidf' (or 'cached+tfidf') or turn label rows off"
            )
        out.vocab_size = int(max(ds.trn_X_bow.shape[1], ds.tst_X_bow.shape[1]))
        trn["bag"] = _l2_rows(ds.trn_X_bow)
        tst["bag"] = _l2_rows(ds.tst_X_bow)
        tst["bag"].resize(tst["bag"].shape[0], out.vocab_size)
        trn["bag"].resize(trn["bag"].shape[0], out.vocab_size)
    out.test = RowFeatures(ds.num_test, **tst)
    out.train = RowFeatures(n_train, **trn) if train else None
    return out


def _l2_rows(x: sp.csr_matrix) -> sp.csr_matrix:
    x = sp.csr_matrix(x, dtype=np.float32, copy=True)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    norms[norms == 0] = 1.0
    x.data /= np.repeat(norms, np.diff(x.indptr)).astype(np.float32)
    return x


def build_head(ep: EncoderParams, feats: SplitFeatures) -> EmbeddingHead:
    parts: dict[str, torch.nn.Module] = {}
    kinds = set(ep.kind.split("+"))
    if "transformer" in kinds:
        parts["tokens"] = TransformerPart(feats.tokenizer_path)
    if "cached" in kinds:
        parts["dense"] = DensePart(feats.dense_dim, ep.projection)
    if kinds & {"tfidf", "bow"}:
        parts["bag"] = BagPart(feats.vocab_size, ep.bag_dim)
    return EmbeddingHead(parts, bottleneck=ep.bottleneck, dropout=ep.dropout)


# ---------------------------------------------------------------------------------------------
# Collectives of the label-sharded step
# ---------------------------------------------------------------------------------------------
def gather_rows(x: torch.Tensor, world_size: int) -> tuple[torch.Tensor, list[int]]:
    """All-gather row blocks of unequal length; returns the stacked rows and each rank's count."""
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    counts = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(counts, n)
    sizes = [int(c) for c in counts]
    most = max(sizes)
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]), sizes


def gather_targets(targets: SparseTargets, sizes: list[int]) -> SparseTargets:
    """All ranks' batch-local targets as one SparseTargets over the gathered global batch."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    rows, _ = gather_rows(targets.rows, len(sizes))  # nnz per rank differs: gather_rows pads
    cols, nnz = gather_rows(targets.cols, len(sizes))
    vals, _ = gather_rows(targets.vals, len(sizes))
    shift = torch.repeat_interleave(
        torch.as_tensor(offsets[:-1], dtype=torch.long, device=rows.device),
        torch.as_tensor(nnz, device=rows.device),
    )
    return SparseTargets(rows + shift, cols, vals, (int(offsets[-1]), targets.shape[1]))


def nest_encoder_keys(params: dict) -> dict:
    """Accept the CLI's flat forms: ``--bp encoder.kind=tfidf`` (dotted keys) and ``--bp encoder=PATH``
    (a model folder, i.e. ``encoder.model``)."""
    out = {k: v for k, v in params.items() if not k.startswith("encoder.")}
    encoder = out.get("encoder")
    encoder = {"model": encoder} if isinstance(encoder, str) else dict(encoder or {})
    encoder.update({k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("encoder.")})
    if encoder or "encoder" in out:
        out["encoder"] = encoder
    return out


# ---------------------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------------------
class ReneeBackbone(Backbone):
    name = "renee"
    params_class = ReneeParams
    # Measured on this 2-core CPU with frozen MiniLM ⊕ TF-IDF (docs/renee.md, "CPU defaults").
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 5, "batch_size": 64, "warmup_steps": 20}

    def __init__(self, params: ReneeParams | dict | None = None):
        super().__init__(nest_encoder_keys(params) if isinstance(params, dict) else params)
        self.features: SplitFeatures | None = None
        self._out: torch.Tensor | None = None  # the reusable logits buffer
        self._grad_w: torch.Tensor | None = None  # the reusable classifier gradient
        self._calls = 0
        self._last_loss = 0.0
        self.world_size, self.rank = 1, 0

    # -- building -----------------------------------------------------------------------------
    def build(self, ctx: BuildContext) -> ReneeModule:
        p: ReneeParams = self.params
        label_rows = ctx.rows is not None and ctx.rows.num_rows > ctx.rows.num_docs
        self.features = build_features(
            ctx.dataset, p.encoder, label_rows, Path(ctx.cache_dir), train=ctx.rows is not None
        )
        head = build_head(p.encoder, self.features)
        env = ctx.env
        sharded = bool(p.label_shards and env is not None and env.world_size > 1)
        self.world_size, self.rank = (env.world_size, env.rank) if sharded else (1, 0)
        train_params = ctx.train_params or TrainParams()  # None: a module built outside the loop
        if sharded and train_params.optim.max_grad_norm > 0:
            raise ValueError(
                "backbone_params.label_shards=true with TrainParams.optim.max_grad_norm > 0: the loop clips "
                "the norm of the replicated parameters only, without the classifier shards; set "
                "max_grad_norm to 0 or train with label_shards=false"
            )
        # Evaluation then calls predict_topk on every rank together (each scores its labels), and
        # every rank joins every step's gathers.
        self.collective_predict = self.collective_step = sharded
        seed = train_params.run.seed
        clf = OvAClassifier(
            ctx.dataset.num_labels, head.out_dim, self.world_size, self.rank, seed=seed
        )
        if sharded:
            clf.weight.requires_grad_(
                False
            )  # per-rank shard: out of the data-parallel gradient sum
        return ReneeModule(head, clf).to(ctx.device)

    def param_groups(self, module: ReneeModule) -> list[ParamGroup]:
        p: ReneeParams = self.params
        groups = [
            ParamGroup(
                "classifier",
                [module.classifier.weight],
                "sgd",
                p.lr_clf,
                p.wd_clf,
                momentum=p.momentum,
            )
        ]
        decay, no_decay = [], []
        for name, param in module.head.named_parameters():
            if param.requires_grad:
                (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
        if decay:
            groups.append(ParamGroup("encoder", decay, "adamw", p.lr_enc, p.wd_enc, eps=1e-6))
        if no_decay:
            groups.append(
                ParamGroup("encoder_no_decay", no_decay, "adamw", p.lr_enc, 0.0, eps=1e-6)
            )
        return groups

    def batch_inputs(self, row_ids: np.ndarray) -> dict:
        return self.features.train(row_ids)

    def test_inputs(self, row_ids: np.ndarray) -> dict:
        return self.features.test(row_ids)

    # -- training -----------------------------------------------------------------------------
    def _buffer(
        self, rows: int, cols: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        out = self._out
        if (
            out is None
            or out.dtype != dtype
            or out.device != device
            or out.shape[0] < rows
            or out.shape[1] < cols
        ):
            out = self._out = torch.empty(rows, cols, dtype=dtype, device=device)
        return out

    # -- the step through the hooks (lever.wrap, and lever train when lever_loss is overridden) --
    @classmethod
    def accepts(cls, classifier: Any) -> bool:
        return isinstance(classifier, ReneeModule)

    def training_levels(self, module: ReneeModule, inputs: Any, targets, hooks) -> list[Level]:
        """One dense level: the logits of every label (autograd through the classifier too)."""
        clf = module.classifier
        if clf.shard_size != clf.num_labels:
            raise ValueError(
                "a lever_loss implementation is in scope for backbone 'renee', but the classifier is "
                "label-sharded (label_shards=true): the hook needs the logits of all labels, which no "
                "process holds. Train with label_shards=false, or remove the plugin's lever_loss"
            )
        emb = module.head(inputs).float()
        return [Level(emb @ clf.weight.float().t())]

    def training_loss(self, module: ReneeModule, inputs: Any, targets, params, hooks):
        """Through ``lever_loss`` when a plugin in scope implements it; otherwise the fused BCE
        (``FusedOvABCE``: σ(z) − t in place, two matmuls, no [B, L] autograd graph)."""
        if hooks.overridden("lever_loss"):
            return super().training_loss(module, inputs, targets, params, hooks)
        clf = module.classifier
        emb = module.head(inputs).float()
        t = targets.to(emb.device).col_slice(clf.lo, clf.hi)
        loss = fused_ova_bce(emb, clf.weight, t, self.params.clf_micro_batch)
        return loss / (emb.shape[0] * clf.num_labels) if params.reduction == "mean" else loss

    def forward_backward(self, module: ReneeModule, batch, amp: AmpContext) -> float:
        if self.hooks.overridden("lever_loss"):
            # Renée's learning rates are tuned for the summed loss: back-propagate it unscaled, as
            # the fused step does, and log it × loss_scale.
            with amp.autocast():
                loss = self.training_loss(
                    module, batch.inputs, batch.targets, self.loss_params, self.hooks
                )
            amp.backward(loss)
            return float(loss.detach()) * batch.loss_scale
        return self._fused_forward_backward(module, batch, amp)

    def _fused_forward_backward(self, module: ReneeModule, batch, amp: AmpContext) -> float:
        """Renée's step: encoder with autograd, classifier gradient written by hand."""
        p: ReneeParams = self.params
        clf = module.classifier
        with amp.autocast():
            emb = module.head(batch.inputs)
        e_all = emb.detach().float()
        targets = batch.targets.to(e_all.device)
        sizes = [e_all.shape[0]]
        if self.world_size > 1:
            e_all, sizes = gather_rows(e_all, self.world_size)
            targets = gather_targets(targets, sizes)
        targets = targets.col_slice(clf.lo, clf.hi)
        fp16 = amp.enabled and p.fp16_clf
        scale = float(amp.scaler.scale(torch.ones((), device=e_all.device))) if amp.enabled else 1.0
        step = p.clf_micro_batch or e_all.shape[0]
        out = self._buffer(
            min(step, e_all.shape[0]),
            clf.shard_size,
            torch.float16 if fp16 else torch.float32,
            e_all.device,
        )
        with_loss = p.loss_every > 0 and self._calls % p.loss_every == 0
        self._calls += 1
        grad_w = clf.weight.grad
        if grad_w is None:  # first micro-batch of a step: reuse one gradient buffer for the run
            if (
                self._grad_w is None
                or self._grad_w.shape != clf.weight.shape
                or self._grad_w.device != clf.weight.device
            ):
                self._grad_w = torch.zeros_like(clf.weight, dtype=torch.float32)
            grad_w = self._grad_w.zero_()
        # The loop's optimizer step unscales every group by the AMP scale, so the weight gradient
        # is scaled in fp32 after its (unscaled) fp16 GEMM: Renée's split scaling.
        loss, g_emb, _ = ova_bce_grads(
            e_all,
            clf.weight.detach(),
            targets,
            micro_batch=p.clf_micro_batch,
            out=out,
            input_scale=scale,
            weight_grad_scale=scale,
            grad_weight=grad_w,
            with_loss=with_loss,
        )
        clf.weight.grad = grad_w
        if self.world_size > 1:
            dist.all_reduce(g_emb, op=dist.ReduceOp.SUM)
            start = sum(sizes[: self.rank])
            g_emb = g_emb[start : start + sizes[self.rank]]
        if emb.requires_grad:
            emb.backward(g_emb.to(emb.dtype))
        if loss is not None:
            self._last_loss = float(loss) * batch.loss_scale
        return self._last_loss

    # -- prediction ---------------------------------------------------------------------------
    def predict_scores(self, module: ReneeModule, inputs: Any, labels: slice) -> torch.Tensor:
        emb = module.head(inputs).float()
        return emb @ module.classifier.weight[labels].float().t()

    def predict_topk(self, module, inputs, k, num_labels, exclude=None, label_block=65536):
        if num_labels != module.classifier.num_labels:
            raise ValueError(
                f"the model has {module.classifier.num_labels} labels, the data {num_labels}"
            )
        block = self.params.predict_label_block or label_block
        if self.world_size > 1:
            return sharded_topk(module, inputs, k, exclude, block, self.world_size)
        return renee_topk(module, inputs, k, exclude, block)

    def export_state_dict(self, module: ReneeModule) -> dict[str, torch.Tensor]:
        """The single-process layout: classifier shards gathered (every rank calls this)."""
        return full_state_dict(module, self)


def full_state_dict(module: ReneeModule, backbone: ReneeBackbone) -> dict[str, torch.Tensor]:
    """The module's state with the classifier shards of all processes gathered (every rank calls
    this; the result is complete on every rank)."""
    state = {k: v.detach() for k, v in module.state_dict().items()}
    if backbone.world_size > 1:
        w, _ = gather_rows(module.classifier.weight.detach(), backbone.world_size)
        state["classifier.weight"] = w
    return state


def main(argv: list[str] | None = None) -> int:
    """``python -m lever_adapters.renee.train ARGS`` is ``lever train --backbone renee ARGS``."""
    from lever.cli import main as lever_main

    return lever_main(["train", "--backbone", "renee", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
