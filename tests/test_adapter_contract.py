"""The adapter contract through ``lever train``: a ``lever_loss`` plugin installed through a real
entry point reaches the generic backbone's step and Renée's fused step, and a plugin of one
backbone never affects another."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lever.cli import main

RECORDING_LOSS = '''
"""Records which backbone each lever_loss call served, and returns the default loss."""
import json, os
from lever.hooks import hookimpl
from lever.loss import levels_bce


@hookimpl
def lever_loss(levels, targets, params, backbone):
    with open(os.environ["LEVER_TEST_LOSS_LOG"], "a") as f:
        f.write(json.dumps([backbone, len(levels)]) + "\\n")
    return levels_bce(levels, targets, params.reduction)
'''

OTHER_BACKBONE = '''
"""Owns backbone "other"; its lever_loss must never run for any other backbone."""
from lever.hooks import hookimpl
from lever_adapters.generic.backbone import GenericBackbone


class OtherBackbone(GenericBackbone):
    name = "other"


@hookimpl
def lever_register_backbones():
    return {"other": OtherBackbone}


@hookimpl
def lever_loss(levels, targets, params):
    raise AssertionError("the 'other' plugin's lever_loss ran for another backbone")
'''


def _train(data, out, cache, backbone, *extra) -> None:
    args = ["train", "--data", str(data), "--backbone", backbone, "--out", str(out),
            "--cache-dir", str(cache), "--epochs", "1", "--batch-size", "50", "--seed", "2",
            "--no-label-rows", "--no-progress", *extra]
    assert main(args) == 0


BACKBONE_FLAGS = {
    "generic": lambda enc: ["--bp", f"encoder={enc}"],
    "renee": lambda enc: ["--bp", "encoder.kind=tfidf", "--bp", "encoder.tfidf_min_df=1",
                          "--bp", "encoder.dropout=0.0", "--warmup-steps", "1"],
}


@pytest.mark.parametrize("backbone", sorted(BACKBONE_FLAGS))
def test_a_loss_hook_override_reaches_lever_train(
    backbone, tiny_xc_dir, tiny_bert_dir, tmp_path, install_plugin, monkeypatch
):
    flags = BACKBONE_FLAGS[backbone](tiny_bert_dir)
    _train(tiny_xc_dir, tmp_path / "plain", tmp_path / "cache", backbone, *flags)
    log = tmp_path / "loss_calls.jsonl"
    monkeypatch.setenv("LEVER_TEST_LOSS_LOG", str(log))
    install_plugin("lever_recording_loss", RECORDING_LOSS)
    _train(tiny_xc_dir, tmp_path / "hooked", tmp_path / "cache", backbone, *flags)

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [[backbone, 1]] * 4  # 200 rows / 50: every micro-batch, one dense level
    # The hook returned the default loss, so the hooked run trains the same model (Renée: the
    # autograd path through the hook against its fused hand-written backward).
    plain = load_file(str(tmp_path / "plain" / "model.safetensors"))
    hooked = load_file(str(tmp_path / "hooked" / "model.safetensors"))
    assert plain.keys() == hooked.keys()
    for key in plain:
        torch.testing.assert_close(hooked[key], plain[key], rtol=1e-4, atol=1e-5)


def test_a_plugin_for_one_backbone_does_not_affect_another(
    tiny_xc_dir, tiny_bert_dir, tmp_path, install_plugin
):
    install_plugin("lever_other_backbone", OTHER_BACKBONE)
    _train(tiny_xc_dir, tmp_path / "generic", tmp_path / "cache", "generic",
           "--bp", f"encoder={tiny_bert_dir}")
    assert (tmp_path / "generic" / "metrics.json").exists()
    with pytest.raises(AssertionError, match="'other' plugin's lever_loss"):
        _train(tiny_xc_dir, tmp_path / "other", tmp_path / "cache", "other",
               "--bp", f"encoder={tiny_bert_dir}")


def test_renee_refuses_a_loss_hook_it_cannot_honour():
    from lever.hooks import ScopedHooks
    from lever_adapters.renee.model import OvAClassifier
    from lever_adapters.renee.train import ReneeBackbone

    class Shard(torch.nn.Module):  # label shard 0 of 2: no process holds every label's logit
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Identity()
            self.classifier = OvAClassifier(40, 4, world_size=2, rank=0)  # labels 0..31

    with pytest.raises(ValueError, match="label-sharded.*label_shards=false"):
        ReneeBackbone().training_levels(Shard(), torch.zeros(2, 4), None, ScopedHooks(None, "renee"))
