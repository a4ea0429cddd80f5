"""``lever.wrap``: train any classifier with the LEVER loss, predict with the classifier unchanged.

::

    model = lever.wrap(classifier, soft_labels, lam=0.5, mode="mix")
    # or one λ per label, λ_l = n_l / (n_l + κ), counted from the training documents' labels:
    model = lever.wrap(classifier, soft_labels, kappa=4.0, label_counts=Y_train_docs)
    for inputs, row_ids in loader:                        # row_ids: dataset rows of the batch
        loss = model.loss(inputs, row_ids, Y[row_ids])    # Y: training ground truth (CSR)
        loss.backward(); optimizer.step(); optimizer.zero_grad()

The adapter (the same :class:`lever.train.backbone.Backbone` class ``lever train`` uses for this
model family) is chosen through the ``lever_adapter`` hook; targets are built by the
``lever_teacher_rows`` and ``lever_targets`` hooks and the loss by ``lever_loss``, all scoped to
that adapter (``lever.hooks.ScopedHooks``). Calling the
wrapped model without targets is calling the classifier, in train and eval mode alike, and
``state_dict()`` is the classifier's own (same keys, same tensors), so weights saved from either
load into the other and inference costs nothing extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pluggy
import scipy.sparse as sp
import torch
from torch import nn

from lever.hooks.manager import get_plugin_manager, scoped_hooks, select_adapter
from lever.loss import LeverLossParams, SparseTargets, label_counts, label_lambda
from lever.train.params import LeverParams

CLASSIFIER = "classifier"


class LeverWrapped(nn.Module):
    """A classifier plus what it needs to train with the LEVER loss (see :func:`wrap`)."""

    def __init__(
        self,
        classifier: nn.Module,
        adapter: Any,  # a lever.train.backbone.Backbone instance
        soft_labels: Any,
        params: LeverLossParams,
        plugin_manager: pluggy.PluginManager,
        label_lam: np.ndarray | None = None,
    ):
        super().__init__()
        self.classifier = classifier
        self.adapter = adapter
        self.soft_labels = soft_labels
        self.params = params
        self.plugin_manager = plugin_manager
        self.hooks = scoped_hooks(plugin_manager, adapter.name)
        adapter.attach(self.hooks, params)
        self.label_lam = label_lam  # per-label λ (kappa set), else None
        # Saved weights are the classifier's, so loading must accept its bare keys too (also when
        # this module sits inside a bigger one and torch recurses with a prefix).
        self.register_load_state_dict_pre_hook(_add_classifier_prefix)

    # -- inference: exactly the classifier ----------------------------------------------------
    def forward(self, *args: Any, row_ids: Any = None, y_rows: Any = None, targets: Any = None, **kwargs: Any):
        """Without ``row_ids``/``targets``: ``classifier(*args, **kwargs)``, untouched. With them:
        the LEVER loss of the one positional argument ``inputs`` (see :meth:`loss`); going
        through ``forward`` keeps DistributedDataParallel's gradient synchronisation working."""
        if row_ids is None and targets is None:
            return self.classifier(*args, **kwargs)
        if len(args) != 1 or kwargs:
            raise TypeError("LEVER training call: pass exactly one positional `inputs` and row_ids/y_rows or targets")
        if targets is None:
            targets = self.targets(row_ids, y_rows)
        return self.adapter.training_loss(self.classifier, args[0], targets, self.params, self.hooks)

    # -- training -------------------------------------------------------------------------------
    def loss(
        self,
        inputs: Any,
        row_ids: Any = None,
        y_rows: sp.spmatrix | None = None,
        targets: SparseTargets | None = None,
    ) -> torch.Tensor:
        """The LEVER loss of one batch: ``inputs`` go to the classifier as in the plain loop,
        ``row_ids`` are the batch's dataset rows (indices into the soft labels), ``y_rows`` their
        ground truth (CSR, B × L). Pass prebuilt ``targets`` (:meth:`targets`, e.g. from a
        DataLoader worker) instead of ``row_ids``/``y_rows`` to skip building them here."""
        if targets is None and (row_ids is None or y_rows is None):
            raise TypeError("loss(inputs, row_ids, y_rows) needs row_ids and y_rows, or targets=")
        return self(inputs, row_ids=row_ids, y_rows=y_rows, targets=targets)

    def targets(self, row_ids: Any, y_rows: sp.spmatrix) -> SparseTargets:
        """The batch's sparse LEVER targets (CPU; picklable result)."""
        ids = np.asarray(row_ids.cpu() if isinstance(row_ids, torch.Tensor) else row_ids, dtype=np.int64)
        hooks = self.hooks
        soft_rows = hooks.lever_teacher_rows(row_ids=ids, soft_labels=self.soft_labels)
        targets = hooks.lever_targets(
            row_ids=ids, y_rows=y_rows, soft_rows=soft_rows, params=self.params, label_lam=self.label_lam
        )
        if targets is None:
            raise RuntimeError("no lever_targets implementation returned targets")
        return targets

    # -- weights: exactly the classifier's ------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.classifier.state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"adapter={self.adapter.name!r}, lam={self.params.lam}, kappa={self.params.kappa}, mode={self.params.mode!r}, "
            f"reduction={self.params.reduction!r}, teacher={'yes' if self.soft_labels is not None else 'no'}"
        )


