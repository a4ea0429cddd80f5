"""The FOLDOC see-also builder, on hand-written dictd files and on the installed dict-foldoc."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from lever.cli import main
from lever.data import XCDataset, XCFormatError
from lever.data import foldoc as fd_mod
from lever.data.foldoc import (
    build_foldoc_dataset,
    decode_dictd_number,
    find_foldoc,
    parse_foldoc,
    resolve_references,
)

REAL_INDEX = Path("/usr/share/dictd/foldoc.index")
requires_foldoc = pytest.mark.skipif(
    not REAL_INDEX.is_file(), reason=f"{REAL_INDEX} missing (apt-get install dict-foldoc)"
)

_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_number(n: int) -> str:
    """dictd base64, written independently of the parser's decoder."""
    out = ""
    while True:
        out = _DIGITS[n % 64] + out
        n //= 64
        if n == 0:
            return out


# (index headwords, entry text). Entries follow dict-foldoc's layout: headword lines, a blank
# line, the indented definition. Index headwords are lower-case, as dictfmt writes them.
MINI = [
    (["00-database-short"], "00-database-short\n     The Mini Dictionary (1 May 2024)\n\n"),
    (["00-database-info"], "This file was converted by dictfmt; see {duplex}.\n\n"),
    (["full-duplex", "fdx"],
     ("full-duplex\nfdx\n\n   <communications> (fdx) A {duplex} channel that carries data\n"
      "   both ways at once.  Compare {Half-Duplex}, {nowhere at all}, {FDX} and {remote\n"
      "   echo}.\n\n   (2001-07-21)\n\n")),
    (["duplex"], "duplex\n\n   <communications> See {full-duplex} and {HDX}.\n\n"),
    (["half-duplex", "hdx"],
     "half-duplex\nhdx\n\n   <communications> One way at a time, unlike {full-duplex}.\n\n"),
    (["remote echo"], "remote echo\n\n   <networking> Echo by the far end.\n\n"),
    (["hash", "#"],
     ("hash\n#\n\n   1. <character> The {hash character}.\n\n   2. <programming, jargon> See\n"
      "   {hash coding}.  An example page:\n\n   <a href=\"x\">{PLUS}</a>\n\n")),
    (["plus"], "PLUS\n\n   <language> Univac's language, unlike {plus sign}.\n\n"),
    (["plus", "plus sign", "+"],
     "plus\nplus sign\n+\n\n   <character> Also {Plus} and {PLUS}.\n\n"),
    (["language for the on-line investigation and transformation", "lolita"],
     ("Language for the On-Line Investigation and\nTransformation\nLOLITA\n\n"
      "   <language> A {Hash}-based system.\n\n")),
]


def write_dictd(folder: Path, entries=MINI, *, name: str = "foldoc", compress: bool = True):
    """dict.dz + index for ``entries``; index lines sorted by headword like dictfmt's."""
    body, lines = b"", []
    for keys, text in entries:
        data = text.encode("utf-8")
        for key in keys:
            lines.append(f"{key}\t{dictd_number(len(body))}\t{dictd_number(len(data))}\n")
        body += data
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.index").write_text("".join(sorted(lines)), encoding="utf-8")
    if compress:
        (folder / f"{name}.dict.dz").write_bytes(gzip.compress(body))
    else:
        (folder / f"{name}.dict").write_bytes(body)
    return folder / name


@pytest.fixture
def mini(tmp_path) -> Path:
    return write_dictd(tmp_path / "dictd")


def _by_head(entries):
    return {e.headwords[0]: e for e in entries}


def test_dictd_numbers_round_trip():
    assert decode_dictd_number("A") == 0 and decode_dictd_number("/") == 63
    assert decode_dictd_number("BA") == 64 and decode_dictd_number("Gb9L") == 6 * 64**3 + 27 * 64**2 + 61 * 64 + 11
    for n in (0, 1, 63, 64, 4095, 5_578_809):
        assert decode_dictd_number(dictd_number(n)) == n
    with pytest.raises(ValueError, match="not a dictd base64 digit"):
        decode_dictd_number("A=")


