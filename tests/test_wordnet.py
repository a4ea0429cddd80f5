"""The WordNet taxonomy-completion builder, on a hand-written data.noun and on real WordNet."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_wordnet, wordnet_dir

from lever.cli import main
from lever.data import XCDataset, XCFormatError, read_texts
from lever.data import wordnet as wn_mod
from lever.data.wordnet import build_wordnet_dataset, find_wordnet, parse_data_noun

# A miniature WordNet: offsets are arbitrary 8-digit ids (the parser does not need byte offsets).
#   entity <- physical_entity <- object <- animal <- dog <- puppy ; animal <- cat
#   dog <-(instance) Rex ; entity <- abstraction
DATA_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by  
  2 Princeton University under the following license.  
  3 WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.  
00000001 03 n 01 entity 0 002 ~ 00000002 n 0000 ~ 00000009 n 0000 | that which exists  
00000002 03 n 01 physical_entity 0 002 @ 00000001 n 0000 ~ 00000003 n 0000 | an entity that has physical existence  
00000003 03 n 02 object 0 physical_object 0 002 @ 00000002 n 0000 ~ 00000004 n 0000 | a tangible and visible entity  
00000004 05 n 01 animal 0 001 @ 00000003 n 0000 | a living organism; "animals breathe"  
00000005 05 n 02 dog 0 domestic_dog 0 003 @ 00000004 n 0000 ~ 00000006 n 0000 + 01234567 v 0101 | a member of the genus Canis; "the dog barked"  
00000006 05 n 01 puppy 0 001 @ 00000005 n 0000 | a young dog  
00000007 05 n 01 cat 0 001 @ 00000004 n 0000 | feline mammal  
00000008 18 n 01 Rex 0 001 @i 00000005 n 0000 | a famous dog  
00000009 03 n 01 abstraction 0 002 @ 00000001 n 0000 -c 00000007 n 0000 | a general concept  
"""  # data.noun lines really end with two spaces

EXPECTED = {  # document -> ancestors within depth 3 (entity itself has none and is dropped)
    "physical_entity": {"entity"},
    "object": {"physical_entity", "entity"},
    "animal": {"object", "physical_entity", "entity"},
    "dog": {"animal", "object", "physical_entity"},
    "puppy": {"dog", "animal", "object"},
    "cat": {"animal", "object", "physical_entity"},
    "Rex": {"dog", "animal", "object"},
    "abstraction": {"entity"},
}


@pytest.fixture
def mini_wordnet(tmp_path) -> Path:
    d = tmp_path / "wn" / "dict"
    d.mkdir(parents=True)
    (d / "data.noun").write_text(DATA_NOUN)
    return d


def _head(text: str) -> str:
    return text.split(":")[0].split(",")[0]


def _labels_by_doc(ds: XCDataset, split: str) -> dict[str, set[str]]:
    texts, Y = getattr(ds, f"{split}_texts"), getattr(ds, f"{split}_Y")
    heads = [_head(t) for t in ds.lbl_texts]
    return {
        _head(t).replace(" ", "_"): {heads[j].replace(" ", "_") for j in Y[i].indices}
        for i, t in enumerate(texts)
    }


def test_parse_data_noun(mini_wordnet):
    syn = parse_data_noun(mini_wordnet / "data.noun")
    assert len(syn) == 9
    dog = syn[5]
    assert dog.lemmas == ["dog", "domestic dog"] and dog.parents == [4]
    assert dog.text == 'dog, domestic dog: a member of the genus Canis; "the dog barked"'
    assert syn[8].parents == [5]  # instance hypernym
    assert syn[9].parents == [1]  # the -c (domain) pointer is not a hypernym


def test_exact_labels_split_and_filters(mini_wordnet, tmp_path):
    built = build_wordnet_dataset(tmp_path / "out", wordnet_dir=mini_wordnet, seed=0)
    ds = XCDataset.load(built.out)
    assert (ds.num_train, ds.num_test, ds.num_labels) == (6, 2, 5)
    assert [_head(t) for t in ds.lbl_texts] == ["entity", "physical entity", "object", "animal",
                                                "dog"]
    got = {**_labels_by_doc(ds, "trn"), **_labels_by_doc(ds, "tst")}
    assert got == EXPECTED
    # Reciprocal pairs: a document that is itself a label is filtered against that label.
    for split in ("trn", "tst"):
        F, texts = getattr(ds, f"{split}_filter"), getattr(ds, f"{split}_texts")
        expected_pairs = {(i, ds.lbl_texts.index(t)) for i, t in enumerate(texts)
                          if t in ds.lbl_texts}
        assert set(zip(*F.nonzero())) == expected_pairs
        assert getattr(ds, f"{split}_Y").multiply(F).nnz == 0
    assert ds.meta.source == "WordNet 3.0" and ds.meta.extra["depth"] == 3
    assert read_texts(built.out / "label_offsets.txt") == [f"{i:08d}" for i in range(1, 6)]
    # Same seed, same dataset; another seed, another split.
    again = build_wordnet_dataset(tmp_path / "again", wordnet_dir=mini_wordnet, seed=0)
    assert XCDataset.load(again.out).tst_texts == ds.tst_texts
    other = build_wordnet_dataset(tmp_path / "other", wordnet_dir=mini_wordnet, seed=5)
    assert XCDataset.load(other.out).fingerprint() != ds.fingerprint()


