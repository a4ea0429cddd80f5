"""What feeds CascadeXML's levels: pooled states of several encoder layers (one level each), and
Renée's TF-IDF bag for the label level.

:class:`LayerStates` runs a Hugging Face encoder once and returns the pooled states of the layers
the levels use, concatenated in one row (``[B, len(layers)·H]``). Fine-tuned (the paper) it is
part of the model; frozen (CPU) it is run once over every text by :func:`cached_layer_states` and
the rows are memory-mapped, so a batch is a row lookup (Renée's ``RowFeatures``/``StackedRows``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lever_adapters.renee.model import masked_mean_pool


def encoder_depth(model_path: str) -> tuple[int, int]:
    """``(layers, hidden size)`` of a Hugging Face encoder folder."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    return int(cfg.num_hidden_layers), int(cfg.hidden_size)


def default_level_layers(depth: int, levels: int) -> list[list[int]]:
    """The paper's recipe scaled to ``depth`` layers: the label level reads the last layer, each
    coarser level two layers lower, the coarsest the concatenation of two adjacent layers (12
    layers, 4 levels: {5,6}, 8, 10, 12; 3 levels: {7,8}, 10, 12)."""
    out = []
    for i in range(levels):
        top = max(1, depth - 2 * (levels - 1 - i))
        out.append(sorted({max(1, top - 1), top}) if i == 0 and levels > 1 else [top])
    return out


class LayerStates(nn.Module):
    """Pooled hidden states of ``layers`` (1 = first block), concatenated: ``[B, len(layers)·H]``.
    ``mean``: masked mean, L2-normalised; ``cls``: the first token's state (the paper)."""

    def __init__(self, model_path: str, layers: list[int], pooling: str = "mean"):
        super().__init__()
        from transformers import AutoModel

        try:  # BERT-likes: keep the unused pooler out of the parameters
            self.model = AutoModel.from_pretrained(model_path, add_pooling_layer=False)
        except TypeError:
            self.model = AutoModel.from_pretrained(model_path)
        self.layers, self.pooling = [int(x) for x in layers], pooling
        self.hidden = int(self.model.config.hidden_size)
        self.out_dim = self.hidden * len(self.layers)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = tokens["attention_mask"]
        out = self.model(
            input_ids=tokens["input_ids"], attention_mask=mask, output_hidden_states=True
        )
        pooled = []
        for layer in self.layers:
            h = out.hidden_states[layer]
            if self.pooling == "cls":
                pooled.append(h[:, 0])
            else:
                pooled.append(nn.functional.normalize(masked_mean_pool(h, mask), dim=-1))
        return torch.cat(pooled, dim=1)


@torch.no_grad()
def cached_layer_states(
    texts: list[str],
    cache_file: str | os.PathLike,
    model_path: str,
    layers: list[int],
    pooling: str,
    max_len: int,
    batch_size: int = 128,
    progress: bool = True,
) -> np.ndarray:
    """:class:`LayerStates` of every text (float32 ``[N, len(layers)·H]``), computed once and
    memory-mapped afterwards; the cache is keyed by encoder, layers, pooling, token limit and a
    hash of the texts, so a change recomputes instead of reusing stale rows."""
    from transformers import AutoTokenizer

    from lever.encoders import keyed_cache, texts_fingerprint

    key = {
        "encoder": str(model_path), "layers": [int(x) for x in layers], "pooling": pooling,
        "max_len": int(max_len), "n": len(texts), "texts_sha256": texts_fingerprint(texts),
    }

    def compute() -> np.ndarray:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        encoder = LayerStates(model_path, layers, pooling).eval()
        out = np.empty((len(texts), encoder.out_dim), dtype=np.float32)
        # Longest texts first keeps padding low; rows go back to their places.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for lo in tqdm(range(0, len(texts), batch_size), desc="layer states", disable=not progress, leave=False):
            idx = order[lo : lo + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                            max_length=max_len, return_tensors="pt")
            out[idx] = encoder({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}).numpy()
        return out

    return keyed_cache(cache_file, key, compute)