def test_parse_entries_aliases_tags_and_references(mini):
    foldoc = parse_foldoc(find_foldoc(mini))
    assert foldoc.description == "The Mini Dictionary (1 May 2024)"
    ents = _by_head(foldoc.entries)
    assert not any(h.startswith("00-database") for h in ents)  # dictd metadata is not an entry
    assert len(foldoc.entries) == 8
    fdx = ents["full-duplex"]
    assert fdx.doc_text == "full-duplex, fdx (communications)"
    assert fdx.label_text == "full-duplex, fdx"
    assert fdx.references == ["duplex", "Half-Duplex", "nowhere at all", "FDX", "remote echo"]
    # Tags come from the start of the definition and of numbered senses, never from examples.
    assert ents["hash"].subjects == ["character", "programming", "jargon"]
    assert ents["hash"].doc_text == "hash, # (character, programming, jargon)"
    assert ents["remote echo"].doc_text == "remote echo (networking)"
    # A headword wrapped onto a second line is one headword, in its original case.
    lolita = ents["Language for the On-Line Investigation and Transformation"]
    assert lolita.headwords == ["Language for the On-Line Investigation and Transformation",
                                "LOLITA"]


def test_resolution_aliases_case_unknown_self_and_ambiguous(mini):
    entries = parse_foldoc(find_foldoc(mini)).entries
    res = resolve_references(entries)
    heads = [e.headwords[0] for e in entries]
    targets = {heads[i]: {heads[j] for j in t} for i, t in enumerate(res.targets)}
    # {Half-Duplex} by case, {FDX} is itself (dropped), {nowhere at all} resolves to nothing.
    assert targets["full-duplex"] == {"duplex", "half-duplex", "remote echo"}
    assert targets["duplex"] == {"full-duplex", "half-duplex"}  # {HDX} through the alias
    assert targets["hash"] == {"PLUS"}  # exact case picks the language over the character
    assert targets["PLUS"] == {"plus"}  # {plus sign}: an alias of the character entry
    # {Plus} matches both plus entries only case-insensitively: ambiguous, dropped.
    # {PLUS} from the character entry is the language entry, not itself.
    assert targets["plus"] == {"PLUS"}
    assert targets["Language for the On-Line Investigation and Transformation"] == {"hash"}
    assert targets["remote echo"] == set() and targets["half-duplex"] == {"full-duplex"}
    assert (res.unknown, res.self_refs, res.ambiguous) == (3, 1, 1)


def _labels_by_doc(ds: XCDataset) -> dict[str, set[str]]:
    got = {}
    for texts, Y in ((ds.trn_texts, ds.trn_Y), (ds.tst_texts, ds.tst_Y)):
        for i, text in enumerate(texts):
            got[text] = {ds.lbl_texts[j] for j in Y[i].indices}
    return got


def test_build_exact_dataset(mini, tmp_path):
    built = build_foldoc_dataset(tmp_path / "out", source=mini, seed=0)
    ds = XCDataset.load(built.out)
    assert (ds.num_train, ds.num_test, ds.num_labels) == (6, 1, 7)  # round(0.2 * 7) = 1
    assert _labels_by_doc(ds) == {
        "full-duplex, fdx (communications)": {"duplex", "half-duplex, hdx", "remote echo"},
        "duplex (communications)": {"full-duplex, fdx", "half-duplex, hdx"},
        "half-duplex, hdx (communications)": {"full-duplex, fdx"},
        "hash, # (character, programming, jargon)": {"PLUS"},
        "PLUS (language)": {"plus, plus sign, +"},
        "plus, plus sign, + (character)": {"PLUS"},
        "Language for the On-Line Investigation and Transformation, LOLITA (language)":
            {"hash, #"},
    }
    assert ds.meta.name == "foldoc" and ds.meta.source == "The Mini Dictionary (1 May 2024)"
    assert (ds.meta.propensity_a, ds.meta.propensity_b) == (0.55, 1.5)
    meta = json.loads((built.out / "lever_meta.json").read_text())
    assert meta["extra"]["references_unknown"] == 3 and meta["extra"]["seed"] == 0


