"""Paired significance tests for comparing retrieval systems on the same queries.

Every system is scored on the same questions, so comparisons are paired by qid:

* a paired t-test (``scipy.stats.ttest_rel``) on per-query metric values;
* a paired randomisation test (sign flips of the per-query differences,
  ``scipy.stats.permutation_test``), exact when 2^n is small, the test of
  choice for binary per-query metrics such as R@kt;
* Holm-Bonferroni correction (:mod:`xqg_ray.evaluation.multitest`) across the
  languages of one (system, metric) family;
* the bootstrap (:func:`~xqg_ray.evaluation.bootstrap.bootstrap_distribution`, the one resampler of the
  package): a percentile 95% CI for the mean per-query difference, and effect
  sizes (mean difference, Cohen's d_z) with percentile or BCa CIs.

All outputs are plain Python floats/ints/lists so they can go straight into
metrics.json.  None is used (never NaN, which is not valid JSON) where a value
does not exist, e.g. for a language with no comparable queries.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa

from .bootstrap import CHUNK_ELEMENTS, bca_ci, bootstrap_distribution, percentile_ci
from .multitest import holm

# lang value of the row that pools all languages' pairs.
POOLED = "all"


def _stats() -> Any:
    """scipy.stats, imported at first use: about 0.9 CPU-s that every driver importing the pipeline
    paid, most of which (a resumed or killed run, `xqg-ray prepare`) never compares systems."""
    from scipy import stats

    return stats


@functools.lru_cache(maxsize=None)
def _rng_arg() -> str:
    """scipy >= 1.15 seeds resampling with rng=, older releases with random_state=."""
    return "rng" if "rng" in inspect.signature(_stats().bootstrap).parameters else "random_state"

# Differences whose spread (max - min) is below this are treated as constant
# by paired_ttest.  Metric values live in [0, 1], so 1e-12 is far above float
# rounding noise (~1e-16) and far below any real per-query difference.
_ZERO_VARIANCE_ATOL = 1e-12


def _paired_arrays(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in length: {x.size} vs {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("paired arrays must be finite; drop null/NaN pairs first")
    return x, y


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of a paired t-test (scipy.stats.ttest_rel) of a vs b; never NaN.

    Degenerate cases, where scipy returns NaN (or relies on a division by zero):
    fewer than 2 pairs -> 1.0 (no variance estimate, no evidence; it can never
    produce a "significant" marker); all differences identical (spread <= 1e-12,
    checked before scipy, which reports spurious p-values for data identical up
    to float rounding) -> 1.0 when the common difference is 0 (0/0), else 0.0
    (every query moves by the same amount: the limit as the variance goes to 0).
    """
    x, y = _paired_arrays(a, b)
    if x.size < 2:
        return 1.0
    diffs = x - y
    # "Identical" up to rounding noise: metric values are fractions like 1/3, so
    # conceptually equal differences can differ in the last bits (0.3 - 0.1 vs
    # 0.5 - 0.3), for which scipy reports a meaningless p ~ 1e-17 or NaN.
    if np.ptp(diffs) <= _ZERO_VARIANCE_ATOL:
        return 1.0 if abs(float(diffs.mean())) <= _ZERO_VARIANCE_ATOL else 0.0
    with warnings.catch_warnings():
        # Precision-loss warnings on near-constant data are expected and handled.
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(_stats().ttest_rel(x, y).pvalue)
    # Belt and braces: a NaN must never reach metrics.json or the Holm step.
    return 1.0 if math.isnan(p) else min(max(p, 0.0), 1.0)


