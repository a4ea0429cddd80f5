"""``TrainParams`` nested once (``lever``, ``optim``, ``run``): the config.json round trip, old flat
configs, errors naming the nested field, flags into nested fields, and λ checked once."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.torch import load_file

from lever.cli import build_parser
from lever.train.auto import AutoParams
from lever.train.params import LeverParams, OptimParams, RunParams, TrainParams
from lever.utils.params import ParamsError

# A run's config.json as lever wrote it before the settings were nested (one flat object).
OLD_FLAT = {
    "amp": True,
    "auto": {"calibrations": ["platt"], "epochs": None, "kappas": [1.0, 4.0], "lams": [0.5],
             "max_p5_drop": 0.3, "tau_d": [5, 15], "teacher": None, "val_fraction": 0.1,
             "val_max_docs": 5000},
    "backbone": "renee",
    "backbone_params": {"encoder": {"kind": "tfidf"}, "lr_clf": 1.0},
    "batch_size": 64,
    "cache_dir": "/runs/cache",
    "checkpoint_every_steps": 10,
    "data": "/runs/ds",
    "device": "auto",
    "epochs": 2,
    "eval_every": 1,
    "eval_k": 5,
    "grad_accum": 1,
    "group_lr": {"clf": 0.5},
    "kappa": 4.0,
    "label_rows": True,
    "lam": 0.5,
    "lr": None,
    "max_grad_norm": 0.0,
    "mode": "mix",
    "num_workers": 0,
    "out": "/runs/renee",
    "schedule": "cosine",
    "seed": 7,
    "soft_labels": "/runs/soft.npz",
    "warmup_steps": 20,
    "weight_decay": None,
}


def _nested_equivalent() -> TrainParams:
    return TrainParams(
        data="/runs/ds",
        backbone="renee",
        out="/runs/renee",
        backbone_params={"encoder": {"kind": "tfidf"}, "lr_clf": 1.0},
        lever=LeverParams(
            soft_labels="/runs/soft.npz", lam=0.5, kappa=4.0, mode="mix", label_rows=True,
            auto=AutoParams(kappas=[1.0, 4.0]),
        ),
        optim=OptimParams(epochs=2, batch_size=64, group_lr={"clf": 0.5}, warmup_steps=20, schedule="cosine"),
        run=RunParams(checkpoint_every_steps=10, cache_dir="/runs/cache", seed=7),
    )


def test_config_json_is_nested_and_round_trips(tmp_path):
    params = _nested_equivalent().validate()
    params.save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert sorted(saved) == ["backbone", "backbone_params", "data", "lever", "optim", "out", "run"]
    assert saved["lever"]["lam"] == 0.5 and saved["optim"]["epochs"] == 2 and saved["run"]["seed"] == 7
    assert saved["lever"]["auto"]["kappas"] == [1.0, 4.0]
    again = TrainParams.load(tmp_path / "config.json")
    assert again == params
    assert isinstance(again.lever, LeverParams) and isinstance(again.lever.auto, AutoParams)


def test_old_flat_config_loads_to_the_same_params(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OLD_FLAT))
    old = TrainParams.load(tmp_path / "config.json")
    assert old == _nested_equivalent()
    assert old.validate() == _nested_equivalent().validate()
    # Mixed is fine while no field is given twice; twice is an error naming both spellings.
    mixed = {**OLD_FLAT, "lever": {"lam": 0.3}}
    with pytest.raises(ParamsError, match=r"\['lam'\] given both at the top level .* keep only lever\.lam"):
        TrainParams.from_dict(mixed, source="cfg.json")


def test_bad_nested_fields_name_the_field_and_what_was_expected(tmp_path):
    base = {"data": "d", "out": "o"}
    cases = [
        ({"lever": {"lam": 1.5}}, r"TrainParams\.lever\.lam=1\.5: expected a number in \[0, 1\] or 'auto'"),
        ({"lever": {"mode": "blend"}}, r"TrainParams\.lever\.mode='blend': expected one of \('mix', 'augment'\)"),
        ({"lever": {"kappa": 1.0, "mode": "augment"}}, r"TrainParams\.lever\.kappa=1\.0: expected None with mode 'augment'"),
        ({"lever": {"lam": "auto", "auto": {"val_fraction": 2.0}}}, r"TrainParams\.lever\.auto\.val_fraction=2\.0"),
        ({"optim": {"epochs": 0}}, r"TrainParams\.optim\.epochs=0: expected an integer >= 1"),
        ({"optim": {"schedule": "step"}}, r"TrainParams\.optim\.schedule='step'"),
        ({"run": {"device": "gpu"}}, r"TrainParams\.run\.device='gpu': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"run": {"num_workers": -1}}, r"TrainParams\.run\.num_workers=-1: expected an integer >= 0"),
    ]
    for change, message in cases:
        with pytest.raises(ParamsError, match=message):
            TrainParams.from_dict({**base, **change}).validate()
    # an unknown key inside a part names the file and the part
    (tmp_path / "p.json").write_text(json.dumps({**base, "lever": {"lambda": 0.5}}))
    with pytest.raises(ParamsError, match=r"p\.json\.lever: unknown field\(s\) \['lambda'\] for LeverParams"):
        TrainParams.load(tmp_path / "p.json")


def test_cli_flags_map_into_the_nested_fields(tmp_path):
    from lever.hooks.manager import get_plugin_manager
    from lever.train.cli import resolve_params

    (tmp_path / "p.json").write_text(json.dumps({"lever": {"mode": "augment"}, "optim": {"epochs": 9}}))
    args = build_parser().parse_args([
        "train", "--params", str(tmp_path / "p.json"), "--data", "d", "--out", "o",
        "--soft-labels", "s.npz", "--lam", "0.25", "--no-label-rows", "--epochs", "3",
        "--batch-size", "16", "--lr", "0.1", "--group-lr", "head=0.5", "--no-amp", "--seed", "4",
        "--device", "cpu", "--eval-k", "3", "--auto", "lams=[0.2]",
    ])
    p = resolve_params(args, get_plugin_manager())
    assert p.lever == LeverParams(soft_labels="s.npz", lam=0.25, mode="augment", label_rows=False,
                                  auto=AutoParams(lams=[0.2]))
    assert (p.optim.epochs, p.optim.batch_size, p.optim.lr, p.optim.group_lr, p.optim.amp) == (
        3, 16, 0.1, {"head": 0.5}, False)
    assert (p.run.seed, p.run.device, p.run.eval_k) == (4, "cpu", 3)
    assert p.optim.warmup_steps == 0  # unset: the generic backbone's default filled in


def test_lam_is_checked_once_not_per_batch(monkeypatch):
    """Settings validated by LeverParams are not checked again when batches are built, through
    the table or through the target hooks."""
    import lever.loss
    from lever.hooks.manager import get_plugin_manager
    from lever.train.rows import BatchBuilder, TrainRows

    y = sp.csr_matrix(np.eye(4, 3, dtype=np.float32))
    soft = sp.csr_matrix(np.full((4, 3), 0.5, dtype=np.float32))
    rows = TrainRows(Y=y, num_docs=4, soft=soft)
    loss_params = LeverParams(lam=0.25).validate().loss_params("sum")

    def forbidden(*args):
        raise AssertionError("λ re-checked while building a batch")

    monkeypatch.setattr(lever.loss, "lever_settings_error", forbidden)
    table = BatchBuilder(rows, lambda ids: None, loss_params, get_plugin_manager(False))
    assert table.table is not None
    hooks = BatchBuilder(rows, lambda ids: None, loss_params, get_plugin_manager(False))
    hooks.table = None  # the per-batch hook path (what a plugin implementing lever_targets gets)
    for builder in (table, hooks):
        t = builder(np.array([2, 0]), 2).targets.to_dense().numpy()
        np.testing.assert_allclose(t, [[0.375, 0.375, 0.625], [0.625, 0.375, 0.375]])
    with pytest.raises(AssertionError, match="re-checked"):  # and the check is real where it runs
        lever.loss.soft_targets([0], y[:1], lam=0.5)


def test_a_run_folder_with_an_old_flat_config_resumes_and_predicts(
    tiny_xc_dir, tiny_bert_dir, tmp_path, capsys
):
    from lever.cli import main

    def args(out, *extra):
        return ["train", "--data", str(tiny_xc_dir), "--bp", f"encoder={tiny_bert_dir}",
                "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--epochs", "2",
                "--batch-size", "32", "--seed", "5", "--lam", "0.7", "--no-progress", *extra]

    assert main(args(tmp_path / "straight")) == 0
    assert main(args(tmp_path / "old", "--stop-after-epochs", "1")) == 0
    # the interrupted run folder as the flat-config version of lever left it
    config = tmp_path / "old" / "config.json"
    nested = json.loads(config.read_text())
    flat = {k: v for k, v in nested.items() if k not in ("lever", "optim", "run")}
    for part in ("lever", "optim", "run"):
        flat.update(nested[part])
    config.write_text(json.dumps(flat))
    assert main(args(tmp_path / "old")) == 0  # resumes: the same configuration, spelt flat
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "old" / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    # a changed setting is still refused, named by its nested path
    config.write_text(json.dumps(flat))
    capsys.readouterr()
    assert main(args(tmp_path / "old", "--lam", "0.2")) == 2
    assert "lever.lam: 0.7 -> 0.2" in capsys.readouterr().err
    # lever predict reads the flat config.json of a finished run
    pred = tmp_path / "pred.npz"
    assert main(["predict", "--run", str(tmp_path / "old"), "--out", str(pred), "--k", "3",
                 "--no-progress"]) == 0
    assert sp.load_npz(pred).shape[1] > 0


def test_backbone_params_are_typed_and_checked_per_backbone(capsys):
    from lever.cli import main
    from lever_adapters.generic.backbone import GenericBackbone, GenericParams
    from lever_adapters.renee.params import ReneeParams
    from lever_adapters.renee.train import ReneeBackbone

    assert isinstance(GenericBackbone({"lr": 0.1}).params, GenericParams)
    assert isinstance(ReneeBackbone({"encoder.kind": "tfidf"}).params, ReneeParams)
    with pytest.raises(ParamsError, match=r"backbone_params\.encoder\.kind='tfidff' \(renee\): expected one of"):
        ReneeBackbone({"encoder": {"kind": "tfidff"}})
    with pytest.raises(ParamsError, match=r"backbone_params\.momentum=1\.5 \(renee\): expected a number in \[0, 1\)"):
        ReneeBackbone({"momentum": 1.5})
    with pytest.raises(ParamsError, match=r"backbone_params\.optimizer='lbfgs' \(generic\)"):
        GenericBackbone({"optimizer": "lbfgs"})
    with pytest.raises(TypeError, match="must be a GenericParams"):
        GenericBackbone(ReneeParams())
    # through the CLI: one clear line before anything is built
    assert main(["train", "--backbone", "renee", "--bp", "encoder.kind=tfidff", "--print-params"]) == 2
    assert "backbone_params.encoder.kind='tfidff'" in capsys.readouterr().err
