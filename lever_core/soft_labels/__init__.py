"""Soft labels from a teacher: faiss kNN, τ selection, calibration and the ``SoftLabels`` file.

``SoftLabels`` is imported eagerly (numpy/scipy only); the builders pull in faiss when used.
"""

from __future__ import annotations

from lever.soft_labels.labels import SoftLabels, SoftLabelsError
from lever.utils.lazy import lazy_exports

_LAZY = {
    "knn": "lever.soft_labels.knn",
    "build_soft_labels": "lever.soft_labels.build",
    "SoftLabelParams": "lever.soft_labels.build",
    "Calibrator": "lever.soft_labels.calibration",
    "fit_calibrator": "lever.soft_labels.calibration",
    "expected_calibration_error": "lever.soft_labels.calibration",
    "load_teacher_embeddings": "lever.soft_labels.teacher_embeddings",
    "write_zero_shot_teacher": "lever.soft_labels.teacher_embeddings",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = ["SoftLabels", "SoftLabelsError", *_LAZY.keys()]  # noqa: PLE0604
