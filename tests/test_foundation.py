"""The shared helpers every stage leans on: atomic writes, strict params, offline encoders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from lever.encoders import cached_embeddings, load_sentence_encoder, resolve_encoder_path
from lever.utils.atomic import atomic_path
from lever.utils.params import Params, ParamsError

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


@dataclasses.dataclass
class _Inner(Params):
    lr: float = 1e-3


@dataclasses.dataclass
class _Outer(Params):
    epochs: int = 3
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_params_roundtrip_and_strictness(tmp_path):
    p = _Outer(epochs=5, inner=_Inner(lr=0.5))
    p.save(tmp_path / "c.json")
    assert _Outer.load(tmp_path / "c.json") == p
    assert '"epochs": 3' in _Outer.skeleton()
    with pytest.raises(ParamsError, match="unknown field.*'epoch'"):
        _Outer.from_dict({"epoch": 3})
    (tmp_path / "bad.json").write_text('{"epochs": 3,\n oops}')
    with pytest.raises(ParamsError, match="bad.json: line 2"):
        _Outer.load(tmp_path / "bad.json")


def test_encoder_paths_are_local_only(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        resolve_encoder_path("bert-base-uncased")
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        resolve_encoder_path(tmp_path)


def test_plain_hf_folder_gets_mean_pooling_and_cache(tiny_bert_dir, tmp_path):
    enc = load_sentence_encoder(tiny_bert_dir)
    texts = ["a dog", "a cat", "the dog barks"]
    cache = tmp_path / "emb.npy"
    e1 = cached_embeddings(texts, cache, encoder_path=tiny_bert_dir)
    assert e1.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0, atol=1e-5)
    mtime = cache.stat().st_mtime_ns
    e2 = cached_embeddings(texts, cache, encoder_path=tiny_bert_dir)
    assert cache.stat().st_mtime_ns == mtime  # reused, not recomputed
    np.testing.assert_array_equal(e1, e2)
    cached_embeddings(texts[:2], cache, encoder_path=tiny_bert_dir)  # changed texts: recomputed
    assert np.load(cache).shape == (2, 32)
    assert enc.get_embedding_dimension() == 32


def test_every_package_folder_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = set()
    for import_root, folder in conf["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((import_root, *rel)))
    assert found == listed, f"pyproject packages list out of date: missing {found - listed}, stale {listed - found}"


def test_keyed_cache_reuses_only_a_matching_key(tmp_path):
    """One cache rule for every frozen-feature file: same key → the saved rows (no recompute),
    another key or a damaged key file → recomputed and rewritten."""
    import numpy as np

    from lever.encoders import keyed_cache

    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return np.full((3, 2), value, dtype=np.float32)
        return run

    f = tmp_path / "x.npy"
    assert keyed_cache(f, {"v": 1}, compute(1.0))[0, 0] == 1.0
    assert keyed_cache(f, {"v": 1}, compute(9.0))[0, 0] == 1.0 and calls == [1.0]
    assert keyed_cache(f, {"v": 2}, compute(2.0))[0, 0] == 2.0 and calls == [1.0, 2.0]
    (tmp_path / "x.npy.json").write_text("{damaged")
    assert keyed_cache(f, {"v": 2}, compute(3.0))[0, 0] == 3.0 and calls == [1.0, 2.0, 3.0]
