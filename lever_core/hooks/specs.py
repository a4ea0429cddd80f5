"""The hooks through which lever and its adapters meet (pluggy, project name ``"lever"``).

Every hook is called with keyword arguments only. ``firstresult`` hooks stop at the first
implementation that returns something other than ``None``; the built-in defaults
(:mod:`lever.hooks.defaults`) are registered ``trylast`` so a plugin overrides a default simply
by implementing the hook and returning a value. Implement hooks with :data:`hookimpl` and expose
the module through the ``lever.adapters`` entry-point group.

Scope. Every hook that serves a training step is told the ``backbone`` (adapter name) it serves,
and is called through :class:`lever.hooks.manager.ScopedHooks`: the hooks of a plugin that
registers backbones only run for its own backbones, so an ELIAS plugin's ``lever_loss`` never
reaches Renée. A plugin that registers no backbone is a modifier for every backbone and reads
``backbone`` to choose. Implementations may leave out arguments they do not use (pluggy passes
only the arguments an implementation names). A misspelt ``lever_*`` implementation is an error
when the plugins load (``PluginManager.check_pending``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    import torch

    from lever.loss import Level, LeverLossParams, SparseTargets
    from lever.train.backbone import Backbone

PROJECT = "lever"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def lever_adapter(classifier: Any) -> Backbone | None:
    """Choose the adapter that trains an existing ``classifier`` with the LEVER loss.

    Runs once, when ``lever.wrap(classifier, ...)`` is called. Return an instance of the same
    :class:`lever.train.backbone.Backbone` class this plugin registers for ``lever train``
    (usually ``cls() if cls.accepts(classifier) else None``), so both entry points share one
    object; otherwise ``None``. Must not modify the classifier: the wrapped model's predictions
    and weights stay exactly the classifier's. The generic adapter answers last, for any
    ``torch.nn.Module`` returning dense logits, a (logits, label ids) pair or levels.
    """


@hookspec
def lever_register_backbones() -> dict[str, Any]:
    """Backbones this plugin offers to ``lever train --backbone NAME``.

    Runs whenever the training loop or the CLI resolves backbone names. Return ``{name:
    BackboneClass}`` where ``BackboneClass`` subclasses ``lever.train.backbone.Backbone`` (it is
    instantiated with the run's ``backbone_params``). Names must be unique over all installed
    plugins; returning nothing (``None`` or ``{}``) is fine. Must not have side effects. The names
    a plugin registers are its scope: its other hooks only run for these backbones.
    """


@hookspec(firstresult=True)
def lever_teacher_rows(
    row_ids: np.ndarray, soft_labels: Any, backbone: str | None
) -> sp.csr_matrix | None:
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
    backbone: str | None,
) -> SparseTargets | None:
    """Build a batch's sparse label targets from its ground truth and teacher rows.

    Runs on CPU for every training batch, after :func:`lever_teacher_rows`. (``lever train``
    builds the defaults' targets of all rows once instead, when no plugin in scope implements this
    hook or ``lever_teacher_rows``: see ``lever.train.rows.BatchBuilder``.) ``y_rows`` and
    ``soft_rows`` are ``(B, L)`` CSRs aligned with ``row_ids``; ``params`` carries λ, κ, the mode
    and the reduction. ``label_lam`` is ``None`` (one λ, ``params.lam``) or, when ``params.kappa``
    is set, the per-label λ: float32 ``[L]``, ``λ_l = n_l / (n_l + κ)`` with ``n_l`` the training
    documents positive for label ``l`` (computed once per run by the caller; do not modify it).
    Return a :class:`lever.loss.SparseTargets` (batch-local rows; mark ground truth in
    ``positive``). Default: :func:`lever.loss.soft_targets` (``t = λ·y + (1−λ)·p̂``, λ per label
    when given, or the ``augment`` union). Cluster levels get these targets projected by
    :func:`lever_level_targets`.
    """


@hookspec(firstresult=True)
def lever_level_targets(
    targets: SparseTargets,
    level: int,
    label_to_cluster: torch.Tensor,
    num_clusters: int,
    backbone: str | None,
) -> SparseTargets | None:
    """Project a batch's label targets to the clusters of tree level ``level``.

    Runs in the training step, once per cluster level the backbone returns, after
    :func:`lever_targets` (on the training device). ``label_to_cluster [L]`` maps label ids to
    that level's cluster ids (``< 0``: in no cluster). Return targets of shape ``(B,
    num_clusters)``; must not modify the inputs. Default: :func:`lever.loss.project_targets`, a
    cluster's target is the max of its member labels' targets.
    """


@hookspec(firstresult=True)
def lever_shortlist(
    cand_ids: torch.Tensor,
    cand_scores: torch.Tensor,
    targets: SparseTargets,
    level: int | None,
    backbone: str | None,
) -> torch.Tensor | None:
    """Change a training shortlist: return the keys by which candidates are kept.

    Called by a shortlisting backbone's training step (ELIAS, CascadeXML), just before it keeps
    the top candidates of ``cand_ids [B, C]`` by ``cand_scores [B, C]``. ``level`` is ``None``
    when the candidates are label ids (``targets`` are the label targets), or the tree level ``i``
    whose cluster ids they are (``targets`` then come from :func:`lever_level_targets` for that
    level: the backbone projects first, so ids and targets are always in the same space). Padding
    ids are ``< 0`` or ``>= targets.shape[1]``. Return a ``[B, C]`` key tensor to select by
    instead (higher first); the backbone keeps scoring with ``cand_scores``, so only *which*
    candidates survive changes. Must not modify its inputs. Never called at inference. Default:
    ground-truth entries first, then teacher entries by target value, then the rest by score.
    """


@hookspec(firstresult=True)
def lever_loss(
    levels: list[Level], targets: list[SparseTargets], params: LeverLossParams, backbone: str | None
) -> torch.Tensor | None:
    """Compute the training loss of one batch from the backbone's levels.

    Runs in every training step (``lever train`` and ``lever.wrap``), after the backbone scored
    the batch; the returned scalar is back-propagated by the caller. ``levels`` are
    :class:`lever.loss.Level` (dense logits ``[B, L]``, or shortlisted logits ``[B, K]`` with their
    ids; labels or the clusters of a tree level) and ``targets`` one ``SparseTargets`` per level in
    that level's id space. May add terms (e.g. a shortlist recall loss) but must keep the reduction
    in ``params.reduction``. A backbone with a fused hand-written backward (Renée) runs its
    levels through this hook when a plugin in scope implements it, or refuses with an error where
    it cannot. Default: :func:`lever.loss.levels_bce`, the BCE of every level, summed.
    """


@hookspec(firstresult=True)
def lever_label_index(
    y: sp.csr_matrix, soft: sp.csr_matrix | None, weight: float, backbone: str | None
) -> sp.csr_matrix | None:
    """The row × label matrix a backbone clusters labels with (teacher-aware label index).

    Called by a clustering backbone (ELIAS's cluster and edge construction, a CascadeXML label
    tree) once per index build, before training, on CPU. ``y`` is the training matrix the backbone
    would use, ``soft`` the teacher scores of the same rows (or ``None``), ``weight`` how much the
    teacher counts. Return the matrix to use instead of ``y`` (same shape); must not modify the
    inputs. Default: ``y + weight·soft``, so labels the teacher relates land in the same clusters.
    """
