"""Shared fixtures: a tiny random 2-layer BERT (so encoder tests never need real weights) and the
offline MiniLM path for the few real-encoder integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A plain Hugging Face folder: 2-layer BERT, hidden 32, random weights, MiniLM's vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from lever.encoders import default_encoder_path

    out = tmp_path_factory.mktemp("tiny_bert")
    tok = BertTokenizerFast(vocab_file=str(Path(default_encoder_path()) / "vocab.txt"), do_lower_case=True)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from lever.encoders import default_encoder_path

    return default_encoder_path()


@pytest.fixture(scope="session")
def tiny_xc_dir(tmp_path_factory) -> Path:
    """A small synthetic XC dataset folder (200 train, 60 test, 40 labels, skewed label
    frequencies, readable texts, a test filter), in the Renée/LEVER layout. Treat as read-only."""
    from lever.data import synthetic_dataset, write_dataset

    out = tmp_path_factory.mktemp("tiny_xc") / "tiny-synthetic"
    write_dataset(out, **synthetic_dataset(200, 60, 40, seed=0))
    return out


def wordnet_dir() -> Path | None:
    """Where WordNet 3.0's dict files are, if anywhere (same search as lever.data.wordnet)."""
    for cand in (os.environ.get("WNHOME"), "/usr/share/wordnet"):
        if cand and (Path(cand) / "data.noun").exists():
            return Path(cand)
        if cand and (Path(cand) / "dict" / "data.noun").exists():
            return Path(cand) / "dict"
    return None


requires_wordnet = pytest.mark.skipif(wordnet_dir() is None, reason="WordNet 3.0 not installed (apt-get install wordnet-base)")


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """``install_plugin(module_name, source, dist="lever-toy", version="0.3")``: write a plugin
    module and a dist-info whose entry_points.txt lists it in ``lever.adapters`` onto sys.path,
    as ``pip install`` of a third-party package would leave them."""
    import importlib
    import sys

    installed = []

    def install(module: str, source: str, dist: str = "lever-toy", version: str = "0.3") -> None:
        root = tmp_path / f"site_{module}"
        root.mkdir()
        (root / f"{module}.py").write_text(source)
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[lever.adapters]\n{module} = {module}\n")
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        installed.append(module)

    yield install
    for module in installed:
        sys.modules.pop(module, None)
