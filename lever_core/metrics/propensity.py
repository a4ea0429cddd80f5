"""Inverse label propensities of Jain et al. (2016), used by the propensity-scored metrics."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# The "otherwise" constants of Jain et al.; the per-dataset values live in the dataset's
# lever_meta.json (propensity_a / propensity_b) and are always passed explicitly.
DEFAULT_A = 0.55
DEFAULT_B = 1.5


def label_counts(Y) -> np.ndarray:
    """Number of points with each label (non-zero entries per column; values are ignored)."""
    if sp.issparse(Y):
        csc = sp.csc_matrix(Y, copy=True)
        csc.sum_duplicates()
        csc.eliminate_zeros()
        return np.diff(csc.indptr).astype(np.float64)
    return np.count_nonzero(np.asarray(Y), axis=0).astype(np.float64)


def inverse_propensity(trn_Y, a: float, b: float) -> np.ndarray:
    """Inverse propensity ``q_l = 1 + C (N_l + B)^-A`` with ``C = (ln N - 1)(B + 1)^A``.

    ``trn_Y`` must be the original binary train label matrix (points x labels): not the
    label-augmented matrix (extra rows change N and N_l) and not soft labels (values are
    binarised here anyway). ``N`` is its number of rows, ``N_l`` the number of rows holding label
    ``l``, ``ln`` the natural log. ``a`` and ``b`` are the dataset's constants, never guessed
    from its name.
    """
    for name, v in (("a", a), ("b", b)):
        if not np.isfinite(v):
            raise ValueError(f"propensity constant {name} must be finite, got {v!r}")
    if b <= -1:
        raise ValueError(f"propensity constant b must be > -1, got {b!r}")
    n = trn_Y.shape[0]
    if n < 1:
        raise ValueError("cannot compute propensities from a train label matrix with no rows")
    c = (np.log(n) - 1.0) * (b + 1.0) ** a
    return 1.0 + c * (label_counts(trn_Y) + b) ** (-a)
