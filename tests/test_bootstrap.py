"""Tests for the one bootstrap (bootstrap.bootstrap_distribution, percentile_ci, bca_ci) and its users:
bootstrap_ci, effect_sizes and the stratified experiments.macro_ci, with scipy's bootstrap as oracle."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from xqg_ray.evaluation.experiments import macro_ci
from xqg_ray.evaluation.bootstrap import bca_ci, bootstrap_distribution, percentile_ci
from xqg_ray.evaluation.significance import bootstrap_ci, cohens_dz, effect_sizes


def spread(x, axis=-1):
    """A statistic other than the mean: max - min along the resampled axis."""
    return np.ptp(x, axis=axis)


@pytest.mark.parametrize("n,n_boot,batch", [(2, 1, None), (7, 200, 3), (60, 500, None), (5001, 1000, None), (13, 999, 998)])
@pytest.mark.parametrize("statistic", [np.mean, spread])
def test_bootstrap_distribution_is_scipys(n, n_boot, batch, statistic):
    """Same draws, same statistic, same order as scipy.stats.bootstrap's distribution, bit for bit."""
    d = np.random.default_rng(n).normal(0.1, 0.4, n)
    # scipy gets the batch bootstrap_distribution uses by default: 2,000,000 indices a block.
    rows = batch if batch is not None else max(1, 2_000_000 // n)
    ref = stats.bootstrap((d,), statistic, n_resamples=n_boot, vectorized=True, batch=rows, method="percentile",
                          rng=np.random.default_rng(9)).bootstrap_distribution
    got = bootstrap_distribution(d, n_boot, np.random.default_rng(9), statistic, batch=batch)
    assert got.shape == (n_boot,)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("n", [1, 2, 7, 3001])
def test_bootstrap_distribution_block_size_only_bounds_memory(n):
    """numpy draws the indices as one stream: any block size gives the same distribution
    (macro_ci's one draw per language and bootstrap_ci's blocks agree)."""
    d = np.random.default_rng(n).random(n)
    one = bootstrap_distribution(d, 41, np.random.default_rng(0), batch=41)
    for batch in (1, 2, 3, 5, 40, None):
        np.testing.assert_array_equal(bootstrap_distribution(d, 41, np.random.default_rng(0), batch=batch), one)


def test_percentile_ci_exact():
    assert percentile_ci(np.array([4.0, 0.0, 3.0, 1.0, 2.0]), level=0.5) == (1.0, 3.0)
    dist = np.random.default_rng(1).random(1000)
    assert percentile_ci(dist) == tuple(np.quantile(dist, [(1 - 0.95) / 2, 1 - (1 - 0.95) / 2]))
    lo, hi = percentile_ci(np.array([0.0, 1.0]), level=0.5)  # linear interpolation
    assert (lo, hi) == (0.25, 0.75) and type(lo) is float


def test_bootstrap_ci_is_the_percentile_interval_of_the_distribution():
    d = np.random.default_rng(2).normal(0.0, 1.0, 40)
    expected = percentile_ci(bootstrap_distribution(d, 300, np.random.default_rng(4)), 0.9)
    assert bootstrap_ci(d, n_boot=300, seed=4, level=0.9) == expected


@pytest.mark.parametrize("seed", range(5))
def test_effect_sizes_match_scipy(seed):
    """Percentile and BCa intervals of the mean and of d_z against scipy.stats.bootstrap.

    The resamples are scipy's, bit for bit; the quantile step is numpy's (scipy 1.17 has
    its own ``stats.quantile``), which can differ in the last bit: hence rel=1e-15
    (BCa: 1e-12, its levels come through ndtr/ndtri of the same sums).
    """
    rng = np.random.default_rng(seed)
    a = rng.normal(0.5, 0.2, 45)
    b = a - rng.normal(0.1, 0.25, 45)
    d = a - b

    def dz(x, axis=-1):
        return np.mean(x, axis=axis) / np.std(x, axis=axis, ddof=1)

    for method, rel in (("percentile", 1e-15), ("BCa", 1e-12)):
        got = effect_sizes(a, b, n_boot=400, seed=seed, method=method)
        for key, stat in (("mean_diff_ci", np.mean), ("dz_ci", dz)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = stats.bootstrap((d,), stat, n_resamples=400, vectorized=True, method=method,
                                      batch=2_000_000 // 45, rng=np.random.default_rng(seed)).confidence_interval
            assert got[key] == pytest.approx([ref.low, ref.high], rel=rel, abs=0), (method, key)
        assert got["dz"] == cohens_dz(d)


def test_bca_ci_shifts_a_skewed_interval():
    d = np.random.default_rng(3).exponential(1.0, 50)  # right-skewed
    dist = bootstrap_distribution(d, 2000, np.random.default_rng(0))
    pct, bca = percentile_ci(dist), bca_ci(d, dist, np.mean)
    assert bca[0] > pct[0] and bca[1] > pct[1]  # BCa moves towards the long tail
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an undefined interval is NaN bounds, without numpy's RuntimeWarning
        # No resample below or above the observed mean: the bias term is infinite.
        assert all(np.isnan(v) for v in bca_ci(d, np.full(10, 5.0), np.mean))
        # Every value equal: every jackknife statistic too, and the acceleration is 0/0.
        assert all(np.isnan(v) for v in bca_ci(np.full(10, 5.0), np.full(10, 5.0), np.mean))


def old_macro_ci(values, langs, n_boot, seed, level=0.95):
    """macro_ci as it was written before it called bootstrap_distribution (commit 2e2325b)."""
    v = np.asarray([np.nan if x is None else float(x) for x in values], np.float64)
    lang_arr = np.asarray(list(langs))
    strata = [v[(lang_arr == lang) & ~np.isnan(v)] for lang in sorted(set(langs))]
    strata = [s for s in strata if s.size]
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    for s in strata:
        boots += s[rng.integers(0, s.size, size=(n_boot, s.size))].mean(axis=1)
    boots /= len(strata)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(boots, [a, 1.0 - a])
    return {"mean": float(np.mean([s.mean() for s in strata])), "ci95": [float(lo), float(hi)]}


@pytest.mark.parametrize("n,n_boot", [(3, 1000), (50, 333), (2500, 1000), (9000, 300), (12000, 1000)])
def test_macro_ci_is_the_stratified_bootstrap_bit_for_bit(n, n_boot):
    rng = np.random.default_rng(n)
    langs = [["fi", "ja", "te", "de"][i % 4] for i in range(n)]
    values = [None if i % 7 == 0 else float(x) for i, x in enumerate(rng.random(n))]
    assert macro_ci(values, langs, n_boot, 5) == old_macro_ci(values, langs, n_boot, 5)
    assert macro_ci(values, langs, n_boot, 5, level=0.8) == old_macro_ci(values, langs, n_boot, 5, level=0.8)


def test_macro_ci_exact_cases():
    # fi always hits, ja never: every resample's macro mean is (1 + 0) / 2.
    assert macro_ci([1.0, 1.0, 0.0, 0.0, None], ["fi", "fi", "ja", "ja", "te"]) == {"mean": 0.5, "ci95": [0.5, 0.5]}
    assert macro_ci([None, None], ["fi", "ja"]) == {"mean": None, "ci95": [None, None]}
