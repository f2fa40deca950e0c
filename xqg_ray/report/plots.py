"""Report figures: the per-metric bar chart, and the forest, sweep, robustness and per-language plots.

Every function takes plain lists/dicts (what metrics.json holds) and returns PNG
bytes: matplotlib's Agg backend on a ``Figure`` (no pyplot registry), and PNG
metadata without the matplotlib version, so the same input gives the same bytes
(except the bar chart, which has always carried it: see ``bar_chart_png``).

The one shape shared by most inputs, a *point*: a metric value with an optional
confidence interval, written as any of::

    0.42                               # value only
    {"value": 0.42, "ci": [0.39, 0.45]}
    None                               # missing: drawn as a gap, never as 0

Values are fractions in [0, 1] (or differences of fractions) and are drawn in
percent (percentage points for differences) unless ``percent=False``.
Mismatched lengths (a series with fewer points than x values, a CI that is not
[lo, hi]) raise ValueError.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Optional, Sequence, Union

from ..evaluation.metrics import METRIC_NAMES
from ..evaluation.significance import POOLED
from .cells import SIGNIFICANCE_ALPHA, is_missing, languages_of, systems_of

Point = Union[None, float, Mapping[str, Any]]



def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless workers have no display
    from matplotlib.figure import Figure

    return Figure(figsize=(min(width, 24.0), min(height, 40.0)), dpi=100)


def figure_png(fig: Any, version_stamp: bool = False, rect: Optional[Sequence[float]] = None) -> bytes:
    """PNG bytes of ``fig``, laid out tight (within ``rect``, figure fractions, when given): every chart's one
    way to a file."""
    fig.tight_layout(**({} if rect is None else {"rect": tuple(rect)}))
    # tight_layout leaves a placeholder layout engine behind, and savefig draws a figure that has a layout
    # engine twice (once without rendering, to lay it out again): the layout is final, so drop the engine.
    # Same bytes; a smoke run's 8 charts: Figure.draw 16 -> 8 calls, 1.85 and 1.78 -> 1.35 and 1.50 CPU-s (2026-12-06).
    fig.set_layout_engine(None)
    buf = io.BytesIO()
    # No "Software" entry: it names the matplotlib version, and bytes should not
    # change with it; Agg output is otherwise a pure function of the input.
    fig.savefig(buf, format="png", **({} if version_stamp else {"metadata": {"Software": None}}))
    return buf.getvalue()


def _num(v: Any, what: str) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a number, got {v!r}") from None


def _point(p: Point, what: str, scale: float) -> tuple[float, float, float]:
    """(value, lo, hi) scaled; NaN for what is missing."""
    if p is None or isinstance(p, (int, float)):
        v = _num(p, what) * scale
        return v, math.nan, math.nan
    if not isinstance(p, Mapping) or "value" not in p:
        raise ValueError(f"{what}: a point is a number, None or {{'value': v, 'ci': [lo, hi]}}, got {p!r}")
    ci = p.get("ci")
    if ci is None:
        ci = [None, None]
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        raise ValueError(f"{what}: ci must be [lo, hi], got {ci!r}")
    return tuple(_num(v, what) * scale for v in (p["value"], ci[0], ci[1]))  # type: ignore[return-value]


def _series(series: Mapping[str, Sequence[Point]], n: int, axis_name: str, scale: float) -> dict[str, list]:
    if not series:
        raise ValueError("no series to plot")
    out = {}
    for name, pts in series.items():
        if len(pts) != n:
            raise ValueError(f"series {name!r} has {len(pts)} points for {n} {axis_name}")
        out[name] = [_point(p, f"series {name!r} point {i}", scale) for i, p in enumerate(pts)]
    return out


def _errbar(ax: Any, xs: Sequence[float], pts: Sequence[tuple[float, float, float]], horizontal: bool = False,
            **kw: Any) -> None:
    """Markers at the values, whiskers where a CI exists; NaN values are skipped."""
    keep = [(x, v, lo, hi) for x, (v, lo, hi) in zip(xs, pts) if not math.isnan(v)]
    if not keep:
        return
    x, v, lo, hi = (list(t) for t in zip(*keep))
    err = [[0.0 if math.isnan(a) else max(0.0, b - a) for a, b in zip(lo, v)],
           [0.0 if math.isnan(c) else max(0.0, c - b) for b, c in zip(v, hi)]]
    kw.setdefault("marker", "o")
    if horizontal:
        ax.errorbar(v, x, xerr=err, linestyle="none", capsize=3, **kw)
    else:
        ax.errorbar(x, v, yerr=err, linestyle="none", capsize=3, **kw)


def _offsets(k: int, width: float = 0.7) -> list[float]:
    # Series side by side within one category, so their whiskers do not overlap.
    step = width / max(1, k)
    return [(i - (k - 1) / 2.0) * step for i in range(k)]


def _categories(names: Sequence[str], pts: Mapping[str, list], inches_each: float) -> tuple[Any, Any]:
    """(figure, axes) with one x category per name and, per series, its points side by side with CIs."""
    fig = _figure(max(6.0, inches_each * len(names) + 3.0), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    offs = _offsets(len(pts))
    for i, (name, ps) in enumerate(pts.items()):
        _errbar(ax, [j + offs[i] for j in range(len(names))], ps, color=f"C{i % 10}", label=name)
    ax.set_xticks(list(range(len(names))))
    ax.set_xticklabels(list(names))
    return fig, ax


def _legend(ax: Any) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")


def bar_values(metrics: Mapping[str, Any], metric: str) -> tuple[list[str], dict[str, list[Optional[float]]]]:
    """The bar chart's groups (languages sorted, then "macro") and, per system, its value
    of ``metric`` in each group: None where it has none (a gap, never a bar of 0)."""
    systems = systems_of(metrics)
    groups = languages_of(systems) + ["macro"]

    def value(sysm: Mapping[str, Any], group: str) -> Optional[float]:
        block = sysm.get("macro") if group == "macro" else (sysm.get("per_language") or {}).get(group)
        v = (block or {}).get(metric)
        return None if is_missing(v) else float(v)

    return groups, {name: [value(sysm, g) for g in groups] for name, sysm in systems.items()}


def bar_chart_figure(metrics: Mapping[str, Any], metric: str = METRIC_NAMES[0]) -> Any:
    """The figure of ``bar_chart_png``, before encoding: one bar container per system, in
    system order, one bar per group; a missing value's bar is invisible."""
    groups, values = bar_values(metrics, metric)
    names = list(values)
    fig = _figure(max(6.0, 0.6 * len(groups) * max(1, len(names)) + 2.0), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    bar_w = 0.8 / max(1, len(names))
    for s_idx, name in enumerate(names):
        xs = [g + (s_idx - (len(names) - 1) / 2.0) * bar_w for g in range(len(groups))]
        ys = values[name]
        bars = ax.bar(xs, [0.0 if y is None else y for y in ys], width=bar_w, label=name)
        # A missing value gets no bar at all, so it cannot be read as a score of 0.
        for y, patch in zip(ys, bars.patches):
            if y is None:
                patch.set_visible(False)
    ax.set_xticks(list(range(len(groups))))
    ax.set_xticklabels(groups)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel(f"{metric} (fraction)")
    ax.set_title(metric)
    if names:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


def bar_chart_png(metrics: Mapping[str, Any], metric: str = METRIC_NAMES[0]) -> bytes:
    """Grouped bar chart of ``metric``: one group per language plus "macro", one bar per system.

    ``metrics`` is metrics.json's structure.  Returns PNG bytes; nothing is
    written to disk.  Missing values leave a gap.  Unlike the other figures the
    PNG keeps matplotlib's "Software" entry: that is what every run so far wrote.
    """
    return figure_png(bar_chart_figure(metrics, metric), version_stamp=True)


def forest_plot(
    rows: Sequence[Mapping[str, Any]],
    metric: Optional[str] = None,
    p_key: str = "p_holm",
    alpha: float = SIGNIFICANCE_ALPHA,
    percent: bool = True,
    title: str = "",
) -> bytes:
    """Each system's difference from its baseline per language (+ pooled), with 95% CIs.

    ``rows`` are significance.compare() rows (keys system, lang, mean_diff,
    ci95, ``p_key``; baseline and metric are used for the title).  With
    ``metric`` given, other metrics' rows are left out; otherwise all rows must
    share one metric.  Filled markers: ``p_key`` < alpha (Holm-adjusted by
    default); the pooled "all" row is a diamond; rows without statistics
    (mean_diff None) keep their label and get no marker.
    """
    sel = [r for r in rows if metric is None or r.get("metric") == metric]
    if not sel:
        raise ValueError(f"no comparison rows{'' if metric is None else f' for metric {metric!r}'}")
    metrics = sorted({str(r.get("metric")) for r in sel})
    if len(metrics) > 1:
        raise ValueError(f"rows mix metrics {metrics}: pass metric=")
    scale = 100.0 if percent else 1.0
    fig = _figure(8.0, 1.4 + 0.32 * len(sel))
    ax = fig.add_subplot(1, 1, 1)
    systems = list(dict.fromkeys(str(r.get("system")) for r in sel))
    colours = {s: f"C{i % 10}" for i, s in enumerate(systems)}
    labels: list[str] = []
    ys: list[float] = []
    y = 0.0
    for s in systems:
        for r in (r for r in sel if str(r.get("system")) == s):
            ci = r.get("ci95") if r.get("ci95") is not None else [None, None]
            if not isinstance(ci, (list, tuple)) or len(ci) != 2:
                raise ValueError(f"row {s}/{r.get('lang')}: ci95 must be [lo, hi], got {ci!r}")
            v, lo, hi = _point({"value": r.get("mean_diff"), "ci": ci}, f"row {s}/{r.get('lang')}", scale)
            p = r.get(p_key)
            sig = p is not None and float(p) < alpha
            pooled = r.get("lang") == POOLED
            labels.append(f"{s}: {'pooled' if pooled else r.get('lang')}")
            ys.append(-y)
            if not math.isnan(v):
                _errbar(ax, [-y], [(v, lo, hi)], horizontal=True, color=colours[s], mfc=colours[s] if sig else "white",
                        marker="D" if pooled else "o", markersize=7 if pooled else 5)
            y += 1.0
        y += 0.6  # a gap between systems
    ax.axvline(0.0, color="0.3", linewidth=1.0)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize="small")
    base = sorted({str(r.get("baseline")) for r in sel if r.get("baseline") is not None})
    unit = "points" if percent else "difference"
    ax.set_xlabel(f"{metrics[0]}: system - {'/'.join(base) or 'baseline'} ({unit}, 95% CI)")
    ax.set_title(title or f"{metrics[0]}: difference from {'/'.join(base) or 'baseline'}")
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.lines import Line2D

    # Legend in neutral grey: colour says which system, fill says significance.
    key = [Line2D([], [], color="0.3", marker="o", linestyle="none", label=f"{p_key} < {alpha}"),
           Line2D([], [], color="0.3", marker="o", mfc="white", linestyle="none", label="not significant"),
           Line2D([], [], color="0.3", marker="D", mfc="white", linestyle="none", label="pooled (all languages)")]
    ax.legend(handles=key, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return figure_png(fig)


def sweep_plot(
    x: Sequence[Union[float, str]],
    series: Mapping[str, Sequence[Point]],
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    percent: bool = True,
    title: str = "",
) -> bytes:
    """A metric against a swept parameter: one line (with a 95% band) per series.

    ``x`` are the sweep values (e.g. alpha or n); if any is a string (e.g. the
    aggregation "sum"/"mean") the axis is categorical and each series is drawn
    as points with whiskers.  ``series`` maps a name (a metric or a system) to
    one point per x value.  ``log_x``: a log axis, symlog when 0 is swept
    (alpha = 0 is the baseline), linear below the smallest positive x.
    """
    if not x:
        raise ValueError("sweep_plot needs at least one x value")
    pts = _series(series, len(x), "x values", 100.0 if percent else 1.0)
    categorical = any(isinstance(v, str) for v in x)
    if log_x and categorical:
        raise ValueError("log_x needs numeric x values")
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    if categorical:
        offs = _offsets(len(pts), 0.4)
        for i, (name, ps) in enumerate(pts.items()):
            _errbar(ax, [j + offs[i] for j in range(len(x))], ps, color=f"C{i % 10}", label=name)
        ax.set_xticks(list(range(len(x))))
        ax.set_xticklabels([str(v) for v in x])
    else:
        xs = [_num(v, "x") for v in x]
        if any(math.isnan(v) for v in xs):
            raise ValueError("x values must not be None")
        order = sorted(range(len(xs)), key=lambda j: xs[j])
        for i, (name, ps) in enumerate(pts.items()):
            c = f"C{i % 10}"
            sx = [xs[j] for j in order]
            v, lo, hi = ([ps[j][k] for j in order] for k in range(3))
            ax.plot(sx, v, marker="o", color=c, label=name)
            ax.fill_between(sx, lo, hi, color=c, alpha=0.2, linewidth=0)  # NaN bounds leave gaps
        if log_x:
            if min(xs) < 0:
                raise ValueError("log_x needs x >= 0")
            positive = [v for v in xs if v > 0]
            if min(xs) == 0 and positive:
                ax.set_xscale("symlog", linthresh=min(positive))
            elif positive:
                ax.set_xscale("log")
        ax.set_xticks(sorted(set(xs)))
        ax.set_xticklabels([f"{v:g}" for v in sorted(set(xs))])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (%)" if percent else ""))
    ax.set_title(title or f"{ylabel} against {xlabel}")
    ax.grid(alpha=0.3)
    _legend(ax)
    return figure_png(fig)


def robustness_plot(
    conditions: Sequence[str],
    systems: Mapping[str, Sequence[Point]],
    metric: str,
    drop: bool = False,
    percent: bool = True,
    title: str = "",
) -> bytes:
    """Per system, the metric on clean queries and under each perturbation, with CIs.

    ``conditions`` names the x categories in order (e.g. ["clean", "typo10",
    "typo20", "word_order"]); ``systems`` maps a system to one point per
    condition.  ``drop=True`` says the points are drops from clean (clean minus
    perturbed, CIs from a paired bootstrap): a zero line is drawn and the axis
    is labelled as a drop.
    """
    if not conditions:
        raise ValueError("robustness_plot needs at least one condition")
    pts = _series(systems, len(conditions), "conditions", 100.0 if percent else 1.0)
    fig, ax = _categories(conditions, pts, 1.2)
    if drop:
        ax.axhline(0.0, color="0.3", linewidth=1.0)
    unit = (" (points)" if drop else " (%)") if percent else ""
    ax.set_ylabel(f"{metric}: drop from clean{unit}" if drop else f"{metric}{unit}")
    ax.set_title(title or f"{metric} under query perturbations")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax)
    return figure_png(fig)


def per_language_plot(
    languages: Sequence[str],
    systems: Mapping[str, Sequence[Point]],
    metric: str,
    percent: bool = True,
    title: str = "",
) -> bytes:
    """``metric`` per language in the given order (e.g. by resource level), one series per system.

    ``systems`` maps a system to one point per language (None where a system
    has no value for a language: a gap, not a 0).
    """
    if not languages:
        raise ValueError("per_language_plot needs at least one language")
    if len(set(languages)) != len(languages):
        raise ValueError(f"languages repeat: {list(languages)}")
    pts = _series(systems, len(languages), "languages", 100.0 if percent else 1.0)
    fig, ax = _categories(languages, pts, 0.9)
    ax.set_ylabel(f"{metric}{' (%)' if percent else ''}")
    ax.set_title(title or f"{metric} per language")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax)
    return figure_png(fig)
