"""The tail-robust Siamese teacher of LEVER: one shared sentence encoder for documents and labels,
trained with NGAME-style label-side batches and the paper's pairwise logistic loss (Eq. 9)."""

from __future__ import annotations

from lever.teacher.batching import (
    DocSideBatcher,
    LabelSideBatcher,
    TokenTable,
    batch_slices,
    in_batch_target_mask,
    make_batcher,
)
from lever.teacher.clustering import (
    ClusterSchedule,
    batch_clusters,
    clustered_order,
    num_clusters_for,
)
from lever.teacher.losses import (
    PairwiseLogisticLoss,
    SoftplusHingeLoss,
    TripletHingeLoss,
    build_loss,
    hardest_negatives,
)
from lever.teacher.params import PRESETS, TeacherParams, preset

__all__ = [
    "PRESETS",
    "ClusterSchedule",
    "DocSideBatcher",
    "LabelSideBatcher",
    "PairwiseLogisticLoss",
    "SoftplusHingeLoss",
    "TeacherParams",
    "TokenTable",
    "TripletHingeLoss",
    "batch_clusters",
    "batch_slices",
    "build_loss",
    "clustered_order",
    "hardest_negatives",
    "in_batch_target_mask",
    "make_batcher",
    "num_clusters_for",
    "preset",
]
