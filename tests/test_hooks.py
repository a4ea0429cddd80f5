"""Hookspecs, the plugin manager, the default hooks, and a third-party adapter found through a
real ``lever.adapters`` entry point."""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import lever
from lever.hooks import (
    ClassifierOutput,
    NoAdapterError,
    get_plugin_manager,
    hookimpl,
    installed_adapters,
    specs,
)
from lever.loss import LeverLossParams, SparseTargets, soft_targets
from lever_adapters.generic.plugin import GenericAdapter

HOOKS = [name for name, f in inspect.getmembers(specs, inspect.isfunction) if name.startswith("lever_")]


def test_every_hookspec_says_when_it_runs():
    assert set(HOOKS) >= {
        "lever_adapter",
        "lever_register_backbones",
        "lever_teacher_rows",
        "lever_targets",
        "lever_shortlist",
        "lever_loss",
        "lever_label_index",
    }
    for name in HOOKS:
        doc = inspect.getdoc(getattr(specs, name)) or ""
        assert "Runs" in doc and len(doc) > 200, name


def test_plugin_manager_has_builtins_and_the_shipped_adapters():
    pm = get_plugin_manager()
    names = dict(pm.list_name_plugin())
    assert {"lever.defaults", "generic", "renee", "elias", "cascadexml"} <= set(names)
    assert set(HOOKS) <= {h for h in dir(pm.hook) if h.startswith("lever_")}
    assert isinstance(pm.hook.lever_adapter(classifier=torch.nn.Linear(3, 4)), GenericAdapter)
    assert pm.hook.lever_adapter(classifier=object()) is None
    # the generic adapter is an ordinary entry-point plugin, not part of the core
    assert installed_adapters(get_plugin_manager(load_entry_points=False)) == []


THIRD_PARTY = '''
"""A third party's lever adapter: numpy classifiers that are not torch modules."""
import torch
from lever.hooks import Adapter, ClassifierOutput, hookimpl


class NumpyLinear:
    def __init__(self, w):
        self.w = torch.nn.Parameter(torch.as_tensor(w))


class NumpyLinearAdapter(Adapter):
    name = "numpy-linear"

    def training_output(self, inputs, targets, hook):
        return ClassifierOutput(inputs @ self.classifier.w)


class ToyBackbone:
    name = "toy"


@hookimpl
def lever_adapter(classifier):
    return NumpyLinearAdapter(classifier) if isinstance(classifier, NumpyLinear) else None


@hookimpl
def lever_register_backbones():
    return {"toy": ToyBackbone}
'''


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """An installed distribution (dist-info with entry_points.txt) on sys.path, as pip would leave it."""
    (tmp_path / "lever_toy_plugin.py").write_text(THIRD_PARTY)
    info = tmp_path / "lever_toy-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lever-toy\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[lever.adapters]\ntoy = lever_toy_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("lever_toy_plugin", None)


def test_third_party_adapter_is_found_through_its_entry_point(third_party):
    pm = get_plugin_manager()
    assert "toy" in dict(pm.list_name_plugin())
    assert "toy (lever-toy 0.3)" in installed_adapters(pm)
    from lever_toy_plugin import NumpyLinear, ToyBackbone

    # its backbone is offered to `lever train --backbone`
    offered = {k: v for d in pm.hook.lever_register_backbones() for k, v in (d or {}).items()}
    assert offered["toy"] is ToyBackbone
    # lever.wrap picks its adapter for its classifier type, and trains through it
    clf = NumpyLinear(np.zeros((3, 4), dtype=np.float32))
    model = lever.wrap(clf, plugin_manager=pm)
    assert model.adapter.name == "numpy-linear"
    y = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 1, 0, 0]], dtype=np.float32))
    loss = model.loss(torch.ones(2, 3), [0, 1], y)
    loss.backward()
    assert loss.item() == pytest.approx(np.log(2))  # zero logits: BCE is log 2 per entry
    assert clf.w.grad is not None and clf.w.grad.abs().sum() > 0
    # without the entry points the same classifier is refused, naming what is installed
    with pytest.raises(NoAdapterError, match=r"NumpyLinear.*installed adapters: none"):
        lever.wrap(clf, plugin_manager=get_plugin_manager(load_entry_points=False))


