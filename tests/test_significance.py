"""Tests for xqg_ray.evaluation.significance: t-test, randomisation test, Holm, bootstrap CIs,
effect sizes and compare()."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats


from xqg_ray.evaluation.multitest import holm
from xqg_ray.evaluation.significance import (
    bootstrap_ci, cohens_dz, compare, effect_sizes,
    paired_permutation_test, paired_ttest,
)


# ---------------------------------------------------------------- paired t-test


def test_paired_ttest_textbook():
    a = [0.9, 0.4, 0.7, 1.0, 0.3, 0.8]
    b = [0.5, 0.5, 0.2, 0.6, 0.1, 0.4]
    d = np.array(a) - np.array(b)
    n = len(d)
    # Textbook: t = mean(d) / (s_d / sqrt(n)), df = n - 1, two-sided p.
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    expected = 2 * stats.t.sf(abs(t), n - 1)
    assert paired_ttest(a, b) == pytest.approx(expected, rel=1e-9)
    # Symmetric in the order of the systems.
    assert paired_ttest(b, a) == pytest.approx(expected, rel=1e-9)
    assert 0.0 < expected < 0.05  # sanity: this example is significant


def test_paired_ttest_degenerate_cases_never_nan():
    assert paired_ttest([1.0, 0.0, 1.0], [1.0, 0.0, 1.0]) == 1.0  # identical
    assert paired_ttest([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]) == 0.0  # constant shift
    assert paired_ttest([0.3, 0.5], [0.1, 0.3]) == 0.0  # constant 0.2 (inexact floats)
    assert paired_ttest([0.3, 0.5], [0.3, 0.5 + 1e-17]) == 1.0  # zero up to rounding
    assert paired_ttest([1.0], [0.0]) == 1.0  # one pair
    assert paired_ttest([], []) == 1.0  # no pairs
    with pytest.raises(ValueError):
        paired_ttest([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_ttest([1.0, float("nan")], [1.0, 0.0])


# ---------------------------------------------------------------- permutation test (Holm: test_multitest.py)


def exact_sign_flip_p(d):
    """Two-sided p by enumerating all 2^n sign flips: P(|mean(s*d)| >= |mean(d)|)."""
    d = np.asarray(d, dtype=float)
    t = abs(d.mean())
    hits = sum(abs(np.mean(d * np.array(s))) >= t - 1e-12 for s in itertools.product((1, -1), repeat=d.size))
    return hits / 2 ** d.size


@pytest.mark.parametrize("a,b", [
    ([0.9, 0.4, 0.7, 1.0, 0.3, 0.8, 0.6], [0.5, 0.5, 0.2, 0.6, 0.1, 0.4, 0.6]),  # one zero difference
    ([1, 1, 0, 1, 1, 1, 0, 1, 1, 0], [0, 1, 1, 0, 0, 0, 0, 1, 0, 0]),  # binary R@kt-style hits
    ([0.2, 0.5, 0.1, 0.0], [0.3, 0.1, 0.4, 0.2]),
])
def test_permutation_test_is_exact_on_small_samples(a, b):
    expected = exact_sign_flip_p(np.array(a, float) - np.array(b, float))
    assert paired_permutation_test(a, b) == pytest.approx(expected, abs=1e-12)
    assert paired_permutation_test(b, a) == pytest.approx(expected, abs=1e-12)


def test_permutation_test_binary_differences_exact_at_any_size():
    # 60 non-zero +-1 differences (45 up, 15 down) plus 40 ties: the sign-flip
    # distribution of the sum is 2 * Binomial(60, 1/2) - 60, so the exact p is
    # P(|X - 30| >= 15), summed by hand; 2^60 flips could not be enumerated.
    a = [1] * 45 + [0] * 15 + [1] * 20 + [0] * 20
    b = [0] * 45 + [1] * 15 + [1] * 20 + [0] * 20
    expected = sum(math.comb(60, k) for k in range(61) if abs(k - 30) >= 15) / 2 ** 60
    assert paired_permutation_test(a, b) == pytest.approx(expected, rel=1e-9)
    assert 0 < expected < 1e-3


def test_permutation_test_hand_values_and_degenerate_cases():
    # d = [1, 1, 1, -1]: |mean| >= 0.5 for the 10 flips with at most one minus or one plus.
    assert paired_permutation_test([1, 1, 1, 0], [0, 0, 0, 1]) == pytest.approx(10 / 16)
    assert paired_permutation_test([1, 1, 1, 1, 1], [0, 0, 0, 0, 0]) == pytest.approx(2 / 32)
    assert paired_permutation_test([1, 0, 1], [1, 0, 1]) == 1.0  # identical
    assert paired_permutation_test([1, 0, 0], [0, 0, 0]) == 1.0  # one non-zero difference
    assert paired_permutation_test([], []) == 1.0
    with pytest.raises(ValueError):
        paired_permutation_test([1.0, 2.0], [1.0])


def test_permutation_test_random_resamples_seeded():
    rng = np.random.default_rng(0)
    a = rng.normal(0.6, 0.1, 40)
    b = a - rng.uniform(0.2, 0.4, 40)  # every query up: no random flip reaches the observed mean
    # Randomised p of scipy: 2 * (0 + 1) / (999 + 1) for an observed value beyond all draws.
    assert paired_permutation_test(a, b, n_resamples=999, seed=3) == pytest.approx(0.002)
    noisy = b + rng.normal(0, 0.5, 40)
    p1 = paired_permutation_test(a, noisy, n_resamples=999, seed=3)
    assert p1 == paired_permutation_test(a, noisy, n_resamples=999, seed=3)
    assert p1 != paired_permutation_test(a, noisy, n_resamples=999, seed=4)
    assert abs(p1 - paired_ttest(a, noisy)) < 0.05  # the two tests agree on normal data


# ---------------------------------------------------------------- effect sizes


def test_cohens_dz_by_hand():
    d = [0.4, -0.1, 0.5, 0.4, 0.2, 0.4]
    mean = sum(d) / 6
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 5)
    assert cohens_dz(d) == pytest.approx(mean / sd)
    assert cohens_dz([0.25, 0.25]) is None and cohens_dz([1.0]) is None


def test_effect_sizes_against_scipy_bootstrap():
    rng = np.random.default_rng(7)
    a = rng.normal(0.5, 0.2, 60)
    b = a - rng.normal(0.1, 0.2, 60)
    d = a - b
    got = effect_sizes(a, b, n_boot=500, seed=3)
    ref = stats.bootstrap((d,), np.mean, n_resamples=500, method="percentile", vectorized=True,
                          rng=np.random.default_rng(3)).confidence_interval
    assert got["mean_diff"] == pytest.approx(d.mean())
    assert got["mean_diff_ci"] == pytest.approx([ref.low, ref.high])
    assert got["dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    lo, hi = got["dz_ci"]
    assert lo < got["dz"] < hi
    assert effect_sizes(a, b, n_boot=500, seed=3) == got
    assert effect_sizes(a, b, n_boot=500, seed=4) != got
    bca = effect_sizes(a, b, n_boot=500, seed=3, method="BCa")
    assert bca["dz"] == got["dz"] and bca["dz_ci"] != got["dz_ci"]
    json.dumps(bca, allow_nan=False)


def test_effect_sizes_degenerate_cases():
    assert effect_sizes([], []) == {"mean_diff": None, "mean_diff_ci": [None, None], "dz": None,
                                    "dz_ci": [None, None]}
    assert effect_sizes([0.5, 0.75], [0.25, 0.5]) == {
        "mean_diff": 0.25, "mean_diff_ci": [0.25, 0.25], "dz": None, "dz_ci": [None, None]}
    # Binary differences with one hit among few: resamples without spread give an
    # infinite d_z; non-finite bounds become None, never NaN or inf.
    # (all four resampled 1s, probability 0.32, is above the 97.5th percentile).
    out = effect_sizes([1, 1, 1, 0], [0, 0, 0, 0], n_boot=200)
    assert out["dz"] == pytest.approx(1.5) and out["dz_ci"][1] is None
    # One 1 in four (P(at most one) = 0.05 > 0.025): mean 0.25 / sd 0.5.
    assert out["dz_ci"][0] == pytest.approx(0.5)
    json.dumps(out, allow_nan=False)
    with pytest.raises(ValueError):
        effect_sizes([1.0], [0.0], method="basic")


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_deterministic_and_contains_mean():
    rng = np.random.default_rng(123)
    diffs = rng.normal(0.1, 0.5, size=200)
    ci1 = bootstrap_ci(diffs, n_boot=500, seed=7)
    ci2 = bootstrap_ci(list(diffs), n_boot=500, seed=7)
    assert ci1 == ci2
    assert isinstance(ci1[0], float) and isinstance(ci1[1], float)
    lo, hi = ci1
    assert lo < float(np.mean(diffs)) < hi
    assert bootstrap_ci(diffs, n_boot=500, seed=8) != ci1


def test_bootstrap_is_percentile_of_resampled_means():
    # Continuous values, so different quantile levels give different bounds.
    diffs = np.array([0.0, 1.0, 0.3, -0.4, 0.75, 0.1, -0.2])
    rng = np.random.default_rng(3)
    means = diffs[rng.integers(0, diffs.size, size=(200, diffs.size))].mean(axis=1)
    expected = tuple(np.quantile(means, [0.025, 0.975]))
    assert bootstrap_ci(diffs, n_boot=200, seed=3) == pytest.approx(expected)


def test_bootstrap_edge_cases():
    assert bootstrap_ci([0.25, 0.25, 0.25], n_boot=100) == (0.25, 0.25)
    assert bootstrap_ci([0.5], n_boot=10) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], level=1.0)


# ---------------------------------------------------------------- compare


def table(rows):
    qids, langs, r2, mrr = zip(*rows)
    return pa.table({
        "qid": list(qids),
        "lang": list(langs),
        "R@2kt": pa.array(list(r2), type=pa.float64()),
        "MRR@10": pa.array(list(mrr), type=pa.float64()),
    })


BASE_ROWS = [
    ("f1", "fi", 0.0, 0.5),
    ("f2", "fi", 1.0, 0.25),
    ("f3", "fi", 0.0, 0.0),
    ("j1", "ja", 1.0, 1.0),
    ("j2", "ja", None, 0.5),  # yes/no-only question: R@2kt null
    ("j3", "ja", 0.0, 0.0),
]
# System A: MRR is the baseline + 0.25 on every question (an exact constant
# shift), R@2kt turns f1, f3 and j2 into hits.
SYS_A_ROWS = [
    ("f1", "fi", 1.0, 0.75),
    ("f2", "fi", 1.0, 0.5),
    ("f3", "fi", 1.0, 0.25),
    ("j1", "ja", 1.0, 1.25),
    ("j2", "ja", 1.0, 0.75),
    ("j3", "ja", 0.0, 0.25),
]


def test_compare_structure_pairing_and_holm():
    base = table(BASE_ROWS)
    # Reverse the system's row order: compare must pair by qid, not by position.
    sys_a = table(list(reversed(SYS_A_ROWS)))
    sys_b = table(BASE_ROWS)
    rows = compare({"base": base, "A": sys_a, "B": sys_b}, "base", ["R@2kt", "MRR@10"],
                   n_boot=200, seed=0)

    keys = {"baseline", "system", "metric", "lang", "n", "mean_baseline", "mean_system",
            "mean_diff", "ci95", "p_value", "p_holm", "p_perm", "p_perm_holm", "effect_dz",
            "effect_ci"}
    assert all(set(r) == keys for r in rows)
    assert [(r["system"], r["metric"], r["lang"]) for r in rows] == [
        ("A", "R@2kt", "fi"), ("A", "R@2kt", "ja"), ("A", "R@2kt", "all"),
        ("A", "MRR@10", "fi"), ("A", "MRR@10", "ja"), ("A", "MRR@10", "all"),
        ("B", "R@2kt", "fi"), ("B", "R@2kt", "ja"), ("B", "R@2kt", "all"),
        ("B", "MRR@10", "fi"), ("B", "MRR@10", "ja"), ("B", "MRR@10", "all"),
    ]
    json.dumps(rows, allow_nan=False)  # plain, JSON-safe values
    by = {(r["system"], r["metric"], r["lang"]): r for r in rows}

    # MRR: with correct pairing every difference is exactly +0.25 (zero
    # variance -> p = 0); positional pairing of the reversed table would not be.
    mrr_all = by[("A", "MRR@10", "all")]
    assert mrr_all["n"] == 6
    assert mrr_all["mean_diff"] == pytest.approx(0.25)
    assert mrr_all["ci95"] == pytest.approx([0.25, 0.25])
    assert mrr_all["p_value"] == 0.0
    assert mrr_all["mean_baseline"] == pytest.approx(2.25 / 6)
    assert mrr_all["mean_system"] == pytest.approx(3.75 / 6)

    # R@2kt: the pair with a null baseline value (j2) is dropped.
    r_fi, r_ja, r_all = (by[("A", "R@2kt", lang)] for lang in ("fi", "ja", "all"))
    assert (r_fi["n"], r_ja["n"], r_all["n"]) == (3, 2, 5)
    assert r_fi["mean_baseline"] == pytest.approx(1 / 3)
    assert r_fi["mean_system"] == 1.0
    assert r_fi["mean_diff"] == pytest.approx(2 / 3)
    assert r_ja["mean_diff"] == 0.0 and r_ja["p_value"] == 1.0
    assert r_all["mean_diff"] == pytest.approx(2 / 5)
    expected_p = stats.ttest_rel([1, 1, 1, 1, 0], [0, 1, 0, 1, 0]).pvalue
    assert r_all["p_value"] == pytest.approx(expected_p)
    lo, hi = r_all["ci95"]
    assert lo <= r_all["mean_diff"] <= hi

    # Holm across the languages of one (system, metric); "all" keeps its own p.
    adj = holm([r_fi["p_value"], r_ja["p_value"]])
    assert [r_fi["p_holm"], r_ja["p_holm"]] == pytest.approx(adj)
    assert r_all["p_holm"] == r_all["p_value"]

    # Randomisation test, exact: R@2kt differences fi [1, 0, 1] and all [1, 0, 1, 0, 0]
    # have two non-zero +1s, so 2 of the 4 sign patterns reach |mean| >= observed.
    assert (r_fi["p_perm"], r_ja["p_perm"], r_all["p_perm"]) == (0.5, 1.0, 0.5)
    assert [r_fi["p_perm_holm"], r_ja["p_perm_holm"]] == [1.0, 1.0]
    assert r_all["p_perm_holm"] == 0.5
    # MRR moves by +0.25 on all 6 queries: only the all-plus and all-minus flips tie.
    assert mrr_all["p_perm"] == pytest.approx(2 / 64)
    # Constant differences: d_z is infinite, reported as None.
    assert mrr_all["effect_dz"] is None and mrr_all["effect_ci"] == [None, None]
    d = np.array([1, 0, 1, 0, 0], dtype=float)
    assert r_all["effect_dz"] == pytest.approx(d.mean() / d.std(ddof=1))

    # Identical system: no differences anywhere.
    for lang in ("fi", "ja", "all"):
        r = by[("B", "R@2kt", lang)]
        assert r["mean_diff"] == 0.0 and r["p_value"] == 1.0 and r["p_holm"] == 1.0
        assert r["p_perm"] == 1.0 and r["p_perm_holm"] == 1.0 and r["effect_dz"] is None


def test_compare_exact_values():
    """Every value of one comparison, exactly (the same before and after the one-bootstrap change).

    R@2kt differences (system - baseline): fi [1, 0, 1], ja [0, 0] (j2 dropped: null
    baseline), all [1, 0, 1, 0, 0].  fi: t = (2/3) / (sqrt(1/3) / sqrt(3)) = 2 on 2 df,
    p = 1 - 2/sqrt(6); d_z = (2/3) / sqrt(1/3) = 2/sqrt(3).  all: d_z = 0.4 / sqrt(0.3).
    The intervals are the seeded bootstrap's (n_boot=100, seed=5).
    """
    tables = {"base": table(BASE_ROWS), "A": table(SYS_A_ROWS)}
    rows = compare(tables, "base", ["R@2kt"], n_boot=100, seed=5)
    common = {"baseline": "base", "system": "A", "metric": "R@2kt"}
    assert rows == [
        {**common, "lang": "fi", "n": 3, "mean_baseline": 0.3333333333333333, "mean_system": 1.0,
         "mean_diff": 0.6666666666666666, "ci95": [0.0, 1.0], "p_value": 0.183503419072274,
         "p_holm": 0.367006838144548, "p_perm": 0.5, "p_perm_holm": 1.0,
         "effect_dz": 1.1547005383792512, "effect_ci": [0.0, None]},
        {**common, "lang": "ja", "n": 2, "mean_baseline": 0.5, "mean_system": 0.5, "mean_diff": 0.0,
         "ci95": [0.0, 0.0], "p_value": 1.0, "p_holm": 1.0, "p_perm": 1.0, "p_perm_holm": 1.0,
         "effect_dz": None, "effect_ci": [None, None]},
        {**common, "lang": "all", "n": 5, "mean_baseline": 0.4, "mean_system": 0.8, "mean_diff": 0.4,
         "ci95": [0.2, 0.8], "p_value": 0.17780780835622137, "p_holm": 0.17780780835622137,
         "p_perm": 0.5, "p_perm_holm": 0.5, "effect_dz": 0.7302967433402214,
         "effect_ci": [0.44721359549995787, 1.788854381999832]},
    ]
    assert rows[0]["p_value"] == pytest.approx(1 - 2 / math.sqrt(6), rel=1e-14)
    assert rows[0]["effect_dz"] == pytest.approx(2 / math.sqrt(3), rel=1e-15)
    assert rows[2]["effect_dz"] == pytest.approx(0.4 / math.sqrt(0.3), rel=1e-15)
    assert compare(tables, "base", ["R@2kt"], n_boot=100, seed=5) == rows  # deterministic


def test_compare_language_with_no_pairs():
    base = table([("a", "fi", 1.0, 1.0), ("b", "fi", 0.0, 1.0), ("c", "te", None, 0.5)])
    sys_a = table([("a", "fi", 1.0, 1.0), ("b", "fi", 1.0, 1.0), ("c", "te", None, 0.5)])
    rows = compare({"base": base, "A": sys_a}, "base", ["R@2kt"], n_boot=50)
    te = next(r for r in rows if r["lang"] == "te")
    assert te["n"] == 0 and te["p_value"] is None and te["p_holm"] is None
    assert te["mean_diff"] is None
    assert te["p_perm"] is None and te["p_perm_holm"] is None
    assert te["effect_dz"] is None and te["effect_ci"] == [None, None]
    fi = next(r for r in rows if r["lang"] == "fi")
    # te is not part of the Holm family, so fi's p is not inflated.
    assert fi["p_holm"] == fi["p_value"]
    json.dumps(rows, allow_nan=False)


def test_compare_rejects_mismatched_qids_and_unknown_baseline():
    base = table(BASE_ROWS)
    short = table(SYS_A_ROWS[:-1])
    with pytest.raises(ValueError, match="qid"):
        compare({"base": base, "A": short}, "base", ["R@2kt"])
    with pytest.raises(ValueError):
        compare({"base": base}, "nope", ["R@2kt"])
    wrong_lang = table([(q, "xx" if q == "f1" else lang, r, m) for q, lang, r, m in SYS_A_ROWS])
    with pytest.raises(ValueError, match="f1"):
        compare({"base": base, "A": wrong_lang}, "base", ["R@2kt"])


def test_compare_rejects_language_named_all():
    base = table([("a", "all", 1.0, 1.0), ("b", "fi", 0.0, 1.0)])
    with pytest.raises(ValueError, match="all"):
        compare({"base": base, "A": base}, "base", ["R@2kt"])
