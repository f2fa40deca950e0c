"""The research questions a run answers, from its per-query metric tables.

- **sweeps**: each swept system's points (alpha, n, aggregation) with the macro
  metric, its 95% interval and the paired test against the baseline, Holm-adjusted
  across the points of one sweep;
- **robustness**: each system's metric on every perturbed query set, its drop from
  the clean questions, with paired tests (same qids, so pairs are by qid);
- **languages**: per-language values with intervals, ordered by resource level or a
  configured order, and optional pooled language groups.

Everything here is a pure function of tables and the config; the evaluate stage
writes what it returns into metrics.json and the report draws it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ..config import RunConfig
from .languages import group_of, language_order, resource_level
from .multitest import holm
from .bootstrap import bootstrap_distribution, percentile_ci
from .significance import POOLED
from .tuning import TUNED_KEYS


def macro_ci(values: Sequence[Any], langs: Sequence[str], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Dict[str, Any]:
    """The macro mean (unweighted over languages) of per-query ``values`` and its bootstrap interval,
    resampling queries within each language (the design's strata).  Nulls are skipped."""
    v = np.asarray([np.nan if x is None else float(x) for x in values], np.float64)
    lang_arr = np.asarray(list(langs))
    strata = [v[(lang_arr == lang) & ~np.isnan(v)] for lang in sorted(set(langs))]
    strata = [s for s in strata if s.size]
    if not strata:
        return {"mean": None, "ci95": [None, None]}
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    for s in strata:
        # Languages in sorted order on the one generator: the draws every stored interval was made with.
        boots += bootstrap_distribution(s, n_boot, rng)
    boots /= len(strata)
    lo, hi = percentile_ci(boots, level)
    return {"mean": float(np.mean([s.mean() for s in strata])), "ci95": [lo, hi]}


def sweeps(cfg: RunConfig, per_query: Mapping[str, pa.Table], comparisons: Sequence[Mapping[str, Any]],
           metric_names: Sequence[str], n_boot: int, seed: int) -> List[Dict[str, Any]]:
    """One entry per (swept system, parameter): its points in sweep order, each with the
    macro metric + interval and the pooled comparison to the baseline, p Holm-adjusted
    across the points (the family a reader scans for "which values help")."""
    by_name = {s.name: s for s in cfg.systems}
    pooled = {(c["system"], c["metric"]): c for c in comparisons if c.get("lang") == POOLED}
    out: List[Dict[str, Any]] = []
    for parent in cfg.systems:
        if parent.sweep_of:
            continue
        for param in ("alpha", "n", "aggregation"):
            values = list(getattr(parent.sweep, param))
            if not values:
                continue
            points = [parent.name] + [s.name for s in cfg.systems if s.sweep_of == parent.name and s.sweep_param == param]
            points.sort(key=lambda n: _sort_key(_value(by_name[n], param, cfg)))
            entry: Dict[str, Any] = {"system": parent.name, "param": param, "points": [
                {"system": name, "value": _value(by_name[name], param, cfg),
                 "metrics": point_metrics(per_query[name], pooled, name, metric_names, n_boot, seed)} for name in points]}
            for m in metric_names:
                for key in ("p_value", "p_perm"):
                    adj = holm([p["metrics"][m].get(key) for p in entry["points"]])  # None (the baseline point) stays None
                    for p, a in zip(entry["points"], adj):
                        p["metrics"][m][f"{key}_holm_sweep"] = a
            out.append(entry)
    return out


def point_metrics(t: pa.Table, pooled: Mapping[Any, Mapping[str, Any]], name: str, metric_names: Sequence[str],
                  n_boot: int, seed: int) -> Dict[str, Dict[str, Any]]:
    """metric -> system ``name``'s macro value and interval over its per-query table ``t``, with its pooled
    comparison to the baseline from ``pooled`` ((system, metric) -> comparison row)."""
    out: Dict[str, Dict[str, Any]] = {}
    for m in metric_names:
        stats = macro_ci(t[m].to_pylist(), t["lang"].to_pylist(), n_boot, seed)
        c = pooled.get((name, m), {})
        stats.update(diff=c.get("mean_diff"), diff_ci95=c.get("ci95"), p_value=c.get("p_value"), p_perm=c.get("p_perm"))
        out[m] = stats
    return out


def tuned_figures(name: str, per_query: Mapping[str, pa.Table], comparisons: Sequence[Mapping[str, Any]],
                  metric_names: Sequence[str], metric: str, n_boot: int, seed: int) -> Dict[str, Any]:
    """What a tuning group reports of its chosen system ``name``: ``test``, every metric's evaluated figures
    (``tuning.TUNED_KEYS``), and ``languages``, each language's comparison on ``metric`` with its p
    Holm-adjusted across the languages (the comparisons' ``p_holm``)."""
    pooled = {(c["system"], c["metric"]): c for c in comparisons if c.get("lang") == POOLED}
    figures = point_metrics(per_query[name], pooled, name, metric_names, n_boot, seed)
    return {"test": {m: {k: s.get(k) for k in TUNED_KEYS} for m, s in figures.items()},
            "languages": {c["lang"]: {"diff": c["mean_diff"], "ci95": c["ci95"], "p_value": c["p_value"], "p_holm": c["p_holm"]}
                          for c in comparisons if c["system"] == name and c["metric"] == metric and c.get("lang") != POOLED}}


def _value(s, param: str, cfg: RunConfig) -> Any:
    if param == "n" and s.n == 0:
        g = cfg.generators.get(s.generator)
        return g.n_per_language if g is not None else 0
    return getattr(s, param)


def _sort_key(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) else (1, 0.0, str(v))


def robustness(per_query_sets: Mapping[str, Mapping[str, pa.Table]], metric_names: Sequence[str],
               compare_fn, n_boot: int, seed: int, n_perm: int) -> Dict[str, Any]:
    """Per perturbed query set and system: the metric (with interval) and the paired
    comparison perturbed - clean (negative = a drop), per language and pooled."""
    clean = per_query_sets["clean"]
    out: Dict[str, Any] = {}
    for qset, tables in per_query_sets.items():
        if qset == "clean":
            continue
        out[qset] = {}
        for name, t in tables.items():
            rows = compare_fn({"clean": clean[name], qset: t}, "clean", metric_names, n_boot=n_boot, seed=seed, n_perm=n_perm)
            out[qset][name] = {
                "metrics": {m: macro_ci(t[m].to_pylist(), t["lang"].to_pylist(), n_boot, seed) for m in metric_names},
                "clean": {m: macro_ci(clean[name][m].to_pylist(), clean[name]["lang"].to_pylist(), n_boot, seed) for m in metric_names},
                "comparisons": rows,
            }
    return out


def languages(cfg: RunConfig, per_query: Mapping[str, pa.Table], metric_names: Sequence[str], n_boot: int, seed: int) -> Dict[str, Any]:
    """Per-language (and per-group) values with intervals, languages in resource order."""
    any_t = next(iter(per_query.values()))
    langs = language_order(any_t["lang"].to_pylist(), cfg.eval.language_order)
    groups = group_of(cfg.eval.language_groups)
    table: Dict[str, Any] = {}
    swept = {s.name for s in cfg.systems if s.sweep_of}
    for name, t in per_query.items():
        if name in swept:
            continue  # the sweep section shows those
        lang_col = np.asarray(t["lang"].to_pylist())
        entry: Dict[str, Any] = {}
        for m in metric_names:
            vals = t[m].to_pylist()
            per = {}
            for lang in langs:
                sel = [v for v, lg in zip(vals, lang_col) if lg == lang]
                per[lang] = macro_ci(sel, [lang] * len(sel), n_boot, seed)
            for g, members in cfg.eval.language_groups.items():
                sel = [(v, lg) for v, lg in zip(vals, lang_col) if lg in members]
                per[f"group:{g}"] = macro_ci([v for v, _ in sel], [lg for _, lg in sel], n_boot, seed)
            entry[m] = per
        table[name] = entry
    return {"order": langs, "resource_gib": {lang: resource_level(lang) for lang in langs},
            "groups": {lang: groups.get(lang) for lang in langs}, "values": table,
            "ordered_by": "eval.language_order" if cfg.eval.language_order else "CC-100 GiB (languages.py)"}
