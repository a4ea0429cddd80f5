"""Renée's label-sharded classifier on 2 processes (torchrun, gloo) trains exactly like one
process: same losses, same classifier (gathered from its shards), same encoder; standalone and
inside ``lever train`` (collective evaluation, gathered export, ``lever predict``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from lever.data import XCDataset, synthetic_dataset, write_dataset
from lever.train.backbone import BuildContext
from lever_adapters.renee.train import ReneeBackbone

WORKER = Path(__file__).with_name("renee_sharded_worker.py")


def _run(cmd: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


@pytest.mark.distributed
def test_two_label_shards_equal_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which(
        "torchrun"
    )
    if torchrun is None:
        pytest.skip("torchrun not found")
    data = tmp_path / "data"
    write_dataset(data, **synthetic_dataset(num_train=120, num_test=30, num_labels=30))
    _run([sys.executable, str(WORKER), str(data), str(tmp_path / "one.safetensors"), "4"], tmp_path)
    _run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--standalone",
            str(WORKER),
            str(data),
            str(tmp_path / "two.safetensors"),
            "4",
        ],
        tmp_path,
    )
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert set(one) == set(two) == {"losses", "classifier.weight", "head.parts.bag.bag.weight"}
    assert one["classifier.weight"].shape == (30, 16)  # 30 labels = shards of 16 and 14 on 2 ranks
    assert not torch.equal(one["losses"][0], one["losses"][-1])  # it trained
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)


def _renee_args(data, out, soft, batch_size, *extra):
    return [
        "train",
        "--data",
        str(data),
        "--backbone",
        "renee",
        "--out",
        str(out),
        "--soft-labels",
        str(soft),
        "--batch-size",
        str(batch_size),
        "--epochs",
        "2",
        "--seed",
        "5",
        "--warmup-steps",
        "2",
        "--eval-k",
        "10",  # > the 8 labels of rank 1's shard: its top-k list is padded before the merge
        "--no-progress",
        "--bp",
        "encoder.kind=tfidf",
        "--bp",
        "encoder.dropout=0",  # ranks draw different dropout masks than one process would
        "--bp",
        "encoder.bag_dim=16",
        "--bp",
        "encoder.tfidf_min_df=1",
        "--bp",
        "clf_micro_batch=5",
        "--bp",
        "loss_every=1",
        *extra,
    ]


@pytest.mark.distributed
def test_lever_train_label_shards_under_torchrun_equals_one_process(tmp_path, capsys):
    """``lever train --bp label_shards=true`` on 2 processes (global batch 2 × 16) trains,
    evaluates and exports what one unsharded process does with batch 32, and ``lever predict``
    (one process) loads its gathered weights."""
    from test_train_cli import _soft_labels

    from lever.cli import main

    data = tmp_path / "data"
    # 185 docs + 40 label rows = 225 = 7 × 32 + 1: the last global batch has one row, so rank 1's
    # micro-batch is empty and the sharded step must still join the collectives.
    write_dataset(data, **synthetic_dataset(185, 60, 40, seed=0))
    soft = _soft_labels(data, tmp_path / "soft.npz")
    assert main(_renee_args(data, tmp_path / "one", soft, 32)) == 0
    two = tmp_path / "two"
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "lever",
            *_renee_args(data, two, soft, 16, "--bp", "label_shards=true"),
        ],
        tmp_path,
    )

    # Each rank checkpoints its own classifier shard (labels 0..31 and 32..39).
    latest = two / "checkpoints" / (two / "checkpoints" / "latest").read_text().strip()
    shards = [load_file(latest / f"model.rank{r}.safetensors") for r in (0, 1)]
    assert [s["classifier.weight"].shape[0] for s in shards] == [32, 8]

    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(two / "model.safetensors")
    assert w1.keys() == w2.keys()
    assert w2["classifier.weight"].shape == (40, 16)  # gathered into the single-process layout
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=1e-5, msg=key)
    torch.testing.assert_close(
        torch.cat([s["classifier.weight"] for s in shards]), w2["classifier.weight"]
    )

    log1, log2 = (
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (tmp_path / "one", two)
    )
    assert [r["loss"] for r in log2] == pytest.approx([r["loss"] for r in log1], rel=1e-6)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m1.keys() == m2.keys() and "PSP@10" in m2
    for key in m1:
        assert m2[key] == pytest.approx(m1[key], abs=1e-6), key

    # One process predicts with the exported weights; its ranking is the sharded evaluation's.
    pred = tmp_path / "pred.npz"
    argv = ["predict", "--run", str(two), "--out", str(pred), "--k", "40", "--no-progress"]
    assert main(argv) == 0
    ds = XCDataset.load(data)
    got = sp.load_npz(pred).tocsr()
    assert got.shape == (60, 40) and got.multiply(ds.tst_filter).nnz == 0
    capsys.readouterr()
    assert main(["eval", "--data", str(data), "--pred", str(pred), "--k", "10", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated.keys() == m2.keys()
    for key, value in evaluated.items():
        assert m2[key] == pytest.approx(value, abs=1e-6), key


def test_label_shards_refuse_gradient_clipping(tmp_path):
    from lever.train import TrainParams
    from lever.train.distributed import DistEnv
    from lever.train.params import OptimParams

    data = tmp_path / "data"
    write_dataset(data, **synthetic_dataset(30, 10, 20, seed=0))
    ds = XCDataset.load(data)
    backbone = ReneeBackbone({"encoder": {"kind": "tfidf"}, "label_shards": True})
    params = TrainParams(data=str(data), out=str(tmp_path / "run"), optim=OptimParams(max_grad_norm=1.0))
    ctx = BuildContext(ds, None, params, torch.device("cpu"), DistEnv(0, 2), tmp_path)
    with pytest.raises(ValueError, match="max_grad_norm"):
        backbone.build(ctx)
