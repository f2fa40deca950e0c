"""How values read in report.md: missing values, percentages, points, p-values, counts, table rows.

Also what the tables and the charts share: the significance level they mark, and
the two lookups of metrics.json's structure (its systems, their languages).
Metric values are fractions in [0, 1]; the report shows percentages.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

MISSING = "–"  # en dash: what any None / absent value renders as
# A language the system's encoder was not trained on (evaluation/coverage.py): not a score, not missing data.
NOT_COVERED_CELL = "not covered"

# A comparison is marked significant (table "*", filled forest marker) below this p.
SIGNIFICANCE_ALPHA = 0.05


def is_missing(v: Any) -> bool:
    """None or NaN: a value that does not exist (never drawn or printed as 0)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def pct(v: Any) -> str:
    """A fraction as a percentage with one decimal: 0.613 -> "61.3"."""
    return MISSING if is_missing(v) else f"{100.0 * float(v):.1f}"


def points(v: Any) -> str:
    """A difference of fractions in percentage points, signed: 0.087 -> "+8.7"."""
    return MISSING if is_missing(v) else f"{100.0 * float(v):+.1f}"


def pvalue(v: Any) -> str:
    """A p-value with three decimals, "<0.001" below that."""
    if is_missing(v):
        return MISSING
    v = float(v)
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def integer(v: Any) -> str:
    """A count with thousands separators."""
    return MISSING if is_missing(v) else f"{int(v):,}"


def number(v: Any, digits: int = 1) -> str:
    """A float with thousands separators and ``digits`` decimals."""
    return MISSING if is_missing(v) else f"{float(v):,.{digits}f}"


def ci(bounds: Any) -> str:
    """A [lo, hi] interval of fractions in percent: "[39.0, 45.0]"."""
    if not bounds or bounds[0] is None:
        return MISSING
    return f"[{100 * bounds[0]:.1f}, {100 * bounds[1]:.1f}]"


def ci_points(bounds: Any) -> str:
    """A [lo, hi] interval of differences in signed points: "[-1.0, +3.0]"."""
    if not bounds or bounds[0] is None:
        return MISSING
    return f"[{100 * bounds[0]:+.1f}, {100 * bounds[1]:+.1f}]"


def cell(v: Any) -> str:
    """Any value as the text of one markdown table cell."""
    # A "|" inside a cell would split the markdown table row.
    text = MISSING if is_missing(v) else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a markdown table."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for row in rows:
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return lines


def systems_of(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json's ``systems`` (name -> {"per_language", "macro"}), empty when absent."""
    return dict(metrics.get("systems") or {})


def languages_of(systems: Mapping[str, Any]) -> list[str]:
    """Every language any system has a per-language block for, sorted."""
    langs: set[str] = set()
    for sysm in systems.values():
        langs.update((sysm.get("per_language") or {}).keys())
    return sorted(langs)