def test_depth_one_gives_direct_parents(mini_wordnet, tmp_path):
    ds = XCDataset.load(build_wordnet_dataset(tmp_path / "d1", wordnet_dir=mini_wordnet,
                                              depth=1).out)
    got = {**_labels_by_doc(ds, "trn"), **_labels_by_doc(ds, "tst")}
    assert got["puppy"] == {"dog"} and got["Rex"] == {"dog"} and got["object"] == {
        "physical_entity"}


def test_max_docs_slice_keeps_its_own_label_space(mini_wordnet, tmp_path):
    ds = XCDataset.load(build_wordnet_dataset(tmp_path / "s", wordnet_dir=mini_wordnet,
                                              max_docs=3, seed=1).out)
    assert ds.num_train + ds.num_test == 3
    got = {**_labels_by_doc(ds, "trn"), **_labels_by_doc(ds, "tst")}
    assert all(got[d] == EXPECTED[d] for d in got)
    assert {_head(t).replace(" ", "_") for t in ds.lbl_texts} == set().union(*got.values())


def test_malformed_data_noun_names_the_line(tmp_path):
    lines = DATA_NOUN.splitlines()
    lines[5] = "00000003 03 n 02 object 0 physical_object 0 00x @ 00000002 n 0000 | broken"
    (tmp_path / "data.noun").write_text("\n".join(lines) + "\n")
    with pytest.raises(XCFormatError) as info:
        parse_data_noun(tmp_path / "data.noun")
    assert info.value.line == 6 and "malformed synset line" in str(info.value)


def test_missing_wordnet_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("WNHOME", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setattr(wn_mod, "SYSTEM_DIRS", ())
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base.*WNHOME"):
        find_wordnet()
    nltk = tmp_path / "nltk_data" / "corpora" / "wordnet"
    nltk.mkdir(parents=True)
    (nltk / "data.noun").write_text(DATA_NOUN)
    assert find_wordnet() == nltk


def test_cli_build_and_stats(mini_wordnet, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "build", "wordnet", "--out", str(out), "--wordnet-dir",
                 str(mini_wordnet.parent)]) == 0
    capsys.readouterr()
    png = tmp_path / "freq.png"
    assert main(["data", "stats", str(out), "--json", "--plot", str(png)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train_points"] == 6 and stats["labels"] == 5
    assert stats["avg_labels_per_train_point"] == pytest.approx(
        XCDataset.load(out).trn_Y.nnz / 6)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "stats", str(tmp_path / "absent")]) == 2


def _ancestors_bfs(synsets, start: int, depth: int) -> set[int]:
    seen, frontier = set(), deque([(start, 0)])
    while frontier:
        node, d = frontier.popleft()
        if d == depth:
            continue
        for p in synsets[node].parents:
            if p not in seen:
                seen.add(p)
            frontier.append((p, d + 1))
    return seen


@requires_wordnet
def test_real_wordnet_slice_structure(tmp_path):
    built = build_wordnet_dataset(tmp_path / "wn", max_docs=1500, seed=0)
    ds = XCDataset.load(built.out)
    assert ds.meta.source == "WordNet 3.0"
    assert (ds.num_train, ds.num_test) == (1200, 300)
    assert np.diff(ds.trn_Y.indptr).min() >= 1 and np.diff(ds.tst_Y.indptr).min() >= 1
    used = np.asarray(ds.trn_Y.sum(0)).ravel() + np.asarray(ds.tst_Y.sum(0)).ravel()
    assert used.min() >= 1  # the slice's label space is exactly its documents' ancestors
    assert ds.tst_Y.multiply(ds.tst_filter).nnz == 0
    # Labels agree with an independent breadth-first walk over the parsed hypernym graph.
    synsets = parse_data_noun(wordnet_dir() / "data.noun")
    lbl_off = [int(x) for x in read_texts(built.out / "label_offsets.txt")]
    trn_off = [int(x) for x in read_texts(built.out / "trn_offsets.txt")]
    for i in range(0, ds.num_train, 97):
        got = {lbl_off[j] for j in ds.trn_Y[i].indices}
        assert got == _ancestors_bfs(synsets, trn_off[i], 3)
        assert ds.trn_texts[i] == synsets[trn_off[i]].text
    mean_labels = ds.trn_Y.nnz / ds.num_train
    assert 2.5 < mean_labels < 4.0  # about 3.2 ancestors per synset within depth 3
