"""The one bootstrap: resamples of per-query values in bounded blocks, and their percentile and BCa intervals.

Every interval of the project comes from :func:`bootstrap_distribution` (paired
differences in :mod:`xqg_ray.evaluation.significance`, the stratified macro
over languages in :mod:`xqg_ray.evaluation.experiments`).  Its draws are
``rng.integers(0, n, size=(rows, n))`` in consecutive blocks, the same index
stream as ``scipy.stats.bootstrap`` (tested bit for bit), so a seed gives the
same interval whatever the block size.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

# Upper bound on the number of resampled indices held in memory at once:
# pooled comparisons can have tens of thousands of pairs, and n_boot x n int64
# indices would otherwise take hundreds of MB.
CHUNK_ELEMENTS = 2_000_000


def bootstrap_distribution(
    values: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    statistic: Callable[..., np.ndarray] = np.mean,
    batch: Optional[int] = None,
) -> np.ndarray:
    """The bootstrap: ``statistic`` of ``n_boot`` resamples (with replacement) of ``values``, in draw order.

    ``values`` are per-query values (or paired differences, resampled as pairs);
    ``statistic(resamples, axis=-1)`` reduces each row.  Draws are
    ``rng.integers(0, n, size=(rows, n))`` for consecutive blocks of ``batch``
    resamples; the default block bounds the indices held at once
    (``CHUNK_ELEMENTS``).  Blocks only bound memory: the indices are
    the same stream whatever the block size (tested), so a seed gives the same
    distribution.  The stratified (macro) variant calls this once per stratum
    on one generator (:func:`xqg_ray.evaluation.experiments.macro_ci`).
    """
    n = values.size
    rows = batch if batch is not None else max(1, CHUNK_ELEMENTS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        out[start:stop] = statistic(values[rng.integers(0, n, size=(stop - start, n))], axis=-1)
    return out


def percentile_ci(distribution: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of a bootstrap distribution: its (1-level)/2 and 1-(1-level)/2 quantiles."""
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(distribution, [a, 1.0 - a])
    return float(lo), float(hi)


def bca_ci(values: np.ndarray, distribution: np.ndarray, statistic: Callable[..., np.ndarray],
           level: float = 0.95) -> tuple[float, float]:
    """The bias-corrected and accelerated (BCa) interval of ``distribution``, the bootstrap of
    ``statistic`` over ``values`` (Efron & Tibshirani 1993, 14.3; the formulas of
    ``scipy.stats.bootstrap(method="BCa")``): bias from the share of resamples below the
    observed statistic, acceleration from the jackknife.  NaN bounds where undefined."""
    from scipy.special import ndtr, ndtri

    n = values.size
    observed = statistic(values, axis=-1)
    share = (np.count_nonzero(distribution < observed) + np.count_nonzero(distribution <= observed)) / (2.0 * distribution.size)
    z0 = ndtri(share)
    # Leave-one-out statistics, a block of rows at a time (n x (n-1) values in all).
    rows = max(1, CHUNK_ELEMENTS // n)
    jack = []
    for k in range(0, n, rows):
        keep = np.ones((min(rows, n - k), n), dtype=bool)
        np.fill_diagonal(keep[:, k:], False)
        jack.append(statistic(values[np.broadcast_to(np.arange(n), keep.shape)[keep].reshape(keep.shape[0], n - 1)], axis=-1))
    theta = np.concatenate(jack)
    u = (float(n) - 1) * (np.mean(theta, axis=-1, keepdims=True) - theta)
    z = float(ndtri((1.0 - level) / 2.0))
    # Equal jackknife values (0/0) or no resample on one side of the observed value (an infinite
    # bias) leave the interval undefined: NaN bounds below, so numpy's warning says nothing more.
    with np.errstate(invalid="ignore", divide="ignore"):
        accel = 1 / 6 * (np.sum(u ** 3, axis=-1) / float(n) ** 3) / (np.sum(u ** 2, axis=-1) / float(n) ** 2) ** (3 / 2)
        levels = [ndtr(z0 + (z0 + zz) / (1 - accel * (z0 + zz))) for zz in (z, -z)]
    if any(np.isnan(v) for v in levels):
        return math.nan, math.nan
    lo, hi = np.quantile(distribution, levels)
    return float(lo), float(hi)
