"""Renée's label-sharded classifier on 2 processes (torchrun, gloo) trains exactly like one
process: same losses, same classifier (gathered from its shards), same encoder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lever.data import synthetic_dataset, write_dataset

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