def test_reciprocal_filters_list_every_document_that_is_a_label(mini, tmp_path):
    ds = XCDataset.load(build_foldoc_dataset(tmp_path / "out", source=mini).out)
    label_names = [t.split(",")[0] for t in ds.lbl_texts]
    for split in ("trn", "tst"):
        texts, Y, F = (getattr(ds, f"{split}_{x}") for x in ("texts", "Y", "filter"))
        expected = {(i, label_names.index(t.split(",")[0].split(" (")[0]))
                    for i, t in enumerate(texts) if t.split(",")[0].split(" (")[0] in label_names}
        assert set(zip(*F.nonzero())) == expected
        assert Y.multiply(F).nnz == 0  # a filtered pair is never ground truth
    # Six documents are also labels (LOLITA is referenced by nobody).
    assert ds.trn_filter.nnz + ds.tst_filter.nnz == 6


def _chain_dictionary(n: int) -> list:
    """n entries, term{i} referring to term{i+1} and term{3i}: enough rows for split checks."""
    entries = [(["00-database-short"], "00-database-short\n     Chain\n\n")]
    for i in range(n):
        refs = f"{{term{(i + 1) % n}}} {{Term{(3 * i) % n}}}"
        entries.append(([f"term{i}"], f"term{i}\n\n   <test> Links {refs}.\n\n"))
    return entries


def test_split_is_seeded_and_max_docs_slices(tmp_path):
    src = write_dictd(tmp_path / "chain", _chain_dictionary(60), compress=False)
    a = XCDataset.load(build_foldoc_dataset(tmp_path / "a", source=src, seed=0).out)
    b = XCDataset.load(build_foldoc_dataset(tmp_path / "b", source=src, seed=0).out)
    c = XCDataset.load(build_foldoc_dataset(tmp_path / "c", source=src, seed=7).out)
    assert (a.num_train, a.num_test, a.num_labels) == (48, 12, 60)
    assert a.tst_texts == b.tst_texts and a.fingerprint() == b.fingerprint()
    assert a.tst_texts != c.tst_texts
    assert set(a.trn_texts).isdisjoint(a.tst_texts)
    # Every chain document is a label, so each row has exactly one reciprocal pair.
    assert np.diff(a.tst_filter.indptr).tolist() == [1] * 12
    s = XCDataset.load(build_foldoc_dataset(tmp_path / "s", source=src, max_docs=10).out)
    assert (s.num_train, s.num_test) == (8, 2) and s.meta.name == "foldoc-10"
    used = np.asarray(s.trn_Y.sum(0)).ravel() + np.asarray(s.tst_Y.sum(0)).ravel()
    assert used.min() >= 1  # the slice's label space is what its documents reference


def test_find_foldoc_sources_and_missing_message(mini, tmp_path, monkeypatch):
    folder = mini.parent
    for given in (folder, mini, f"{mini}.index", f"{mini}.dict.dz"):
        assert find_foldoc(given).dict == folder / "foldoc.dict.dz"
    monkeypatch.setenv("FOLDOC_DICT", str(folder))
    assert find_foldoc().index == folder / "foldoc.index"
    monkeypatch.delenv("FOLDOC_DICT")
    monkeypatch.setattr(fd_mod, "SYSTEM_BASE", tmp_path / "none" / "foldoc")
    with pytest.raises(FileNotFoundError, match=r"none/foldoc.index.*apt-get install dict-foldoc"):
        find_foldoc()
    (folder / "foldoc.dict.dz").unlink()
    with pytest.raises(FileNotFoundError, match=r"foldoc.dict.dz.*apt-get install dict-foldoc"):
        find_foldoc(folder)


