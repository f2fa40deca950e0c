"""Human-readable outputs of a run: report.md text and bar-chart PNGs.

Both functions take the metrics.json structure::

    {"systems": {name: {"per_language": {lang: {metric: v, "n": n, ...}},
                        "macro": {metric: v, "n": n, ...}}},
     "comparisons": [row, ...],          # significance.compare() rows
     "stages": {stage: {"rows": int, "seconds": float, "rows_per_s": float}},
     ...scalar run facts such as "benchmark", "tokenizer"...}

and return data (str / PNG bytes) instead of writing files, so the caller
decides where they go (local disk or object storage) and tests need no disk.
Metric values are fractions in [0, 1]; the report shows percentages.
"""

from __future__ import annotations

import io
import math
from typing import Any, Iterable, Mapping, Sequence

from xqg_ray.evaluation.metrics import METRIC_NAMES

MISSING = "–"  # en dash: what any None / absent value renders as

# Metrics that get a per-language table: the XOR-Retrieve headline metrics plus
# one rank-sensitive metric.  Recall@k per language is in metrics.json.
PER_LANGUAGE_METRICS = ["R@2kt", "R@5kt", "MRR@10"]

SIGNIFICANCE_ALPHA = 0.05

# Top-level keys that are structured data, rendered in their own sections.
_STRUCTURED_KEYS = {"systems", "comparisons", "stages", "title", "indexes", "experiments", "plots"}


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _pct(v: Any) -> str:
    return MISSING if _is_missing(v) else f"{100.0 * float(v):.1f}"


def _points(v: Any) -> str:
    # Differences in percentage points carry an explicit sign.
    return MISSING if _is_missing(v) else f"{100.0 * float(v):+.1f}"


def _pvalue(v: Any) -> str:
    if _is_missing(v):
        return MISSING
    v = float(v)
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _int(v: Any) -> str:
    return MISSING if _is_missing(v) else f"{int(v):,}"


def _float(v: Any, digits: int = 1) -> str:
    return MISSING if _is_missing(v) else f"{float(v):,.{digits}f}"


def _cell(v: Any) -> str:
    # A "|" inside a cell would split the markdown table row.
    text = MISSING if _is_missing(v) else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


