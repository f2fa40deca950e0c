"""The report's question quality: a table per generator and one chart of each flag's rate and the round trip per language.

Drawn from metrics.json's ``question_quality`` (generator -> ``{"unfiltered",
"kept", "filter", "settings"}`` for generating kinds, ``{"unfiltered"}`` for
provided questions such as the held-out human ones, see
:mod:`xqg_ray.evaluation.question_quality`).  The chart puts each
generator's unfiltered questions beside the others' (the human questions'
figures are the reference a generator should reach).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ..evaluation.question_quality import SELECTIONS
from .cells import MISSING, integer, number, pct, table
from .plots import figure_png

# The flags drawn and tabulated, in order, with their column titles.
FLAG_COLUMNS = (("wrong_language", "wrong language"), ("exemplar_exact", "exemplar exact"),
                ("exemplar_near", "exemplar near"), ("duplicate", "duplicate"), ("degenerate", "degenerate"),
                ("empty", "empty"))
CHART = "plots/question_quality.png"
# The chart's panels: every flag, then the round trip (rate@1 of the sampled questions; the human
# questions' beside a generator's are what retrieval-ready questions reach).
ROUND_TRIP_PANEL = ("round_trip", "round trip @1")
PANELS = FLAG_COLUMNS + (ROUND_TRIP_PANEL,)


def _row(label: str, g: Mapping[str, Any]) -> List[str]:
    rates = g.get("rates") or {}
    rt = g.get("round_trip") or {}
    tokens = (g.get("length") or {}).get("tokens") or {}
    return [label, integer(g.get("n"))] + [pct(rates.get(k)) for k, _ in FLAG_COLUMNS] + [
        pct(rates.get("rejected")), number(tokens.get("mean")), pct(rt.get("rate@1")) if rt else MISSING]


def quality_tables(quality: Mapping[str, Any]) -> List[str]:
    """report.md lines: per generator and selection, a table of languages x flag rates (%), then the filter's counts."""
    if not quality:
        return []
    header = ["language", "n"] + [t for _, t in FLAG_COLUMNS] + ["any flag", "mean tokens", "round trip @1"]
    lines = ["## Question quality", "",
             "Share of questions (%) flagged by each measure of `evaluation/quality.py`, per generator: "
             "`unfiltered` = the first draws with any text (the queries the data files hold), `kept` = what the "
             "generator's filters kept, `passed` (with `filters.fill_empty`) = the kept questions without those the fill "
             "added back after the round trip rejected them. Round trip @1: the share of a sample of questions whose own passage ranks "
             "first among its partition's passages under the run's encoder (where measured: a provided generator's, "
             "such as the held-out human questions, in the generating generators' languages).", ""]
    for name, q in quality.items():
        for sel in SELECTIONS:
            rep = q.get(sel)
            if not rep:
                continue
            rows = [_row(lang, g) for lang, g in rep.get("by_language", {}).items()] + [_row("all", rep["overall"])]
            lines += [f"### {name} ({sel})", ""] + table(header, rows) + [""]
        f = q.get("filter")
        if f:
            by = ", ".join(f"{r} {integer(c)}" for r, c in f["rejected"]["by_reason"].items())
            lines += [f"Filter of {name}: {integer(f['draws'])} draws, {integer(f['kept'])} kept, "
                      f"{integer(f['rejected']['total'])} rejected ({by})"
                      + (f"; {integer(f['filled'])} more failed the round trip and were kept to fill a slot (its best rank)"
                         if f.get("filled") else "")
                      + f"; {integer(f['left_empty'])} slots left empty "
                      f"(settings: {dict(q.get('settings') or {})}).", ""]
    return lines + [f"![question quality]({CHART})", ""]


def _rate(g: Mapping[str, Any], panel: str) -> Optional[float]:
    if panel == ROUND_TRIP_PANEL[0]:
        return (g.get("round_trip") or {}).get("rate@1")
    return g["rates"].get(panel)


def chart_series(quality: Mapping[str, Any]) -> Dict[str, Dict[str, Dict[str, Optional[float]]]]:
    """panel (each flag, then ``round_trip``: its rate@1) -> generator -> language -> rate of the generator's
    unfiltered questions (None where absent or, for the round trip, not measured)."""
    langs = sorted({lang for q in quality.values() for lang in (q.get("unfiltered") or {}).get("by_language", {})})
    out: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {}
    for panel, _ in PANELS:
        out[panel] = {}
        for name, q in quality.items():
            by = (q.get("unfiltered") or {}).get("by_language", {})
            out[panel][name] = {lang: (_rate(by[lang], panel) if lang in by else None) for lang in langs}
    return out


def quality_chart_png(quality: Mapping[str, Any]) -> bytes:
    """One panel per flag: bars of each generator's rate (%) per language, side by side; PNG bytes (no
    matplotlib version in the metadata: the same input gives the same bytes)."""
    import matplotlib

    matplotlib.use("Agg")  # headless workers have no display
    from matplotlib.figure import Figure

    series = chart_series(quality)
    names = list(quality)
    langs = sorted({lang for per in series[FLAG_COLUMNS[0][0]].values() for lang in per})
    fig = Figure(figsize=(min(24.0, 2.2 + 2.6 * len(PANELS)), 4.0), dpi=100)
    width = 0.8 / max(1, len(names))
    for k, (flag, title) in enumerate(PANELS):
        ax = fig.add_subplot(1, len(PANELS), k + 1)
        for j, name in enumerate(names):
            vals = [series[flag][name].get(lang) for lang in langs]
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(langs))]
            # A missing value is a gap, never a zero bar.
            ax.bar([x for x, v in zip(xs, vals) if v is not None], [100.0 * v for v in vals if v is not None], width, label=name)
        ax.set_xticks(range(len(langs)))
        ax.set_xticklabels(langs)
        ax.set_title(title)
        top = max([100.0 * v for per in series[flag].values() for v in per.values() if v is not None] + [0.0])
        ax.set_ylim(0.0, max(1.0, 1.1 * top))  # a rate of 0 sits on the axis, never below it
        if k == 0:
            ax.set_ylabel("% of questions")
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=max(1, len(names)), fontsize="small")
    return figure_png(fig, rect=(0.0, 0.0, 1.0, 0.9))
