"""report.md: the text of one run's report, drawn from metrics.json's structure.

``render_markdown`` takes::

    {"systems": {name: {"per_language": {lang: {metric: v, "n": n, ...}},
                        "macro": {metric: v, "n": n, ...}}},
     "comparisons": [row, ...],          # significance.compare() rows
     "stages": {stage: {"rows": int, "seconds": float, "rows_per_s": float}},
     ...scalar run facts such as "benchmark", "tokenizer"...}

and returns the text instead of writing a file, so the caller decides where it
goes (:mod:`xqg_ray.report.write`) and tests need no disk.  Cells are formatted
by :mod:`xqg_ray.report.cells`; the experiment sections come from
:mod:`xqg_ray.report.experiments`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..evaluation.coverage import NOT_COVERED, is_covered
from ..evaluation.metrics import METRIC_NAMES, headline_metrics
from ..evaluation.significance import POOLED
from .cells import (
    MISSING, NOT_COVERED_CELL, SIGNIFICANCE_ALPHA, integer, is_missing, languages_of, number, pct, points, pvalue, systems_of, table,
)
from .experiments import render_experiments
from .training import training_section

# Top-level keys that are structured data, rendered in their own sections.
_STRUCTURED_KEYS = {"systems", "comparisons", "stages", "title", "indexes", "experiments", "plots", "training"}


def _metric_names(systems: Mapping[str, Any]) -> list[str]:
    """Metrics present in any system's macro block: known ones in canonical order, then others."""
    present: list[str] = []
    for sysm in systems.values():
        for key in (sysm.get("macro") or {}):
            # "n" and "n_*" are counts, not metrics.
            if key == "n" or key.startswith("n_") or key in present:
                continue
            present.append(key)
    known = [m for m in METRIC_NAMES if m in present]
    return known + [m for m in present if m not in known]


def _facts_section(metrics: Mapping[str, Any]) -> list[str]:
    facts: list[tuple[str, Any]] = []
    for key, val in metrics.items():
        if key in _STRUCTURED_KEYS:
            continue
        if isinstance(val, (str, int, float, bool)) or val is None:
            facts.append((key, val))
        elif isinstance(val, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in val):
            facts.append((key, ", ".join(str(v) for v in val)))
        elif isinstance(val, Mapping):
            # One level of nesting (e.g. the benchmark summary) reads as "key.sub".
            for sub, v in val.items():
                if isinstance(v, (str, int, float, bool)) or v is None:
                    facts.append((f"{key}.{sub}", v))
                elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
                    facts.append((f"{key}.{sub}", ", ".join(str(x) for x in v)))
    if not facts:
        return []
    lines = ["## Run", ""]
    lines += [f"- **{k}**: {MISSING if is_missing(v) else v}" for k, v in facts]
    return lines + [""]


def _macro_section(systems: Mapping[str, Any], metric_names: Sequence[str]) -> list[str]:
    header = ["System"] + list(metric_names) + ["n"]
    rows = []
    for name, sysm in systems.items():
        macro = sysm.get("macro") or {}
        rows.append([name] + [pct(macro.get(m)) for m in metric_names] + [integer(macro.get("n"))])
    return ["## Macro averages (%)", "",
            "Unweighted mean over languages."] + _coverage_note(systems) + [""] + table(header, rows) + [""]


def _coverage_note(systems: Mapping[str, Any]) -> list[str]:
    """A bullet per system whose encoder does not cover some query languages (evaluation/coverage.py); none, no lines."""
    notes = [f"- {name}: its encoder does not cover {', '.join(sysm[NOT_COVERED])}; not scored there, "
             f"so its macro (and n) is over the covered languages only."
             for name, sysm in systems.items() if sysm.get(NOT_COVERED)]
    return [""] + notes if notes else []


def _per_language_section(systems: Mapping[str, Any], metric: str) -> list[str]:
    langs = languages_of(systems)
    names = list(systems)
    # n = questions counted for this metric (yes/no-only questions are not).
    header = ["Language", "n"] + names
    rows = []
    for lang in langs:
        blocks = [(systems[n].get("per_language") or {}).get(lang) or {} for n in names]
        # n is the language's query count; identical across systems scoring the
        # same queries, so show the first one available.
        n = next((b.get(f"n_{metric}", b.get("n")) for b in blocks if b), None)
        rows.append([lang, integer(n)] + [pct(b.get(metric)) if is_covered(b) else NOT_COVERED_CELL for b in blocks])
    macro_row = ["macro", MISSING] + [pct((systems[n].get("macro") or {}).get(metric)) for n in names]
    rows.append(macro_row)
    return [f"## {metric} per language (%)", ""] + table(header, rows) + [""]