def _systems(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return dict(metrics.get("systems") or {})


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


def _languages(systems: Mapping[str, Any]) -> list[str]:
    langs: set[str] = set()
    for sysm in systems.values():
        langs.update((sysm.get("per_language") or {}).keys())
    return sorted(langs)


def bar_chart_png(metrics: Mapping[str, Any], metric: str = "R@2kt") -> bytes:
    """Grouped bar chart of ``metric``: one group per language plus "macro", one bar per system.

    Returns PNG bytes; nothing is written to disk.  Missing values leave a gap.
    """
    import matplotlib

    # Headless workers have no display; Agg renders straight to a buffer.
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    systems = _systems(metrics)
    groups = _languages(systems) + ["macro"]
    names = list(systems)

    def value(sysm: Mapping[str, Any], group: str) -> float:
        block = sysm.get("macro") if group == "macro" else (sysm.get("per_language") or {}).get(group)
        v = (block or {}).get(metric)
        return math.nan if _is_missing(v) else float(v)

    # Figure() rather than pyplot: no global figure registry to leak memory in
    # long-running workers that draw many charts.
    width_in = max(6.0, 0.6 * len(groups) * max(1, len(names)) + 2.0)
    fig = Figure(figsize=(min(width_in, 24.0), 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    bar_w = 0.8 / max(1, len(names))
    for s_idx, name in enumerate(names):
        xs = [g + (s_idx - (len(names) - 1) / 2.0) * bar_w for g in range(len(groups))]
        ys = [value(systems[name], group) for group in groups]
        bars = ax.bar(xs, [0.0 if math.isnan(y) else y for y in ys], width=bar_w, label=name)
        # A missing value gets no bar at all, so it cannot be read as a score of 0.
        for y, patch in zip(ys, bars.patches):
            if math.isnan(y):
                patch.set_visible(False)
    ax.set_xticks(list(range(len(groups))))
    ax.set_xticklabels(groups)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel(f"{metric} (fraction)")
    ax.set_title(metric)
    if names:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


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
    lines += [f"- **{k}**: {MISSING if _is_missing(v) else v}" for k, v in facts]
    return lines + [""]


def _macro_section(systems: Mapping[str, Any], metric_names: Sequence[str]) -> list[str]:
    header = ["System"] + list(metric_names) + ["n"]
    rows = []
    for name, sysm in systems.items():
        macro = sysm.get("macro") or {}
        rows.append([name] + [_pct(macro.get(m)) for m in metric_names] + [_int(macro.get("n"))])
    return ["## Macro averages (%)", "",
            "Unweighted mean over languages.", ""] + _table(header, rows) + [""]


def _per_language_section(systems: Mapping[str, Any], metric: str) -> list[str]:
    langs = _languages(systems)
    names = list(systems)
    # n = questions counted for this metric (yes/no-only questions are not).
    header = ["Language", "n"] + names
    rows = []
    for lang in langs:
        blocks = [(systems[n].get("per_language") or {}).get(lang) or {} for n in names]
        # n is the language's query count; identical across systems scoring the
        # same queries, so show the first one available.
        n = next((b.get(f"n_{metric}", b.get("n")) for b in blocks if b), None)
        rows.append([lang, _int(n)] + [_pct(b.get(metric)) for b in blocks])
    macro_row = ["macro", MISSING] + [_pct((systems[n].get("macro") or {}).get(metric)) for n in names]
    rows.append(macro_row)
    return [f"## {metric} per language (%)", ""] + _table(header, rows) + [""]


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
        ordered = sorted(group, key=lambda r: 0 if r.get("lang") == "all" else 1)
        for r in ordered:
            ci = r.get("ci95") or [None, None]
            lo, hi = (list(ci) + [None, None])[:2]
            ci_text = MISSING if _is_missing(lo) or _is_missing(hi) else f"[{_points(lo)}, {_points(hi)}]"
            p_holm = r.get("p_holm")
            sig = "*" if not _is_missing(p_holm) and float(p_holm) < SIGNIFICANCE_ALPHA else ""
            rows.append([
                r.get("system"), r.get("baseline"), r.get("metric"), r.get("lang"),
                _int(r.get("n")), _points(r.get("mean_diff")), ci_text,
                _pvalue(r.get("p_value")), _pvalue(p_holm), sig,
            ])
    note = (f"Δ = system − baseline in percentage points; paired t-test; 95% CI by "
            f"bootstrap; p_holm is Holm-adjusted across languages (the pooled \"all\" row "
            f"is unadjusted); * marks p_holm < {SIGNIFICANCE_ALPHA}.")
    return ["## Comparisons against the baseline", "", note, ""] + _table(header, rows) + [""]


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
        rows.append([stage, _int(info.get("rows")), _float(info.get("seconds")),
                     _float(info.get("rows_per_s"))])
    return ["## Pipeline stages", ""] + _table(header, rows) + [""]


def _definitions_section(indexes: Mapping[str, Any]) -> list[str]:
    """What each system is: its generator, aggregation, alpha and queries per passage."""
    header = ["System", "Encoder", "Generator", "Aggregation", "alpha", "n/language", "Queries/passage (min–max)", "Passages without"]
    rows = []
    for name, ix in indexes.items():
        ix = ix if isinstance(ix, Mapping) else {}
        c = ix.get("query_counts") or {}
        gen = ix.get("generator")
        rows.append([name, ix.get("encoder_name") or MISSING, gen or "– (E(p) only)", ix.get("aggregation") or MISSING,
                     MISSING if not gen else f"{ix.get('alpha'):g}", MISSING if not gen else (ix.get("n") or "all"),
                     f"{c['min']}–{c['max']}" if c else MISSING, _int(c.get("zero")) if c else MISSING])
    return ["## Systems", ""] + _table(header, rows) + [""]


def render_markdown(metrics: Mapping[str, Any], chart_names: Mapping[str, str], experiment_charts: Mapping[str, str] | None = None) -> str:
    """report.md text for one run.

    Sections (each only when there is data for it): run facts (every scalar
    top-level entry of ``metrics``, e.g. benchmark, tokenizer), macro table,
    per-language tables for ``PER_LANGUAGE_METRICS``, comparisons, charts
    (``chart_names`` maps metric -> relative PNG path) and pipeline stages.
    Metric values are shown as percentages with one decimal; None renders as "–".
    """
    title = metrics.get("title") or "xqg-ray retrieval report"
    lines: list[str] = [f"# {title}", ""]
    lines += _facts_section(metrics)

    indexes = metrics.get("indexes")
    if isinstance(indexes, Mapping) and indexes:
        lines += _definitions_section(indexes)

    systems = _systems(metrics)
    metric_names = _metric_names(systems)
    if systems:
        lines += _macro_section(systems, metric_names)
        for metric in PER_LANGUAGE_METRICS:
            if metric in metric_names:
                lines += _per_language_section(systems, metric)

    comparisons = metrics.get("comparisons") or []
    if comparisons:
        lines += _comparisons_section(comparisons)

    from .experiments import render_experiments

    lines += render_experiments(metrics, experiment_charts or {})

    if chart_names:
        lines += _charts_section(chart_names)

    stages = metrics.get("stages")
    if isinstance(stages, Mapping) and stages:
        lines += _stages_section(stages)

    return "\n".join(lines).rstrip("\n") + "\n"