class _OverrideLoss:
    """An adapter plugin overriding one default: a loss that counts its calls."""

    calls = 0

    @hookimpl
    def lever_loss(self, output, targets, params):
        type(self).calls += 1
        return output.logits.sum() * 0


def test_an_adapter_hook_overrides_the_default():
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(_OverrideLoss(), name="override")
    t = soft_targets([0], sp.csr_matrix(np.ones((1, 3), dtype=np.float32)))
    out = pm.hook.lever_loss(output=ClassifierOutput(torch.ones(1, 3)), targets=t, params=LeverLossParams())
    assert out.item() == 0 and _OverrideLoss.calls == 1


def test_default_teacher_rows_and_targets():
    pm = get_plugin_manager(load_entry_points=False)
    soft = sp.csr_matrix(np.array([[0.9, 0, 0], [0, 0.4, 0.6], [0.2, 0, 0]], dtype=np.float32))
    rows = pm.hook.lever_teacher_rows(row_ids=np.array([2, 1]), soft_labels=soft)
    np.testing.assert_array_equal(rows.toarray(), soft.toarray()[[2, 1]])
    soft_labels = lever.SoftLabels.from_csr(soft, {"num_docs": 0})
    rows2 = pm.hook.lever_teacher_rows(row_ids=np.array([2, 1]), soft_labels=soft_labels)
    np.testing.assert_array_equal(rows2.toarray(), rows.toarray())
    assert pm.hook.lever_teacher_rows(row_ids=np.array([0]), soft_labels=None) is None
    y = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32))
    t = pm.hook.lever_targets(
        row_ids=np.array([2, 1]), y_rows=y, soft_rows=rows, params=LeverLossParams(lam=0.5), label_lam=None
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
    pm = get_plugin_manager(load_entry_points=False)
    keys = pm.hook.lever_shortlist(cand_ids=cand, cand_scores=scores, targets=targets, level=None)
    order = cand[0, keys[0].argsort(descending=True)].tolist()
    assert order == [5, 7, 2, 0, 1, 3, 9]
    assert torch.equal(scores, torch.tensor([[4.0, 3.0, -1.0, 2.0, -9.0, -5.0, 1.0]]))  # untouched


def test_default_label_index_adds_weighted_teacher_scores():
    pm = get_plugin_manager(load_entry_points=False)
    y = sp.csr_matrix(np.array([[1, 0], [0, 1]], dtype=np.float32))
    soft = sp.csr_matrix(np.array([[0.5, 0.8], [0, 0.5]], dtype=np.float32))
    m = pm.hook.lever_label_index(y=y, soft=soft, weight=0.5)
    np.testing.assert_allclose(m.toarray(), [[1.25, 0.4], [0, 1.25]])
    assert pm.hook.lever_label_index(y=y, soft=None, weight=0.5) is not None


def test_generic_adapter_reads_dense_and_shortlist_outputs_and_rejects_others():
    t = soft_targets([0, 1], sp.csr_matrix(np.eye(2, 5, dtype=np.float32)))
    adapter = GenericAdapter(torch.nn.Identity())
    assert not adapter.parse_output(torch.zeros(2, 5), t).is_shortlist
    out = adapter.parse_output((torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long)), t)
    assert out.is_shortlist
    with pytest.raises(ValueError, match="over 4 labels but the targets have 5"):
        adapter.parse_output(torch.zeros(2, 4), t)
    with pytest.raises(TypeError, match="returned dict"):
        adapter.parse_output({"logits": torch.zeros(2, 5)}, t)
    with pytest.raises(ValueError, match="integer ids"):
        adapter.parse_output((torch.zeros(2, 3), torch.zeros(2, 3)), t)


def test_hookspec_source_is_self_contained():
    # the specs module imports nothing heavy at runtime, so adapters can import it cheaply
    src = textwrap.dedent(inspect.getsource(specs))
    runtime = src.split("if TYPE_CHECKING:")[0]
    assert "import torch" not in runtime and "import numpy" not in runtime
