"""Hooks: the plugin manager, scoping (a plugin of one backbone never reaches another), the
default hooks' values, levels and their targets, and third-party adapters found through real
``lever.adapters`` entry points."""

from __future__ import annotations

import numpy as np
import pluggy
import pytest
import scipy.sparse as sp
import torch

import lever
from lever.hooks import (
    Level,
    NoAdapterError,
    get_plugin_manager,
    hookimpl,
    installed_adapters,
    scoped_hooks,
)
from lever.loss import (
    SparseTargets,
    levels_bce,
    lever_bce,
    lever_bce_shortlist,
    project_targets,
    soft_targets,
)
from lever.train.params import LeverParams
from lever_adapters.generic.backbone import GenericBackbone, levels_from_output


def test_plugin_manager_loads_the_shipped_adapters_through_entry_points():
    pm = get_plugin_manager()
    assert {"lever.defaults", "generic", "renee", "elias", "cascadexml"} <= set(dict(pm.list_name_plugin()))
    assert isinstance(pm.hook.lever_adapter(classifier=torch.nn.Linear(3, 4)), GenericBackbone)
    assert pm.hook.lever_adapter(classifier=object()) is None
    # the generic adapter is an ordinary entry-point plugin, not part of the core
    assert installed_adapters(get_plugin_manager(load_entry_points=False)) == []


NUMPY_ADAPTER = '''
"""A third party's adapter: classifiers that are not torch modules, for lever.wrap only."""
import torch
from lever.hooks import Level, hookimpl
from lever.train.backbone import Backbone


class NumpyLinear:
    def __init__(self, w):
        self.w = torch.nn.Parameter(torch.as_tensor(w))


class NumpyLinearAdapter(Backbone):
    name = "numpy-linear"

    @classmethod
    def accepts(cls, classifier):
        return isinstance(classifier, NumpyLinear)

    def training_levels(self, module, inputs, targets, hooks):
        return [Level(inputs @ module.w)]


@hookimpl
def lever_adapter(classifier):
    return NumpyLinearAdapter() if NumpyLinearAdapter.accepts(classifier) else None
'''


def test_third_party_adapter_is_found_through_its_entry_point(install_plugin):
    install_plugin("lever_numpy_plugin", NUMPY_ADAPTER)
    pm = get_plugin_manager()
    assert "lever_numpy_plugin (lever-toy 0.3)" in installed_adapters(pm)
    from lever_numpy_plugin import NumpyLinear

    clf = NumpyLinear(np.zeros((3, 4), dtype=np.float32))
    model = lever.wrap(clf, plugin_manager=pm)
    assert model.adapter.name == "numpy-linear"
    y = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 1, 0, 0]], dtype=np.float32))
    loss = model.loss(torch.ones(2, 3), [0, 1], y)
    loss.backward()
    assert loss.item() == pytest.approx(np.log(2))  # zero logits: BCE is log 2 per entry
    # ∂/∂w of mean BCE at z = 0: xᵀ(σ(0) − y) / (B·L)
    expect = torch.ones(2, 3).T @ (0.5 - torch.as_tensor(y.toarray())) / 8
    torch.testing.assert_close(clf.w.grad, expect)
    # without the entry points the same classifier is refused, naming what is installed
    with pytest.raises(NoAdapterError, match=r"NumpyLinear.*installed adapters: none"):
        lever.wrap(clf, plugin_manager=get_plugin_manager(load_entry_points=False))


def test_a_misspelt_hook_is_an_error_when_plugins_load(install_plugin):
    install_plugin("lever_typo_plugin", "from lever.hooks import hookimpl\n\n"
                   "@hookimpl\ndef lever_los(levels, targets, params):\n    return None\n")
    with pytest.raises(pluggy.PluginValidationError, match="lever_los"):
        get_plugin_manager()


class _ZeroLossFor:
    """A plugin owning backbone ``name`` whose lever_loss returns 0 and counts its calls."""

    def __init__(self, name: str):
        self.name, self.calls = name, []

    @hookimpl
    def lever_register_backbones(self):
        return {self.name: GenericBackbone}

    @hookimpl
    def lever_loss(self, levels, backbone):
        self.calls.append(backbone)
        return levels[0].logits.sum() * 0


def _one_loss(hooks) -> float:
    t = soft_targets([0], sp.csr_matrix(np.ones((1, 3), dtype=np.float32)))
    return float(hooks.lever_loss(levels=[Level(torch.ones(1, 3))], targets=[t], params=LeverParams().validate().loss_params("mean")))


def test_a_backbone_plugin_changes_its_own_backbone_only():
    pm = get_plugin_manager(load_entry_points=False)
    plugin = _ZeroLossFor("a")
    pm.register(plugin, name="plugin-a")
    assert _one_loss(scoped_hooks(pm, "a")) == 0 and plugin.calls == ["a"]
    expect = float(lever_bce(torch.ones(1, 3), soft_targets([0], sp.csr_matrix(np.ones((1, 3))))))
    assert _one_loss(scoped_hooks(pm, "b")) == pytest.approx(expect)  # default for backbone b
    assert plugin.calls == ["a"]  # never called for b
    assert scoped_hooks(pm, "a").overridden("lever_loss")
    assert not scoped_hooks(pm, "b").overridden("lever_loss")


def test_a_plugin_without_backbones_modifies_every_backbone_and_is_told_which():
    seen = []

    class Modifier:
        @hookimpl
        def lever_loss(self, levels, backbone):
            seen.append(backbone)
            return levels[0].logits.sum() * 0

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(Modifier(), name="modifier")
    assert _one_loss(scoped_hooks(pm, "a")) == 0 and _one_loss(scoped_hooks(pm, "b")) == 0
    assert seen == ["a", "b"]


