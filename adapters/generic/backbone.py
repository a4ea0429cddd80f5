"""The generic adapter: ``lever.wrap`` of any ``torch.nn.Module`` whose training forward returns
dense logits ``[B, L]``, a ``(logits [B, K], label_ids [B, K])`` shortlist pair or a list of
:class:`lever.loss.Level`; and ``lever train --backbone generic``, a linear one-vs-all head on
frozen sentence-encoder embeddings.

Every training row (document, or label text for label rows) and test document is embedded once
with a frozen encoder (``lever.encoders.cached_embeddings``; MiniLM by default, cached under the
run's cache folder), and a linear head ``z = W·e + b`` (bias optional) is trained on the dense
logits over all labels with the LEVER loss. It is the simplest backbone that exercises the whole
pipeline (soft targets, loop, prediction, metrics) and a baseline in its own right.

The head starts from the label-text embeddings (``init="label_text"``): ``W = s·E(label)``, so
epoch 0 ranks labels by cosine similarity (a zero-shot classifier, strong on tail labels) and
training adds what the labels' training points teach; ``init="zeros"`` starts from nothing and is
much weaker on tail labels. Defaults (s = 10, Adam at 1e-3, 4 epochs of batch 256) were picked on
the 5k-document WordNet slice for a P@k gain without giving up PSP@k. The bias starts
at the log-odds of the average label frequency, so the first steps are not spent pushing every
probability down from 0.5.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from lever.loss import Level, SparseTargets
from lever.train.backbone import OPTIMIZERS, Backbone, BuildContext, ParamGroup
from lever.train.embeddings import frozen_embeddings
from lever.utils.params import Params, ParamsError


@dataclasses.dataclass
class GenericParams(Params):
    """``encoder``: a local sentence-transformers / HF folder (None: packaged MiniLM);
    ``embeddings``: instead of encoding, use a teacher folder's ``embeddings/{trn,tst,lbl}.npy``
    (``lever teacher train`` or the zero-shot teacher: same frozen features, no second encoding
    pass); ``bias``: learn a per-label bias; ``init``: ``label_text`` or ``zeros``; ``init_scale``:
    s; ``optimizer`` / ``lr`` / ``weight_decay``: of the head's parameter group."""

    encoder: str | None = None
    embeddings: str | None = None
    bias: bool = True
    init: str = "label_text"
    init_scale: float = 10.0
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    encode_batch_size: int = 256

    def validate(self) -> GenericParams:
        checks = [
            (self.init in ("label_text", "zeros"), "init", "'label_text' or 'zeros'"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}"),
            (self.lr > 0, "lr", "a number > 0"),
            (self.weight_decay >= 0, "weight_decay", "a number >= 0"),
            (self.encode_batch_size >= 1, "encode_batch_size", "an integer >= 1"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ParamsError(
                    f"backbone_params.{name}={getattr(self, name)!r} (generic): expected {expected}"
                )
        return self


class LinearOvA(nn.Module):
    """One logistic classifier per label: ``z = x·Wᵀ + b``."""

    def __init__(self, dim: int, num_labels: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_labels, dim))
        self.bias = nn.Parameter(torch.zeros(num_labels)) if bias else None

    def forward(self, x: torch.Tensor, labels: slice = slice(None)) -> torch.Tensor:
        z = x @ self.weight[labels].T
        return z + self.bias[labels] if self.bias is not None else z


class GenericBackbone(Backbone):
    name = "generic"
    params_class = GenericParams

    def build(self, ctx: BuildContext) -> nn.Module:
        p: GenericParams = self.params
        ds = ctx.dataset
        splits = ("lbl", "tst", "trn") if ctx.rows is not None else ("lbl", "tst")
        with ctx.env.main_first():  # rank 0 writes the caches, the others then read them
            emb = frozen_embeddings(
                ds, ctx.cache_dir, p.encoder, splits, p.encode_batch_size, teacher_dir=p.embeddings
            )
        self.lbl_emb, self.tst_emb, self.trn_emb = emb["lbl"], emb["tst"], emb.get("trn")
        self.num_docs = ctx.rows.num_docs if ctx.rows is not None else ds.num_train

        module = LinearOvA(self.lbl_emb.shape[1], ds.num_labels, p.bias)
        with torch.no_grad():
            if p.init == "label_text":
                module.weight.copy_(
                    torch.from_numpy(np.array(self.lbl_emb, dtype=np.float32)) * p.init_scale
                )
            if module.bias is not None and ctx.rows is not None:
                density = max(
                    ctx.rows.Y.nnz / max(1, ctx.rows.num_rows * ctx.rows.num_labels), 1e-12
                )
                module.bias.fill_(math.log(density / (1.0 - density)))
        return module

    def param_groups(self, module: nn.Module) -> list[ParamGroup]:
        p: GenericParams = self.params
        return [ParamGroup("head", list(module.parameters()), p.optimizer, p.lr, p.weight_decay)]

    def batch_inputs(self, row_ids: np.ndarray) -> torch.Tensor:
        row_ids = np.asarray(row_ids, dtype=np.int64)
        out = np.empty((row_ids.size, self.lbl_emb.shape[1]), dtype=np.float32)
        docs = row_ids < self.num_docs
        out[docs] = self.trn_emb[row_ids[docs]]
        out[~docs] = self.lbl_emb[row_ids[~docs] - self.num_docs]
        return torch.from_numpy(out)

    def test_inputs(self, row_ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(
            np.asarray(self.tst_emb[np.asarray(row_ids, dtype=np.int64)], dtype=np.float32)
        )

    @classmethod
    def accepts(cls, classifier) -> bool:
        return isinstance(classifier, nn.Module)

    def training_levels(self, module: nn.Module, inputs, targets: SparseTargets, hooks) -> list[Level]:
        """``module(inputs)``, exactly as a plain training loop would call it, read as levels."""
        return levels_from_output(module(inputs), targets, type(module).__name__)

    def predict_scores(
        self, module: nn.Module, inputs: torch.Tensor, labels: slice
    ) -> torch.Tensor:
        return module(inputs, labels)


def levels_from_output(out, targets: SparseTargets, who: str) -> list[Level]:
    """A classifier's training output as levels: dense logits, a (logits, label ids) pair, one
    :class:`Level` or a list of them; the label levels are checked against the targets' shape."""
    if isinstance(out, torch.Tensor):
        levels = [Level(out)]
    elif isinstance(out, Level):
        levels = [out]
    elif isinstance(out, (tuple, list)) and out and all(isinstance(x, Level) for x in out):
        levels = list(out)
    elif isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(x, torch.Tensor) for x in out):
        levels = [Level(out[0], out[1])]
    else:
        raise TypeError(
            f"{who} returned {type(out).__name__}; the generic adapter expects dense logits "
            "[B, L], a (logits [B, K], label_ids [B, K]) pair or a list of lever.loss.Level"
        )
    for level in levels:
        _check_level(level, targets, who)
    return levels


def _check_level(level: Level, targets: SparseTargets, who: str) -> None:
    batch, num_labels = targets.shape
    logits = level.logits
    if logits.dim() != 2 or logits.shape[0] != batch:
        raise ValueError(f"{who} returned logits of shape {tuple(logits.shape)}; expected [{batch}, ...]")
    if level.is_shortlist:
        if level.ids.shape != logits.shape or level.ids.is_floating_point():
            raise ValueError(
                f"{who} returned shortlist label ids of shape {tuple(level.ids.shape)} "
                f"({level.ids.dtype}); expected integer ids shaped like the logits {tuple(logits.shape)}"
            )
    elif level.is_labels and logits.shape[1] != num_labels:
        raise ValueError(
            f"{who} returned dense logits over {logits.shape[1]} labels but the targets have "
            f"{num_labels} (dataset labels); return [B, {num_labels}] or a (logits, label_ids) shortlist"
        )