def paired_permutation_test(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 9999, seed: int = 0
) -> float:
    """Two-sided p-value of a paired randomisation test of mean(a - b) == 0; never NaN.

    Under the null the sign of each per-query difference is exchangeable, so
    the null distribution flips signs (``scipy.stats.permutation_test``,
    ``permutation_type="samples"``, on the differences).  Zero differences are
    left out: their sign changes nothing, and fewer values make the test exact
    (all 2^m flips) whenever 2^m <= n_resamples, else ``n_resamples`` seeded
    random flips.  When all non-zero differences have one size (binary metrics:
    R@kt, Recall@k) the flips give a binomial, so the exact p comes in closed
    form at any size (the exact sign test, ``scipy.stats.binomtest``).
    """
    x, y = _paired_arrays(a, b)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    d = x - y
    d = d[np.abs(d) > _ZERO_VARIANCE_ATOL]
    if d.size < 2:  # 0 or 1 non-zero difference: the flips give p = 1 exactly
        return 1.0
    if np.ptp(np.abs(d)) <= _ZERO_VARIANCE_ATOL:
        p = float(_stats().binomtest(int(np.sum(d > 0)), d.size, 0.5).pvalue)
    else:
        # scipy's paired path stacks resamples; ~4M elements a batch was fastest here.
        p = float(_stats().permutation_test(
            (d,), np.mean, permutation_type="samples", vectorized=True, n_resamples=n_resamples,
            batch=max(1, 2 * CHUNK_ELEMENTS // d.size), **_rng_kw(seed),
        ).pvalue)
    return 1.0 if math.isnan(p) else min(max(p, 0.0), 1.0)


def _rng_kw(seed: int) -> dict[str, Any]:
    return {_rng_arg(): np.random.default_rng(seed)}


def bootstrap_ci(
    diffs: Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval for the mean of ``diffs``.

    Resamples the pairs with replacement ``n_boot`` times using
    ``numpy.random.default_rng(seed)``, so the result is deterministic for a
    given input, seed and n_boot.  Raises ValueError for empty input.
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"bootstrap_ci needs at least one value, all finite (got {d.size} values)")
    if n_boot < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need n_boot >= 1 and level in (0, 1), got {n_boot}, {level}")
    return percentile_ci(bootstrap_distribution(d, n_boot, np.random.default_rng(seed)), level)


def cohens_dz(diffs: Sequence[float]) -> Optional[float]:
    """Cohen's d_z of paired data: mean(d) / sd(d) (ddof=1); None when n < 2 or sd == 0."""
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size < 2 or np.ptp(d) <= _ZERO_VARIANCE_ATOL:
        return None
    return float(d.mean() / d.std(ddof=1))


def _dz_stat(d: np.ndarray, axis: int = -1) -> np.ndarray:
    m, sd = np.mean(d, axis=axis), np.std(d, axis=axis, ddof=1)
    # A resample without spread: no difference -> 0, else an infinite effect.
    spread = np.where(sd > _ZERO_VARIANCE_ATOL, m / np.where(sd > 0, sd, 1.0), np.sign(m) * np.inf)
    return np.where(m == 0, 0.0, spread)


def effect_sizes(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, method: str = "percentile") -> dict[str, Any]:
    """Effect of a over b: {"mean_diff", "mean_diff_ci", "dz", "dz_ci"} (dz: Cohen's d_z).

    CIs from :func:`bootstrap_distribution` over the per-query differences
    (resampling pairs together; the draws of ``scipy.stats.bootstrap`` with the
    same seed and batch), ``method`` "percentile" or "BCa".  None where a
    value does not exist: all for no pairs; dz and its CI for constant
    differences (d_z infinite or undefined); a CI bound that is not finite.
    """
    x, y = _paired_arrays(a, b)
    if method not in ("percentile", "BCa"):
        raise ValueError(f"method must be percentile or BCa, got {method!r}")
    d = x - y
    if d.size == 0:
        return {"mean_diff": None, "mean_diff_ci": [None, None], "dz": None, "dz_ci": [None, None]}
    mean = float(d.mean())
    dz = cohens_dz(d)
    if dz is None:  # one pair or constant differences: every resample has the same mean
        return {"mean_diff": mean, "mean_diff_ci": [mean, mean], "dz": None, "dz_ci": [None, None]}
    cis = []
    for stat in (np.mean, _dz_stat):
        with warnings.catch_warnings():
            # Degenerate resamples (BCa on near-constant data) warn and give NaN -> None.
            warnings.simplefilter("ignore")
            # A fresh generator per statistic: both see the same resamples.
            dist = bootstrap_distribution(d, n_boot, np.random.default_rng(seed), stat)
            ci = percentile_ci(dist, level) if method == "percentile" else bca_ci(d, dist, stat, level)
        cis.append([float(v) if math.isfinite(v) else None for v in ci])
    return {"mean_diff": mean, "mean_diff_ci": cis[0], "dz": dz, "dz_ci": cis[1]}


def _column(table: pa.Table, name: str, system: str) -> list[Any]:
    if name not in table.column_names:
        raise ValueError(f"system {system!r} has no column {name!r}")
    return table.column(name).to_pylist()


def _index_by_qid(table: pa.Table, system: str) -> dict[str, int]:
    qids = _column(table, "qid", system)
    index = {qid: i for i, qid in enumerate(qids)}
    if len(index) != len(qids):
        raise ValueError(f"system {system!r} has duplicate qids")
    return index


def _is_value(v: Any) -> bool:
    # Nulls mark skipped queries (e.g. yes/no-only questions for R@kt); NaN is
    # treated the same so it cannot poison the means.
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _comparison_row(
    baseline: str,
    system: str,
    metric: str,
    lang: str,
    base_vals: list[float],
    sys_vals: list[float],
    n_boot: int,
    seed: int,
    n_perm: int,
) -> dict[str, Any]:
    n = len(base_vals)
    row: dict[str, Any] = {
        "baseline": baseline,
        "system": system,
        "metric": metric,
        "lang": lang,
        "n": n,
    }
    if n == 0:
        # Nothing comparable (e.g. a language whose questions are all yes/no):
        # keep the row so the report shows the gap, but with no statistics.
        row.update(
            mean_baseline=None, mean_system=None, mean_diff=None,
            ci95=[None, None], p_value=None, p_holm=None,
            p_perm=None, p_perm_holm=None, effect_dz=None, effect_ci=[None, None],
        )
        return row
    b = np.asarray(base_vals, dtype=np.float64)
    s = np.asarray(sys_vals, dtype=np.float64)
    diffs = s - b
    lo, hi = bootstrap_ci(diffs, n_boot=n_boot, seed=seed)
    effect = effect_sizes(s, b, n_boot=n_boot, seed=seed)
    row.update(
        mean_baseline=float(b.mean()),
        mean_system=float(s.mean()),
        mean_diff=float(diffs.mean()),
        ci95=[lo, hi],
        p_value=paired_ttest(s, b),
        p_holm=None,
        p_perm=paired_permutation_test(s, b, n_resamples=n_perm, seed=seed),
        p_perm_holm=None,
        effect_dz=effect["dz"],
        effect_ci=effect["dz_ci"],
    )
    return row


def compare(
    per_query: Mapping[str, pa.Table],
    baseline: str,
    metric_names: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    n_perm: int = 9999,
) -> list[dict[str, Any]]:
    """Compare every non-baseline system against ``baseline``, per metric and language.

    ``per_query`` maps system name -> per-query table (qid, lang, metric
    columns) as made by ``metrics.per_query_metrics``.  Rows are paired by qid,
    so the tables may list queries in different orders, but they must hold the
    same qids (ValueError otherwise: a silently dropped query would bias the
    comparison) with the same language.  A pair is dropped when either value is
    null.  mean_diff is system minus baseline.

    Returns one dict per (system, metric, lang), with keys baseline, system,
    metric, lang, n, mean_baseline, mean_system, mean_diff, ci95 ([lo, hi]),
    p_value (t-test), p_holm, p_perm (randomisation test, ``n_perm`` flips),
    p_perm_holm, effect_dz (Cohen's d_z), effect_ci (its bootstrap CI).  Order:
    systems in mapping order, metrics in the given order, languages sorted,
    then lang "all" (all languages' pairs pooled).

    p_holm and p_perm_holm are Holm-adjusted across the languages of one
    (system, metric) family (the per-language questions a reader asks
    together).  The pooled "all" row is a separate single hypothesis, so its
    adjusted values are its own p-values.  Rows with n == 0 have None
    statistics and are left out of the Holm family.
    """
    if baseline not in per_query:
        raise ValueError(f"baseline {baseline!r} not among systems {list(per_query)}")
    base_table = per_query[baseline]
    base_index = _index_by_qid(base_table, baseline)
    base_qids = list(base_index)
    base_langs = _column(base_table, "lang", baseline)
    langs_sorted = sorted(set(base_langs))
    if POOLED in langs_sorted:
        # The pooled row would be indistinguishable from that language's row.
        raise ValueError(f"a language may not be named {POOLED!r}")

    results: list[dict[str, Any]] = []
    for system, table in per_query.items():
        if system == baseline:
            continue
        sys_index = _index_by_qid(table, system)
        if set(sys_index) != set(base_index):
            missing = sorted(set(base_index) - set(sys_index))[:5]
            extra = sorted(set(sys_index) - set(base_index))[:5]
            raise ValueError(f"system {system!r} and baseline {baseline!r} have different qids "
                             f"(missing from system e.g. {missing}, extra e.g. {extra})")
        # Row j of the system table that pairs with baseline row i.
        perm = [sys_index[q] for q in base_qids]
        sys_langs = _column(table, "lang", system)
        for i, j in enumerate(perm):
            if sys_langs[j] != base_langs[i]:
                raise ValueError(f"qid {base_qids[i]!r} has lang {base_langs[i]!r} in {baseline!r} "
                                 f"but {sys_langs[j]!r} in {system!r}")

        for metric in metric_names:
            b_col = _column(base_table, metric, baseline)
            s_col = _column(table, metric, system)
            by_lang: dict[str, tuple[list[float], list[float]]] = {lang: ([], []) for lang in langs_sorted}
            for i, j in enumerate(perm):
                bv, sv = b_col[i], s_col[j]
                if _is_value(bv) and _is_value(sv):
                    by_lang[base_langs[i]][0].append(float(bv))
                    by_lang[base_langs[i]][1].append(float(sv))

            family = [
                _comparison_row(baseline, system, metric, lang, bv, sv, n_boot, seed, n_perm)
                for lang, (bv, sv) in by_lang.items()
            ]
            for p_key, out_key in (("p_value", "p_holm"), ("p_perm", "p_perm_holm")):
                for r, adj in zip(family, holm([r[p_key] for r in family])):
                    r[out_key] = adj

            pooled_b = [v for bv, _ in by_lang.values() for v in bv]
            pooled_s = [v for _, sv in by_lang.values() for v in sv]
            pooled = _comparison_row(baseline, system, metric, POOLED, pooled_b, pooled_s, n_boot, seed, n_perm)
            pooled["p_holm"], pooled["p_perm_holm"] = pooled["p_value"], pooled["p_perm"]
            results.extend(family)
            results.append(pooled)
    return results