def test_default_teacher_rows_and_targets():
    pm = get_plugin_manager(load_entry_points=False)
    hooks = scoped_hooks(pm, None)
    soft = sp.csr_matrix(np.array([[0.9, 0, 0], [0, 0.4, 0.6], [0.2, 0, 0]], dtype=np.float32))
    rows = hooks.lever_teacher_rows(row_ids=np.array([2, 1]), soft_labels=soft)
    np.testing.assert_array_equal(rows.toarray(), soft.toarray()[[2, 1]])
    soft_labels = lever.SoftLabels.from_csr(soft, {"num_docs": 0})
    rows2 = hooks.lever_teacher_rows(row_ids=np.array([2, 1]), soft_labels=soft_labels)
    np.testing.assert_array_equal(rows2.toarray(), rows.toarray())
    assert hooks.lever_teacher_rows(row_ids=np.array([0]), soft_labels=None) is None
    y = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32))
    t = hooks.lever_targets(
        row_ids=np.array([2, 1]), y_rows=y, soft_rows=rows, params=LeverParams(lam=0.5).validate().loss_params("sum"), label_lam=None
    )
    torch.testing.assert_close(t.to_dense(), torch.tensor([[0.6, 0, 0], [0, 0.2, 0.8]]))


def test_default_shortlist_forces_positives_then_teacher_labels():
    # row 0: positive 5 has the lowest model score, teacher labels 7 (0.9) and 2 (0.3)
    targets = SparseTargets(
        torch.tensor([0, 0, 0]), torch.tensor([5, 7, 2]), torch.tensor([0.5, 0.45, 0.15]), (1, 10),
        positive=torch.tensor([True, False, False]),
    )
    cand = torch.tensor([[0, 1, 2, 3, 5, 7, 9]])
    scores = torch.tensor([[4.0, 3.0, -1.0, 2.0, -9.0, -5.0, 1.0]])
    hooks = scoped_hooks(get_plugin_manager(load_entry_points=False), None)
    keys = hooks.lever_shortlist(cand_ids=cand, cand_scores=scores, targets=targets, level=None)
    order = cand[0, keys[0].argsort(descending=True)].tolist()
    assert order == [5, 7, 2, 0, 1, 3, 9]
    assert torch.equal(scores, torch.tensor([[4.0, 3.0, -1.0, 2.0, -9.0, -5.0, 1.0]]))  # untouched


def test_default_label_index_adds_weighted_teacher_scores():
    hooks = scoped_hooks(get_plugin_manager(load_entry_points=False), None)
    y = sp.csr_matrix(np.array([[1, 0], [0, 1]], dtype=np.float32))
    soft = sp.csr_matrix(np.array([[0.5, 0.8], [0, 0.5]], dtype=np.float32))
    m = hooks.lever_label_index(y=y, soft=soft, weight=0.5)
    np.testing.assert_allclose(m.toarray(), [[1.25, 0.4], [0, 1.25]])
    np.testing.assert_array_equal(hooks.lever_label_index(y=y, soft=None, weight=0.5).toarray(), y.toarray())


def test_targets_project_to_clusters_as_the_max_of_their_members():
    # labels 0,1 -> cluster 0; labels 2,3 -> cluster 1; label 4 in no cluster
    t = SparseTargets(
        torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 1, 1, 3, 4]),
        torch.tensor([0.3, 0.9, 0.2, 0.6, 1.0]), (2, 5),
        positive=torch.tensor([True, False, False, True, True]),
    )
    c = project_targets(t, torch.tensor([0, 0, 1, 1, -1]), 2)
    torch.testing.assert_close(c.to_dense(), torch.tensor([[0.9, 0.0], [0.2, 0.6]]))
    assert c.shape == (2, 2)
    pos = {(int(r), int(k)) for r, k, p in zip(c.rows, c.cols, c.positive) if p}
    assert pos == {(0, 0), (1, 1)}


def test_the_default_loss_sums_the_levels():
    t_lbl = soft_targets([0, 1], sp.csr_matrix(np.eye(2, 4, dtype=np.float32)))
    t_clu = project_targets(t_lbl, torch.tensor([0, 0, 1, 1]), 2)
    z_clu, z_lbl = torch.randn(2, 2), torch.randn(2, 3)
    ids = torch.tensor([[0, 1, 3], [1, 2, -1]])
    levels = [Level(z_clu, space=0), Level(z_lbl, ids)]
    expect = lever_bce(z_clu, t_clu, "sum") + lever_bce_shortlist(z_lbl, ids, t_lbl, "sum")
    torch.testing.assert_close(levels_bce(levels, [t_clu, t_lbl], "sum"), expect)
    with pytest.raises(ValueError, match="one per level"):
        levels_bce(levels, [t_lbl], "sum")


def test_generic_adapter_reads_dense_shortlist_and_level_outputs_and_rejects_others():
    t = soft_targets([0, 1], sp.csr_matrix(np.eye(2, 5, dtype=np.float32)))
    assert not levels_from_output(torch.zeros(2, 5), t, "M")[0].is_shortlist
    out = levels_from_output((torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long)), t, "M")
    assert out[0].is_shortlist and out[0].is_labels
    two = [Level(torch.zeros(2, 2), space=0), Level(torch.zeros(2, 5))]
    assert levels_from_output(two, t, "M") == two
    with pytest.raises(ValueError, match="over 4 labels but the targets have 5"):
        levels_from_output(torch.zeros(2, 4), t, "M")
    with pytest.raises(TypeError, match="returned dict"):
        levels_from_output({"logits": torch.zeros(2, 5)}, t, "M")
    with pytest.raises(ValueError, match="integer ids"):
        levels_from_output((torch.zeros(2, 3), torch.zeros(2, 3)), t, "M")