def _malformed(tmp_path, edit) -> XCFormatError:
    src = write_dictd(tmp_path / "bad")
    index = src.with_name("foldoc.index")
    index.write_text(edit(index.read_text()))
    with pytest.raises(XCFormatError) as info:
        parse_foldoc(find_foldoc(src))
    return info.value


def test_malformed_index_names_file_and_line(tmp_path):
    err = _malformed(tmp_path, lambda t: t.replace("\nduplex\t", "\nduplex\t=", 1))
    lines = (tmp_path / "bad" / "foldoc.index").read_text().splitlines()
    assert err.path.endswith("foldoc.index") and lines[err.line - 1].startswith("duplex\t=")
    assert "not a dictd base64 digit" in err.message
    err = _malformed(tmp_path, lambda t: t.replace("\t", " ", 1))
    assert err.line == 1 and "expected 'headword<TAB>offset<TAB>length'" in err.message


def test_index_out_of_step_with_dictionary(tmp_path):
    def shift(text):  # point "remote echo" three bytes into its entry
        line = next(x for x in text.splitlines() if x.startswith("remote echo\t"))
        _, off, length = line.split("\t")
        moved = f"remote echo\t{dictd_number(decode_dictd_number(off) + 3)}\t{length}"
        return text.replace(line, moved)

    err = _malformed(tmp_path, shift)
    assert err.path.endswith("foldoc.dict.dz") and "'remote echo'" in err.message
    assert "start with its headword line" in err.message and err.line > 1
    err = _malformed(tmp_path, lambda t: t.replace("lolita\t", "lolita\tBAAAA", 1))
    assert "lies outside foldoc.dict.dz" in err.message and err.path.endswith("foldoc.index")


def test_not_gzip_dictionary(tmp_path):
    src = write_dictd(tmp_path / "raw")
    src.with_name("foldoc.dict.dz").write_bytes(b"not gzip at all")
    with pytest.raises(XCFormatError, match="foldoc.dict.dz: not a readable dictzip"):
        parse_foldoc(find_foldoc(src))


def test_cli_build(mini, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "build", "foldoc", "--out", str(out), "--source", str(mini)]) == 0
    assert "6 train, 1 test, 7 labels from 8 entries" in capsys.readouterr().out
    assert main(["data", "build", "foldoc", "--out", str(out), "--source",
                 str(tmp_path / "absent")]) == 2
    assert "apt-get install dict-foldoc" in capsys.readouterr().err


@requires_foldoc
def test_real_foldoc(tmp_path):
    built = build_foldoc_dataset(tmp_path / "foldoc", seed=0)
    ds = XCDataset.load(built.out)
    assert 8_000 <= ds.num_train <= 8_500 and 1_950 <= ds.num_test <= 2_150
    assert ds.num_test == round(0.2 * (ds.num_train + ds.num_test))
    assert 7_700 <= ds.num_labels <= 8_300
    per_doc = (ds.trn_Y.nnz + ds.tst_Y.nnz) / (ds.num_train + ds.num_test)
    assert 3.8 <= per_doc <= 4.4
    assert np.diff(ds.trn_Y.indptr).min() >= 1 and np.diff(ds.tst_Y.indptr).min() >= 1
    assert ds.tst_filter.nnz > 1_000 and ds.tst_Y.multiply(ds.tst_filter).nnz == 0
    assert "FOLDOC" not in ds.meta.source and "Computing" in ds.meta.source
    texts = ds.trn_texts + ds.tst_texts
    i = texts.index("full-duplex, fdx (communications)")
    Y, row = (ds.trn_Y, i) if i < ds.num_train else (ds.tst_Y, i - ds.num_train)
    got = {ds.lbl_texts[k] for k in Y[row].indices}
    assert {"duplex", "half-duplex, hdx", "bandwidth"} <= got  # {duplex}, {half-duplex}, ...
    assert "full-duplex, fdx" not in got  # no self reference
    assert not any(t.startswith("00-database") for t in texts + ds.lbl_texts)
