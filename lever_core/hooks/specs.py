"""The hooks through which lever and its adapters meet (pluggy, project name ``"lever"``).

Every hook is called with keyword arguments only. ``firstresult`` hooks stop at the first
implementation that returns something other than ``None``; the built-in defaults
(:mod:`lever.hooks.defaults`, and the generic adapter ``lever_adapters.generic.plugin``) are registered ``trylast`` so an adapter
overrides a default simply by implementing the hook and returning a value. Implement hooks with
:data:`hookimpl` and expose the module through the ``lever.adapters`` entry-point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    import torch

    from lever.hooks.adapter import Adapter, ClassifierOutput
    from lever.loss import LeverLossParams, SparseTargets

PROJECT = "lever"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def lever_adapter(classifier: Any) -> Adapter | None:
    """Choose the adapter that trains ``classifier`` with the LEVER loss.

    Runs once, when ``lever.wrap(classifier, ...)`` is called. Return an
    :class:`lever.hooks.adapter.Adapter` for classifiers this plugin knows (by type, or by a
    duck-typed check), otherwise ``None``. Must not modify the classifier: the wrapped model's
    predictions and weights stay exactly the classifier's. The generic adapter answers last, for
    any ``torch.nn.Module`` returning dense logits or a (logits, label ids) shortlist pair.
    """


@hookspec
def lever_register_backbones() -> dict[str, Any]:
    """Backbones this plugin offers to ``lever train --backbone NAME``.

    Runs whenever the training loop or the CLI resolves backbone names. Return ``{name:
    BackboneClass}`` where ``BackboneClass`` subclasses ``lever.train.backbone.Backbone`` (it is
    instantiated with the run's ``backbone_params``). Names must be unique over all installed
    plugins; returning nothing (``None`` or ``{}``) is fine. Must not have side effects.
    """


@hookspec(firstresult=True)
def lever_teacher_rows(row_ids: np.ndarray, soft_labels: Any) -> sp.csr_matrix | None:
    """Attach teacher rows to a batch: the soft labels of dataset rows ``row_ids``.

    Runs on CPU for every training batch, possibly inside a DataLoader worker (keep state
    picklable or memory-mapped). ``soft_labels`` is what the user wrapped with (a
    ``lever.SoftLabels``, a scipy matrix, or ``None``). Return a CSR of shape
    ``(len(row_ids), L)`` with teacher scores in [0, 1], or ``None`` for no teacher. An adapter may
    return a changed copy (e.g. this process's label shard, re-calibrated scores) but must not
    modify ``soft_labels``. Default: ``soft_labels.rows(row_ids)``.
    """


@hookspec(firstresult=True)
def lever_targets(
    row_ids: np.ndarray,
    y_rows: sp.csr_matrix,
    soft_rows: sp.csr_matrix | None,
    params: LeverLossParams,
    label_lam: np.ndarray | None,
) -> SparseTargets | None:
    """Build a batch's sparse training targets from its ground truth and teacher rows.

    Runs on CPU for every training batch, after :func:`lever_teacher_rows`. (``lever train``
    builds the defaults' targets of all rows once instead, when no plugin implements this hook or
    ``lever_teacher_rows``: see ``lever.train.rows.BatchBuilder``.) ``y_rows`` and
    ``soft_rows`` are ``(B, L)`` CSRs aligned with ``row_ids``; ``params`` carries λ, κ, the mode
    and the reduction. ``label_lam`` is ``None`` (one λ, ``params.lam``) or, when ``params.kappa``
    is set, the per-label λ: float32 ``[L]``, ``λ_l = n_l / (n_l + κ)`` with ``n_l`` the training
    documents positive for label ``l`` (computed once per run by the caller; do not modify it).
    Return a :class:`lever.loss.SparseTargets` (batch-local rows; mark ground truth in
    ``positive``). Default: :func:`lever.loss.soft_targets` (``t = λ·y + (1−λ)·p̂``, λ per label
    when given, or the ``augment`` union). Implementations written before ``label_lam`` existed
    may leave it out of their signature (pluggy passes only the arguments an implementation names).
    """


@hookspec(firstresult=True)
def lever_shortlist(
    cand_ids: torch.Tensor, cand_scores: torch.Tensor, targets: SparseTargets, level: int | None
) -> torch.Tensor | None:
    """Change a training shortlist: return the keys by which candidates are kept.

    Runs inside a shortlisting backbone's training forward (ELIAS, CascadeXML), just before it
    keeps the top candidates of ``cand_ids [B, C]`` (ids in the id space of ``targets``; ``level``
    says which level of a tree, ``None`` for labels; padding ids are ``< 0`` or ``>= L``) by
    ``cand_scores [B, C]``. Return a ``[B, C]`` key tensor to select by instead (higher first);
    the backbone keeps scoring with ``cand_scores``, so only *which* candidates survive changes.
    Must not modify its inputs. Never called at inference. Default: ground-truth entries of
    ``targets`` first, then teacher entries by target value, then the rest by score.
    """


@hookspec(firstresult=True)
def lever_loss(
    output: ClassifierOutput, targets: SparseTargets, params: LeverLossParams
) -> torch.Tensor | None:
    """Compute the training loss of one batch from the classifier's training output.

    Runs in the training step after the adapter ran the classifier; the returned scalar is
    back-propagated by the caller. ``output`` holds dense logits ``[B, L]`` or shortlisted logits
    ``[B, K]`` with their label ids. May add terms (e.g. a shortlist recall loss) but must keep the
    reduction in ``params.reduction``. Default: :class:`lever.loss.LeverBCELoss` or
    :class:`lever.loss.LeverShortlistBCELoss`.
    """


@hookspec(firstresult=True)
def lever_label_index(
    y: sp.csr_matrix, soft: sp.csr_matrix | None, weight: float
) -> sp.csr_matrix | None:
    """The row × label matrix a backbone clusters labels with (teacher-aware label index).

    Runs once per index build (e.g. ELIAS's cluster and edge construction, a CascadeXML label
    tree), before training, on CPU. ``y`` is the training matrix the backbone would use, ``soft``
    the teacher scores of the same rows (or ``None``), ``weight`` how much the teacher counts.
    Return the matrix to use instead of ``y`` (same shape); must not modify the inputs.
    Default: ``y + weight·soft``, so labels the teacher relates land in the same clusters.
    """