def _add_classifier_prefix(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    inner = prefix + CLASSIFIER + "."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)


def wrap(
    classifier: nn.Module,
    soft_labels: Any = None,
    lam: float = 0.5,
    mode: str = "mix",
    reduction: str = "mean",
    plugin_manager: pluggy.PluginManager | None = None,
    *,
    kappa: float | None = None,
    label_counts: Any = None,
) -> LeverWrapped:
    """Wrap ``classifier`` so it trains with the LEVER loss.

    ``soft_labels``: a ``lever.SoftLabels`` (rows indexed by dataset row id), a scipy matrix of
    the same layout, or ``None`` (plain BCE). ``lam``/``mode``/``kappa``: see
    :class:`lever.train.params.LeverParams` (validated there, as for ``lever train``);
    ``reduction``: ``sum`` or ``mean`` of the per-entry BCE. ``kappa``: one λ per label, ``λ_l = n_l / (n_l + κ)``
    (``lam`` is then unused), where ``label_counts`` gives ``n_l``: the training ground truth of
    the documents (scipy matrix, documents × L; label-as-datapoint rows left out) or the counts
    themselves (length L). ``plugin_manager`` defaults to
    :func:`lever.hooks.get_plugin_manager` (built-ins plus installed adapters). Raises
    :class:`lever.hooks.NoAdapterError` naming the installed adapters if none accepts the classifier.
    """
    params = LeverParams(lam=lam, kappa=kappa, mode=mode).validate("lever.wrap").loss_params(reduction)
    label_lam = _label_lam(kappa, label_counts)
    if soft_labels is not None and not (hasattr(soft_labels, "rows") or sp.issparse(soft_labels)):
        raise TypeError(
            f"soft_labels: expected lever.SoftLabels, a scipy sparse matrix or None, got {type(soft_labels).__name__}"
        )
    pm = plugin_manager if plugin_manager is not None else get_plugin_manager()
    adapter = select_adapter(classifier, pm)
    return LeverWrapped(classifier, adapter, soft_labels, params, pm, label_lam)


def _label_lam(kappa: float | None, counts: Any) -> np.ndarray | None:
    if kappa is None:
        if counts is not None:
            raise TypeError("wrap: label_counts is given but kappa is not; pass kappa= for per-label λ")
        return None
    if counts is None:
        raise TypeError(
            "wrap: kappa needs label_counts= (the training documents' ground truth, documents × L, "
            "or the per-label positive counts n_l) to form λ_l = n_l / (n_l + κ)"
        )
    return label_lambda(label_counts(counts) if sp.issparse(counts) else counts, kappa)

