"""Renée's model: a text encoder with a high-dropout pooled embedding, and one bias-free one-vs-all
classifier over all labels whose backward is written by hand.

The classifier never builds an autograd graph over the [batch, labels] logits. One preallocated
buffer holds the logits, then σ(z) (in place), then σ(z) − t (the sparse targets subtracted in
place by ``lever.loss.fused_grad_``); two matmuls turn it into the gradient of the summed BCE
with respect to the embeddings (``G·W``) and the weights (``Gᵀ·E``). The labels may be split into
shards (one per process); :func:`ova_bce_grads` works on whichever shard it is given.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lever.loss import SparseTargets, fused_grad_, loss_from_probs


def masked_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states that the attention mask keeps (Renée's and NGAME's pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class TransformerPart(nn.Module):
    """Any Hugging Face encoder, trained end to end, mean-pooled over real tokens."""

    def __init__(self, model_path: str):
        super().__init__()
        from transformers import AutoModel

        try:  # BERT-likes: keep the unused pooler out of the parameters
            self.model = AutoModel.from_pretrained(model_path, add_pooling_layer=False)
        except TypeError:  # DistilBERT and others take no such argument
            self.model = AutoModel.from_pretrained(model_path)
        self.out_dim = int(self.model.config.hidden_size)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return masked_mean_pool(hidden.last_hidden_state, tokens["attention_mask"])


class DensePart(nn.Module):
    """Frozen precomputed embeddings, optionally through a trainable bias-free projection."""

    def __init__(self, in_dim: int, projection: int = 0):
        super().__init__()
        self.proj = nn.Linear(in_dim, projection, bias=False) if projection else None
        if self.proj is not None:
            nn.init.eye_(self.proj.weight) if projection == in_dim else None
        self.out_dim = projection or in_dim

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense if self.proj is None else self.proj(dense)


class BagPart(nn.Module):
    """A trainable embedding bag over a sparse TF-IDF/BoW row: Σ_j x_j · e_j (mode sum)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="sum")
        # Rows are L2-normalised bags, so N(0, 1/dim) gives outputs of about unit norm, like the
        # frozen sentence embeddings they are concatenated with.
        nn.init.normal_(self.bag.weight, std=1.0 / math.sqrt(dim))
        self.out_dim = dim

    def forward(self, bag: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        indices, offsets, weights = bag
        return self.bag(indices, offsets, per_sample_weights=weights)


class EmbeddingHead(nn.Module):
    """Encoder parts concatenated, then an optional bottleneck, then dropout (Renée's ``embed``).

    ``forward`` takes the batch dict made by :mod:`lever_adapters.renee.features`: ``tokens`` for a
    transformer, ``dense`` for frozen embeddings, ``bag`` for a sparse bag; each present part adds
    its columns.
    """

    def __init__(self, parts: dict[str, nn.Module], bottleneck: int = 0, dropout: float = 0.0):
        super().__init__()
        if not parts:
            raise ValueError("EmbeddingHead needs at least one encoder part")
        self.parts = nn.ModuleDict(parts)
        width = sum(p.out_dim for p in self.parts.values())
        self.bottleneck = nn.Linear(width, bottleneck, bias=False) if bottleneck else None
        self.dropout = nn.Dropout(dropout)
        self.out_dim = bottleneck or width

    def forward(self, batch: dict) -> torch.Tensor:
        pieces = [part(batch[name]) for name, part in self.parts.items()]
        emb = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
        if self.bottleneck is not None:
            emb = self.bottleneck(emb.float())
        return self.dropout(emb)


def shard_bounds(num_labels: int, world_size: int, rank: int, align: int = 16) -> tuple[int, int]:
    """Label columns ``[lo, hi)`` owned by ``rank``: equal slices rounded up to ``align`` columns
    (the last shard takes the remainder). No padded columns exist, so the result of training does not
    depend on the number of shards."""
    per = -(-num_labels // world_size)
    per = -(-per // align) * align
    lo = min(rank * per, num_labels)
    return lo, min(lo + per, num_labels)


class OvAClassifier(nn.Module):
    """One bias-free weight row per label (this process's shard ``[lo, hi)``), fp32 master weights.

    The initial weights are N(0, 0.02) drawn for ALL labels from ``seed`` and then sliced, so every
    sharding of the same run starts from the same matrix.
    """

    def __init__(
        self, num_labels: int, dim: int, world_size: int = 1, rank: int = 0, seed: int = 0
    ):
        super().__init__()
        self.num_labels, self.dim = int(num_labels), int(dim)
        self.lo, self.hi = shard_bounds(self.num_labels, world_size, rank)
        gen = torch.Generator().manual_seed(seed)
        full = torch.randn(self.num_labels, self.dim, generator=gen) * 0.02
        self.weight = nn.Parameter(full[self.lo : self.hi].clone())

    @property
    def shard_size(self) -> int:
        return self.hi - self.lo

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits for this shard (prediction and reference use only; training uses ova_bce_grads)."""
        return emb @ self.weight.t()


@torch.no_grad()
def ova_bce_grads(
    emb: torch.Tensor,
    weight: torch.Tensor,
    targets: SparseTargets,
    *,
    micro_batch: int = 0,
    out: torch.Tensor | None = None,
    input_scale: float = 1.0,
    weight_grad_scale: float = 1.0,
    grad_weight: torch.Tensor | None = None,
    with_loss: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Summed BCE of ``emb @ weight.T`` against sparse soft targets, with hand-written gradients.

    L = Σ_{i,j} softplus(z_ij) − Σ_{(i,j)∈S} t_ij · z_ij,  ∂L/∂z = σ(z) − t.

    ``targets`` has shape ``[B, shard]`` (rows index ``emb``, columns index ``weight``'s rows).
    ``out`` is the reusable logits buffer of at least ``[micro_batch, shard]`` (its dtype is the compute dtype: fp16
    on a GPU, fp32 on a CPU). Batches larger than ``micro_batch`` are split and the weight gradient
    accumulated (Renée's split accumulation). ``input_scale`` multiplies only the embedding gradient:
    Renée's split loss scaling, which scales what flows into the fp16 encoder and leaves the
    classifier's fp32 gradient unscaled. ``weight_grad_scale`` multiplies the weight gradient after
    its GEMM (for a caller whose optimizer step unscales every gradient, in fp32). ``grad_weight``
    (fp32, like ``weight``): accumulate into it instead of a new tensor.

    Returns ``(loss or None, grad_emb fp32 [B, d], grad_weight fp32 like weight)``.
    """
    batch, dim = emb.shape
    shard = weight.shape[0]
    step = micro_batch or batch
    dtype = out.dtype if out is not None else weight.dtype
    if out is None:
        out = torch.empty(min(step, batch), shard, dtype=dtype, device=weight.device)
    if out.shape[0] < min(step, batch) or out.shape[1] < shard:
        raise ValueError(
            f"logits buffer {tuple(out.shape)} smaller than [{min(step, batch)}, {shard}]"
        )
    w = weight if weight.dtype == dtype else weight.to(dtype)  # Renée's per-step fp16 copy
    e_all = emb if emb.dtype == dtype else emb.to(dtype)
    grad_emb = torch.empty(batch, dim, dtype=torch.float32, device=weight.device)
    if grad_weight is None:
        grad_weight = torch.zeros(shard, dim, dtype=torch.float32, device=weight.device)
    elif grad_weight.shape != weight.shape or grad_weight.dtype != torch.float32:
        raise ValueError(f"grad_weight must be float32 of shape {tuple(weight.shape)}")
    grad_w = grad_weight
    loss = torch.zeros((), dtype=torch.float64, device=weight.device) if with_loss else None
    for start in range(0, batch, step):
        stop = min(start + step, batch)
        e = e_all[start:stop]
        z = out[: stop - start, :shard]
        torch.matmul(e, w.t(), out=z)
        part = targets.row_slice(start, stop) if step < batch else targets
        z.sigmoid_()
        if loss is not None:  # a dense pass, so callers ask only now and then (as Renée samples it)
            loss += loss_from_probs(z, part, reduction="sum").double()
        fused_grad_(z, part)  # z is now dL/dz = σ(z) − t
        if dtype == torch.float32:
            torch.matmul(z, w, out=grad_emb[start:stop])
            if input_scale != 1.0:
                grad_emb[start:stop].mul_(input_scale)
            grad_w.addmm_(z.t(), e, alpha=weight_grad_scale)
        else:  # fp16 GEMMs with fp32 accumulation inside; scaled before rounding to fp16, as Renée
            grad_emb[start:stop] = torch.addmm(
                z.new_zeros(()), z, w, beta=0, alpha=input_scale
            ).float()
            grad_w.add_(torch.mm(z.t(), e).float(), alpha=weight_grad_scale)
    return loss, grad_emb, grad_w


class FusedOvABCE(torch.autograd.Function):
    """Autograd face of :func:`ova_bce_grads` for code that wants ``loss.backward()``.

    The gradients are computed during the forward pass (they need only σ(z) − t), so nothing of
    size [B, L] is kept for the backward pass: it returns the stored gradients times the incoming
    scalar.
    """

    @staticmethod
    def forward(ctx, emb, weight, rows, cols, vals, micro_batch: int = 0):
        targets = SparseTargets(rows, cols, vals, (emb.shape[0], weight.shape[0]))
        loss, g_emb, g_w = ova_bce_grads(
            emb.detach(), weight.detach(), targets, micro_batch=micro_batch, with_loss=True
        )
        ctx.save_for_backward(g_emb.to(emb.dtype), g_w.to(weight.dtype))
        return loss.to(torch.float32)

    @staticmethod
    def backward(ctx, grad_out):
        g_emb, g_w = ctx.saved_tensors
        return g_emb * grad_out, g_w * grad_out, None, None, None, None


def fused_ova_bce(
    emb: torch.Tensor, weight: torch.Tensor, targets: SparseTargets, micro_batch: int = 0
) -> torch.Tensor:
    """Summed BCE over all labels with the hand-written backward, as an autograd-able scalar."""
    return FusedOvABCE.apply(emb, weight, targets.rows, targets.cols, targets.vals, micro_batch)


class ReneeModule(nn.Module):
    """The whole trainable model: ``head`` (encoder → bottleneck → dropout) and ``classifier``."""

    def __init__(self, head: EmbeddingHead, classifier: OvAClassifier):
        super().__init__()
        self.head, self.classifier = head, classifier

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits over this process's label shard (reference path; training uses the fused step)."""
        return self.classifier(self.head(batch))
