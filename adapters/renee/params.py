"""Typed settings of the Renée backbone (PECOS style: ``ReneeParams.skeleton()`` dumps them all).

Defaults follow Renée's recipe (SGD + momentum for the classifier, Adam for the encoder, warm-up then
cosine, summed BCE, high dropout on the pooled embedding) scaled down to what a CPU can train.
"""

from __future__ import annotations

import dataclasses

from lever.utils.params import Params, ParamsError

ENCODER_KINDS = ("transformer", "cached", "tfidf", "bow", "cached+tfidf", "cached+bow")


@dataclasses.dataclass
class EncoderParams(Params):
    """Which text encoder feeds the classifier.

    kind: ``transformer`` (any Hugging Face encoder, fine-tuned end to end with masked mean
    pooling), ``cached`` (frozen sentence-encoder embeddings from ``lever.encoders.cached_embeddings``),
    ``tfidf`` (a TF-IDF bag fitted on the training texts), ``bow`` (the dataset's own BoW feature
    files, ``trn_X_Xf``/``tst_X_Xf``), or a ``cached+...`` concatenation of the frozen dense
    embedding with a bag.
    """

    kind: str = "cached+tfidf"
    model: str | None = None  # HF / sentence-transformers folder; None = packaged all-MiniLM-L6-v2
    max_len: int = 32  # tokens per text (the transformer's input; the cached embeddings' too)
    bottleneck: int = (
        0  # 0 = none; else a bias-free linear to this many dims (Renée --bottleneck-dims)
    )
    projection: int = 0  # kind=cached*: 0 = frozen embedding as is; else a trainable linear on top
    bag_dim: int = 256  # output width of the trainable TF-IDF / BoW embedding bag
    tfidf_max_features: int = 50_000
    tfidf_ngram_max: int = 2
    tfidf_min_df: int = 2
    dropout: float = 0.3  # on the pooled embedding (Renée on GPU: 0.6-0.85; 0.3 measured best on CPU)
    # kind=cached*: take the frozen embeddings from a lever teacher folder (embeddings/{trn,tst,lbl}.npy;
    # the zero-shot teacher is exactly frozen MiniLM) instead of computing them.
    embeddings: str | None = None

    def validate(self) -> EncoderParams:
        _check(self, "backbone_params.encoder", [
            (self.kind in ENCODER_KINDS, "kind", f"one of {ENCODER_KINDS}"),
            (self.max_len >= 1, "max_len", "an integer >= 1"),
            (self.bottleneck >= 0, "bottleneck", "an integer >= 0 (0: none)"),
            (self.projection >= 0, "projection", "an integer >= 0 (0: none)"),
            (self.bag_dim >= 1, "bag_dim", "an integer >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)"),
        ])
        return self


@dataclasses.dataclass
class ReneeParams(Params):
    """Renée-specific settings (``TrainParams.backbone_params``); epochs, batch size and warm-up
    are the shared loop's ``TrainParams.optim``, soft labels, λ and label rows its ``.lever``, the
    seed its ``.run``."""

    encoder: EncoderParams = dataclasses.field(default_factory=EncoderParams)
    lr_clf: float = 1.0  # SGD + momentum on the classifier, for the SUMMED loss (Renée's scale)
    lr_enc: float = 5e-3  # AdamW (eps 1e-6) on the encoder / projection / bag
    momentum: float = 0.9
    wd_clf: float = 1e-4
    wd_enc: float = 0.01
    clf_micro_batch: int = (
        0  # 0 = whole batch; else split accumulation over classifier micro-batches
    )
    fp16_clf: bool = (
        True  # fp16 logits buffer + GEMMs with fp32 master weights when AMP is on (CUDA)
    )
    # Under torchrun: each process owns a slice of the label columns (Renée's model parallelism).
    # False: the classifier is replicated and trained data-parallel like the encoder.
    label_shards: bool = False
    loss_every: int = 10  # micro-batches between loss evaluations (a dense pass); 0 = never
    predict_label_block: int = 65_536

    def validate(self) -> ReneeParams:
        self.encoder.validate()
        _check(self, "backbone_params", [
            (self.lr_clf > 0 and self.lr_enc > 0, "lr_clf" if self.lr_clf <= 0 else "lr_enc", "a number > 0"),
            (0.0 <= self.momentum < 1.0, "momentum", "a number in [0, 1)"),
            (self.wd_clf >= 0 and self.wd_enc >= 0, "wd_clf" if self.wd_clf < 0 else "wd_enc", "a number >= 0"),
            (self.clf_micro_batch >= 0, "clf_micro_batch", "an integer >= 0 (0: whole batch)"),
            (self.loss_every >= 0, "loss_every", "an integer >= 0 (0: never)"),
            (self.predict_label_block >= 1, "predict_label_block", "an integer >= 1"),
        ])
        return self


def _check(params: Params, where: str, checks: list[tuple[bool, str, str]]) -> None:
    for ok, name, expected in checks:
        if not ok:
            raise ParamsError(f"{where}.{name}={getattr(params, name)!r} (renee): expected {expected}")
