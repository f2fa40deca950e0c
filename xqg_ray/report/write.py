"""Writing a run's report: the bar charts, the experiment charts and report.md, next to metrics.json.

The charts are a pure function of metrics.json's content (less its stage timings)
and of this package's drawing code, and drawing them is most of the report's
cost (about 1.5 CPU-s for a small run's 8 charts, more than its comparisons):
a rerun whose results did not change keeps the PNGs of the run before, as every
other stage keeps its committed outputs.  ``plots/charts.json`` records what
they were drawn from (a key) and each file's sha256; it is written after the
PNGs, and a missing, changed or damaged PNG draws them all again.  report.md
is always written: it shows the run's stage timings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..evaluation.metrics import headline_metrics
from ..store.storage import join, sha256_bytes
from .experiments import experiment_charts
from .markdown import render_markdown
from .plots import bar_chart_png
from .question_quality import CHART, quality_chart_png, quality_tables

CHARTS_RECORD = "plots/charts.json"
# What metrics.json holds that no chart shows: the run's timings, and the chart paths themselves.
NOT_DRAWN = ("stages", "plots")


def charts_key(result: Dict[str, Any]) -> str:
    """sha256 of everything the charts are drawn from: ``result`` less :data:`NOT_DRAWN`, this package's
    source (a change to the drawing redraws) and matplotlib's version."""
    import matplotlib

    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in result.items() if k not in NOT_DRAWN}, sort_keys=True, default=str).encode())
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    h.update(matplotlib.__version__.encode())
    return h.hexdigest()


def draw_charts(result: Dict[str, Any], emit: Callable[[str, bytes], None]) -> Dict[str, Any]:
    """Draw every chart of ``result``, handing each to ``emit(relative PNG path, bytes)`` as soon as it is drawn
    (the experiment charts as their group is); returns metrics.json's ``plots`` entry."""
    charts: Dict[str, str] = {}
    for metric in headline_metrics(result["metric_names"]):
        fname = f"plots/{metric.replace('@', '_at_')}.png"
        emit(fname, bar_chart_png(result, metric))
        charts[metric] = fname
    extra = experiment_charts(result)
    for fname, png in extra["files"].items():
        emit(fname, png)
    plots: Dict[str, Any] = {"charts": charts, "experiments": extra["keys"]}
    if result.get("question_quality"):
        emit(CHART, quality_chart_png(result["question_quality"]))
        plots["question_quality"] = CHART
    return plots


def kept_charts(storage: Any, root: str, key: str) -> Optional[Dict[str, Any]]:
    """The ``plots`` entry of the charts under ``root`` when they were drawn from ``key`` and every PNG is the one
    recorded; else None (draw them)."""
    record_uri = join(root, CHARTS_RECORD)
    if not storage.exists(record_uri):
        return None
    try:
        record = storage.read_json(record_uri)
    except ValueError:  # a damaged record: draw again
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    for fname, sha in record["sha256"].items():
        uri = join(root, fname)
        if not storage.exists(uri) or sha256_bytes(storage.read_bytes(uri)) != sha:
            return None
    return record["plots"]


def write_report(storage: Any, root: str, result: Dict[str, Any]) -> None:
    """Write ``plots/*.png`` and ``report.md`` under ``root`` for metrics.json's content ``result``.

    One bar chart per headline metric of ``result["metric_names"]`` (every R@kt and
    the MRR: ``plots/R_at_2kt.png``, ...), the experiment charts, and
    ``plots/question_quality.png`` when ``result["question_quality"]`` has any
    generator, unless the charts already there were drawn from the same results
    (:func:`kept_charts`); then report.md linking them, with the question quality
    section last.  Sets ``result["plots"] = {"charts": metric -> path, "experiments":
    chart key -> paths}`` (paths relative to ``root``), so call it before writing
    metrics.json.  ``storage`` needs ``exists``, ``read_bytes``, ``read_json``,
    ``write_bytes``, ``write_json`` and ``write_text`` (:class:`~xqg_ray.store.storage.Storage`).
    """
    key = charts_key(result)
    plots = kept_charts(storage, root, key)
    if plots is None:
        sha256: Dict[str, str] = {}

        def write(fname: str, png: bytes) -> None:
            # Each chart as it is drawn, not all at the end: a run killed in the report leaves the ones drawn so
            # far (the kill-point test stops a driver at the first PNG, and the run must not finish before it).
            storage.write_bytes(join(root, fname), png)
            sha256[fname] = sha256_bytes(png)

        plots = draw_charts(result, write)
        # After the PNGs: a run killed between them leaves the old record, whose key or hashes no longer match.
        storage.write_json(join(root, CHARTS_RECORD), {"key": key, "plots": plots, "sha256": sha256})
    result["plots"] = plots
    text = render_markdown(result, plots["charts"], plots["experiments"])
    quality = result.get("question_quality") or {}
    if quality:
        # The question quality section and its chart follow the rest of the report.
        text += "\n" + "\n".join(quality_tables(quality)).rstrip("\n") + "\n"
    storage.write_text(join(root, "report.md"), text)
