"""The report of a run: bar charts, experiment charts and report.md from metrics.json's content.

(Temporary copy made by the stages' helper from the drawing code that was in
``stages/evaluate.py``; the report helper's version of this module replaces it.)
"""

from __future__ import annotations

from typing import Any, Dict

from ..store.storage import Storage, join
from .experiments import experiment_charts
from .markdown import bar_chart_png, render_markdown


def write_report(storage: Storage, root: str, result: Dict[str, Any]) -> None:
    """Write the charts under ``plots/`` and ``report.md``, and set ``result["plots"]``."""
    names = result["metric_names"]
    mrr = [n for n in names if n.startswith("MRR@")][-1]
    charts = {}
    for metric in [n for n in names if n.startswith("R@")] + [mrr]:
        fname = f"plots/{metric.replace('@', '_at_')}.png"
        storage.write_bytes(join(root, fname), bar_chart_png(result, metric))
        charts[metric] = fname
    extra = experiment_charts(result)
    for fname, png in extra["files"].items():
        storage.write_bytes(join(root, fname), png)
    result["plots"] = {"charts": charts, "experiments": extra["keys"]}
    storage.write_text(join(root, "report.md"), render_markdown(result, charts, extra["keys"]))
