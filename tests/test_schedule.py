"""Learning-rate schedules (lever.train.schedule), and CascadeXML's paper preset choosing one."""

from __future__ import annotations

import pytest

from lever.train.schedule import adam_beta1, lr_factor


def test_warmup_then_cosine_linear_constant():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(99, 100, 10, "constant") == 1.0
    assert adam_beta1(50, 100, 10, "cosine") is None
    with pytest.raises(ValueError, match="one_cycle"):
        lr_factor(50, 100, 10, "step")


def test_one_cycle_rises_stays_and_decays_over_the_last_three_epochs():
    epoch, total = 10, 150  # 15 epochs of 10 steps, warm-up 0 = one epoch
    lrs = [lr_factor(s, total, 0, "one_cycle", epoch) for s in range(total + 1)]
    betas = [adam_beta1(s, total, 0, "one_cycle", epoch) for s in range(total + 1)]
    assert lrs[0] == pytest.approx(0.1) and betas[0] == pytest.approx(0.95)
    assert lrs[5] == pytest.approx(0.55) and betas[5] == pytest.approx(0.90)
    assert all(x == 1.0 for x in lrs[epoch:total - 3 * epoch + 1])
    assert all(b == 0.85 for b in betas[epoch:total - 3 * epoch])
    assert all(a > b for a, b in zip(lrs[total - 3 * epoch:total], lrs[total - 3 * epoch + 1:total + 1]))
    assert lrs[total] == pytest.approx(1e-3) and betas[total] == pytest.approx(0.95)
    # an explicit warm-up replaces the one-epoch default
    assert lr_factor(20, total, 40, "one_cycle", epoch) == pytest.approx(0.55)


def test_cascadexml_paper_preset_defaults_the_paper_loop_and_flags_still_win():
    from lever.train import TrainParams
    from lever.train.loop import resolve_backbone_defaults
    from lever_adapters.cascadexml.train import CascadeXMLBackbone

    base = TrainParams(data="d", backbone="cascadexml", out="o")
    paper = resolve_backbone_defaults(base, CascadeXMLBackbone({"preset": "paper"})).optim
    assert (paper.epochs, paper.batch_size, paper.warmup_steps, paper.schedule) == (15, 64, 0, "one_cycle")
    cpu = resolve_backbone_defaults(base, CascadeXMLBackbone()).optim
    assert (cpu.epochs, cpu.warmup_steps, cpu.schedule) == (8, 20, "cosine")
    given = TrainParams.from_dict({"data": "d", "backbone": "cascadexml", "out": "o",
                                   "optim": {"epochs": 2, "schedule": "linear"}})
    mixed = resolve_backbone_defaults(given, CascadeXMLBackbone({"preset": "paper"})).optim
    assert (mixed.epochs, mixed.schedule, mixed.batch_size) == (2, "linear", 64)