def _comparisons_section(comparisons: Sequence[Mapping[str, Any]]) -> list[str]:
    # Group rows per (baseline, system, metric) keeping first-seen order, and
    # put the pooled "all" row first in each group: it is the headline.
    groups: dict[tuple[Any, Any, Any], list[Mapping[str, Any]]] = {}
    for row in comparisons:
        key = (row.get("baseline"), row.get("system"), row.get("metric"))
        groups.setdefault(key, []).append(row)
    header = ["System", "Baseline", "Metric", "Lang", "n", "Δ (pts)", "95% CI (pts)",
              "p", "p_holm", "sig."]
    rows = []
    for group in groups.values():
        ordered = sorted(group, key=lambda r: 0 if r.get("lang") == POOLED else 1)
        for r in ordered:
            ci = r.get("ci95") or [None, None]
            lo, hi = (list(ci) + [None, None])[:2]
            ci_text = MISSING if is_missing(lo) or is_missing(hi) else f"[{points(lo)}, {points(hi)}]"
            p_holm = r.get("p_holm")
            sig = "*" if not is_missing(p_holm) and float(p_holm) < SIGNIFICANCE_ALPHA else ""
            rows.append([
                r.get("system"), r.get("baseline"), r.get("metric"), r.get("lang"),
                integer(r.get("n")), points(r.get("mean_diff")), ci_text,
                pvalue(r.get("p_value")), pvalue(p_holm), sig,
            ])
    note = (f"Δ = system − baseline in percentage points; paired t-test; 95% CI by "
            f"bootstrap; p_holm is Holm-adjusted across languages (the pooled \"all\" row "
            f"is unadjusted); * marks p_holm < {SIGNIFICANCE_ALPHA}.")
    return ["## Comparisons against the baseline", "", note, ""] + table(header, rows) + [""]


def _charts_section(chart_names: Mapping[str, str]) -> list[str]:
    lines = ["## Charts", ""]
    for metric, fname in chart_names.items():
        lines += [f"### {metric}", "", f"![{metric}]({fname})", ""]
    return lines


def _stages_section(stages: Mapping[str, Any]) -> list[str]:
    header = ["Stage", "Rows", "Seconds", "Rows/s"]
    rows = []
    for stage, info in stages.items():
        info = info if isinstance(info, Mapping) else {}
        rows.append([stage, integer(info.get("rows")), number(info.get("seconds")),
                     number(info.get("rows_per_s"))])
    return ["## Pipeline stages", ""] + table(header, rows) + [""]


def _definitions_section(indexes: Mapping[str, Any]) -> list[str]:
    """What each system is: its generator (with the selection of its questions it read: unfiltered
    or kept), aggregation, alpha and queries per passage."""
    header = ["System", "Encoder", "Generator", "Aggregation", "alpha", "n/language", "Queries/passage (min–max)", "Passages without"]
    rows = []
    for name, ix in indexes.items():
        ix = ix if isinstance(ix, Mapping) else {}
        c = ix.get("query_counts") or {}
        gen = ix.get("generator")
        # Provided queries are not filtered: they (and indexes from before filters) name no selection.
        sel = f" ({ix['questions']})" if gen and ix.get("questions") else ""
        rows.append([name, ix.get("encoder_name") or MISSING, f"{gen}{sel}" if gen else "– (E(p) only)", ix.get("aggregation") or MISSING,
                     MISSING if not gen else f"{ix.get('alpha'):g}", MISSING if not gen else (ix.get("n") or "all"),
                     f"{c['min']}–{c['max']}" if c else MISSING, integer(c.get("zero")) if c else MISSING])
    return ["## Systems", ""] + table(header, rows) + [""]


def render_markdown(metrics: Mapping[str, Any], chart_names: Mapping[str, str], experiment_charts: Mapping[str, str] | None = None) -> str:
    """report.md text for one run.

    Sections (each only when there is data for it): run facts (every scalar
    top-level entry of ``metrics``, e.g. benchmark, tokenizer), macro table,
    per-language tables for the headline metrics (``headline_metrics``), comparisons,
    experiments (sweeps, robustness, languages, with ``experiment_charts``), charts
    (``chart_names`` maps metric -> relative PNG path) and pipeline stages.
    Metric values are shown as percentages with one decimal; None renders as "–".
    """
    title = metrics.get("title") or "xqg-ray retrieval report"
    lines: list[str] = [f"# {title}", ""]
    lines += _facts_section(metrics)

    indexes = metrics.get("indexes")
    if isinstance(indexes, Mapping) and indexes:
        lines += _definitions_section(indexes)

    systems = systems_of(metrics)
    metric_names = _metric_names(systems)
    if systems:
        lines += _macro_section(systems, metric_names)
        for metric in headline_metrics(metric_names):
            lines += _per_language_section(systems, metric)

    comparisons = metrics.get("comparisons") or []
    if comparisons:
        lines += _comparisons_section(comparisons)
    lines += training_section(metrics)  # only when the run trained an encoder

    lines += render_experiments(metrics, experiment_charts or {})

    if chart_names:
        lines += _charts_section(chart_names)

    stages = metrics.get("stages")
    if isinstance(stages, Mapping) and stages:
        lines += _stages_section(stages)

    return "\n".join(lines).rstrip("\n") + "\n"
