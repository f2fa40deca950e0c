"""Holm-Bonferroni adjustment (statsmodels), across languages or across the points of a sweep.

Split from :mod:`xqg_ray.evaluation.significance`, which re-exports it.
"""

from __future__ import annotations

import contextlib
import gc
import math
from typing import Iterator, Optional, Sequence


@contextlib.contextmanager
def _no_gc_collect() -> Iterator[None]:
    """statsmodels' Holm branch calls ``gc.collect()`` on every call to free its temporary
    arrays: in a driver holding Ray and Arrow objects that is ~50 ms per family, most of
    the compare stage.  A full collection frees nothing the adjustment needs."""
    collect = gc.collect
    gc.collect = lambda *a, **k: 0
    try:
        yield
    finally:
        gc.collect = collect


def holm(pvalues: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order (statsmodels).

    Sorted ascending, the i-th smallest (0-based) p gets ``(m - i) * p``; a
    running maximum keeps them monotone, capped at 1.  Reject H_i at level
    alpha iff adjusted p_i <= alpha.  None entries (untested hypotheses) stay
    None and are not part of the family.
    Example: [0.01, 0.04, 0.03] -> [0.03, 0.06, 0.06].
    """
    from statsmodels.stats.multitest import multipletests  # pulls in pandas: ~0.5 s, only when used

    p = [None if v is None else float(v) for v in pvalues]
    if any(v is not None and (math.isnan(v) or v < 0 or v > 1) for v in p):
        raise ValueError(f"p-values must lie in [0, 1]: {p}")
    tested = [i for i, v in enumerate(p) if v is not None]
    out: list[Optional[float]] = [None] * len(p)
    if tested:
        with _no_gc_collect():
            adjusted = multipletests([p[i] for i in tested], method="holm")[1]
        for i, v in zip(tested, adjusted):
            out[i] = min(1.0, float(v))
    return out
