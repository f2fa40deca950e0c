"""Holm-Bonferroni adjustment, across languages or across the points of a sweep.

A few lines of numpy (statsmodels' ``multipletests(method="holm")`` is the test
oracle only): importing statsmodels costs pandas, and its Holm branch runs a
full ``gc.collect()`` per call, ~50 ms in a driver holding Ray and Arrow objects.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def holm(pvalues: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (0-based) p gets ``(m - i) * p``; a
    running maximum keeps them monotone, capped at 1.  Reject H_i at level
    alpha iff adjusted p_i <= alpha.  None entries (untested hypotheses) stay
    None and are not part of the family; NaN or a value outside [0, 1] is a
    ValueError.
    Example: [0.01, 0.04, 0.03] -> [0.03, 0.06, 0.06].
    """
    p = [None if v is None else float(v) for v in pvalues]
    if any(v is not None and (math.isnan(v) or v < 0 or v > 1) for v in p):
        raise ValueError(f"p-values must lie in [0, 1]: {p}")
    tested = [i for i, v in enumerate(p) if v is not None]
    out: list[Optional[float]] = [None] * len(p)
    if tested:
        x = np.asarray([p[i] for i in tested], dtype=np.float64)
        order = np.argsort(x)
        # Tied p-values get the same adjusted value whatever their order: the
        # running maximum lifts the later one to the earlier one's (larger) product.
        adjusted = np.minimum(1.0, np.maximum.accumulate(x[order] * np.arange(x.size, 0, -1)))
        for j, v in zip(order, adjusted):
            out[tested[j]] = float(v)
    return out
