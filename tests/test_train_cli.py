"""``lever train`` / ``lever predict`` from the command line, and 2-process data parallelism under
torchrun compared with one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from lever.cli import main


def _soft_labels(data_dir, path):
    from lever import XCDataset
    from lever.soft_labels import SoftLabels

    ds = XCDataset.load(data_dir)
    Y = ds.with_label_rows().Y.tocsr().astype(np.float32)
    noise = sp.random(
        Y.shape[0], Y.shape[1], density=0.05, random_state=2, format="csr", dtype=np.float32
    )
    soft = Y.multiply(0.9).maximum(noise * 0.5).tocsr()
    SoftLabels.from_csr(soft, meta={"dataset_fingerprint": ds.fingerprint()}).save(path)
    return path


def _train_args(data, out, encoder, cache, *extra):
    return [
        "train",
        "--data",
        str(data),
        "--backbone",
        "generic",
        "--bp",
        f"encoder={encoder}",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--epochs",
        "2",
        "--seed",
        "5",
        "--no-progress",
        *extra,
    ]


def test_print_params_is_a_loadable_skeleton(tmp_path, capsys):
    from lever.train import TrainParams

    assert main(["train", "--backbone", "generic", "--print-params"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["backbone_params"]["init"] == "label_text" and printed["optim"]["batch_size"] == 256
    printed["optim"]["epochs"] = 7
    (tmp_path / "p.json").write_text(json.dumps(printed))
    assert (
        main(["train", "--config", str(tmp_path / "p.json"), "--lr", "0.1", "--print-config"]) == 0
    )
    again = TrainParams.from_dict(json.loads(capsys.readouterr().out))
    assert again.optim.epochs == 7 and again.optim.lr == 0.1  # file, then flags


def test_bad_backbone_and_params_are_clear_errors(tmp_path, capsys):
    assert main(["train", "--backbone", "nope", "--print-params"]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "p.json").write_text('{"epochs": 1, "epoch": 2}')
    assert main(["train", "--params", str(tmp_path / "p.json"), "--print-params"]) == 2
    assert "epoch" in capsys.readouterr().err


def test_train_then_predict_applies_the_filter(tiny_xc_dir, tiny_bert_dir, tmp_path, capsys):
    from lever import XCDataset

    run = tmp_path / "run"
    assert (
        main(_train_args(tiny_xc_dir, run, tiny_bert_dir, tmp_path / "cache", "--batch-size", "32"))
        == 0
    )
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "PSnDCG@5", "R@5", "C@5"):
        assert 0.0 <= metrics[key] <= 100.0

    ds = XCDataset.load(tiny_xc_dir)
    assert ds.tst_filter is not None and ds.tst_filter.nnz > 0
    k = ds.num_labels  # every admissible label is returned, so only the filter can keep a pair out
    pred_file = tmp_path / "pred.npz"
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--data",
                str(tiny_xc_dir),
                "--out",
                str(pred_file),
                "--k",
                str(k),
                "--batch-size",
                "7",
                "--no-progress",
            ]
        )
        == 0
    )
    pred = sp.load_npz(pred_file).tocsr()
    assert pred.shape == (ds.num_test, ds.num_labels)
    assert pred.multiply(ds.tst_filter).nnz == 0  # a filtered pair never appears
    assert np.all(np.diff(pred.indptr) == k - np.asarray(ds.tst_filter.sum(1)).ravel())
    assert np.all(np.isfinite(pred.data))

    # metrics.json = `lever eval --json` of the run's own predictions: same keys, same numbers
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_xc_dir), "--pred", str(pred_file), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert set(evaluated) == set(metrics)
    for key, value in evaluated.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key

    unfiltered = tmp_path / "raw.npz"
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--out",
                str(unfiltered),
                "--k",
                str(k),
                "--no-filter",
                "--no-progress",
            ]
        )
        == 0
    )
    raw = sp.load_npz(unfiltered).tocsr()
    assert raw.multiply(ds.tst_filter).nnz == ds.tst_filter.nnz  # so the check above can fail


@pytest.mark.distributed
def test_torchrun_two_processes_match_one_process(tiny_xc_dir, tiny_bert_dir, tmp_path):
    soft = _soft_labels(tiny_xc_dir, tmp_path / "soft.npz")
    cache = tmp_path / "cache"
    common = ["--soft-labels", str(soft), "--warmup-steps", "2", "--eval-every", "2"]
    # One process, global batch 32 (this also fills the embedding cache both runs read).
    assert (
        main(
            _train_args(
                tiny_xc_dir, tmp_path / "one", tiny_bert_dir, cache, "--batch-size", "32", *common
            )
        )
        == 0
    )

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "lever",
        *_train_args(
            tiny_xc_dir, tmp_path / "two", tiny_bert_dir, cache, "--batch-size", "16", *common
        ),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    one, two = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["P@1"] == pytest.approx(m2["P@1"], abs=1e-6)
    # both processes' checkpoints exist (each rank saves its own random state)
    latest = (tmp_path / "two" / "checkpoints" / "latest").read_text().strip()
    assert {p.name for p in (tmp_path / "two" / "checkpoints" / latest).glob("rng.rank*.pt")} == {
        "rng.rank0.pt",
        "rng.rank1.pt",
    }


def test_every_train_param_has_a_flag_generated_from_its_field():
    import dataclasses

    from lever.cli import build_parser
    from lever.train.cli import SPECIAL_FIELDS
    from lever.train.params import TrainParams
    from lever.utils.params import Params

    parser = build_parser()
    args = parser.parse_args(
        ["train", "--lam", "auto", "--no-amp", "--mode", "augment", "--kappa", "2", "--epochs", "3"]
    )

    def paths(cls, prefix=""):
        for f in dataclasses.fields(cls):
            part = getattr(cls(), f.name)
            if isinstance(part, Params) and prefix + f.name not in SPECIAL_FIELDS:
                yield from paths(type(part), prefix + f.name + ".")
            else:
                yield prefix + f.name

    every = list(paths(TrainParams))
    assert "lever.lam" in every and "optim.epochs" in every and "run.seed" in every
    for path in every:
        assert path in SPECIAL_FIELDS or hasattr(args, path), path
    got = [getattr(args, k) for k in ("lever.lam", "optim.amp", "lever.mode", "lever.kappa", "optim.epochs")]
    assert got == ["auto", False, "augment", 2.0, 3]
    assert getattr(args, "optim.batch_size") is None and getattr(args, "lever.label_rows") is None
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--schedule", "bogus"])
