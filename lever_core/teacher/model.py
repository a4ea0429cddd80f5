"""The Siamese teacher's encoder: one shared sentence-transformers model for documents and labels,
L2-normalised embeddings, cosine scores."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lever.encoders import embed_texts, load_sentence_encoder


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return dev


def load_teacher_encoder(
    path: str | os.PathLike | None, max_len: int, device: torch.device | str = "cpu"
):
    """A sentence-transformers model whose own ``encode`` truncates at ``max_len`` like training."""
    encoder = load_sentence_encoder(path, device=str(device))
    encoder.max_seq_length = max_len
    return encoder


# "encoder.layer.3." (BERT/MiniLM), "transformer.layer.3." (DistilBERT), "layers.3.", "h.3." ...
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def freeze_bottom_layers(encoder, num_layers: int) -> int:
    """Freeze the token embeddings and the first ``num_layers`` transformer layers; returns the
    number of frozen tensors. Backward then stops at the first trainable layer, which is what
    makes CPU training affordable (the forward pass is unchanged)."""
    if num_layers <= 0:
        return 0
    layers = {
        int(m.group(1)) for n, _ in encoder.named_parameters() if (m := _LAYER_INDEX.search(n))
    }
    if layers and num_layers > max(layers):
        raise ValueError(
            f"freeze_layers={num_layers} freezes the whole encoder ({max(layers) + 1} layers); "
            "freeze fewer layers than the model has"
        )
    frozen = 0
    for name, param in encoder.named_parameters():
        layer = _LAYER_INDEX.search(name)
        if ".embeddings." in f".{name}" or (layer is not None and int(layer.group(1)) < num_layers):
            param.requires_grad_(False)
            frozen += 1
    if frozen == 0:
        raise ValueError(
            f"freeze_layers={num_layers}: found no embedding or layer parameters to freeze"
        )
    return frozen


def encode_features(encoder, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """Unit-norm sentence embeddings of a tokenised batch (with gradients)."""
    out = encoder(dict(features))["sentence_embedding"]
    return F.normalize(out.float(), dim=-1)


def embed(
    encoder, texts: list[str], batch_size: int = 256, show_progress: bool = True
) -> np.ndarray:
    """Inference embeddings (eval mode, unit-norm float32); the train/eval mode is restored."""
    was_training = encoder.training
    encoder.eval()
    try:
        return embed_texts(encoder, texts, batch_size=batch_size, show_progress=show_progress)
    finally:
        encoder.train(was_training)


def save_encoder_atomic(encoder, path: str | os.PathLike) -> None:
    """Save a sentence-transformers folder under a temporary name, then move it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    encoder.save(str(tmp))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
