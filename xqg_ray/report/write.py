"""Writing a run's report: the bar charts, the experiment charts and report.md, next to metrics.json."""

from __future__ import annotations

from typing import Any, Dict

from ..evaluation.metrics import headline_metrics
from ..store.storage import join
from .experiments import experiment_charts
from .markdown import render_markdown
from .plots import bar_chart_png
from .question_quality import CHART, quality_chart_png, quality_tables


def write_report(storage: Any, root: str, result: Dict[str, Any]) -> None:
    """Write ``plots/*.png`` and ``report.md`` under ``root`` for metrics.json's content ``result``.

    One bar chart per headline metric of ``result["metric_names"]`` (every R@kt and
    the MRR: ``plots/R_at_2kt.png``, ...), the experiment charts, then report.md
    linking them, then the question quality section and ``plots/question_quality.png`` when
    ``result["question_quality"]`` has any generator.  Sets ``result["plots"] = {"charts": metric -> path, "experiments":
    chart key -> paths}`` (paths relative to ``root``), so call it before writing
    metrics.json.  ``storage`` needs ``write_bytes(uri, data)`` and ``write_text(uri, text)``.
    """
    charts = {}
    for metric in headline_metrics(result["metric_names"]):
        fname = f"plots/{metric.replace('@', '_at_')}.png"
        storage.write_bytes(join(root, fname), bar_chart_png(result, metric))
        charts[metric] = fname
    extra = experiment_charts(result)
    for fname, png in extra["files"].items():
        storage.write_bytes(join(root, fname), png)
    result["plots"] = {"charts": charts, "experiments": extra["keys"]}
    quality = result.get("question_quality") or {}
    text = render_markdown(result, charts, extra["keys"])
    if quality:
        # The question quality section and its chart follow the rest of the report.
        storage.write_bytes(join(root, CHART), quality_chart_png(quality))
        result["plots"]["question_quality"] = CHART
        text += "\n" + "\n".join(quality_tables(quality)).rstrip("\n") + "\n"
    storage.write_text(join(root, "report.md"), text)
