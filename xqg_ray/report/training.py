"""report.md's "Training vs augmentation" section: each system against its baseline, beside what it cost.

Drawn from metrics.json alone: the comparisons the report already has (the
pooled row of each system: difference, 95% CI and t-test p, here Holm-adjusted
across the table's systems, one family per metric), the index facts (a
system's encoder -- ``trained:NAME@KEY`` for a trained one -- and generator),
the ``training`` entry (pairs, epochs, seconds, pairs/s of each trained
encoder) and the stage timings and question counts of each generator.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional

from ..config import trained_name
from ..evaluation.multitest import holm
from ..evaluation.significance import POOLED
from .cells import MISSING, ci_points, integer, number, points, pvalue, table
from .experiments import plotted_metrics


def system_kind(index: Mapping[str, Any]) -> tuple:
    """(training name or None, generator or None) of a system from its index facts."""
    return trained_name(str(index.get("encoder") or "")), index.get("generator") or None


def _augmentation_cost(metrics: Mapping[str, Any], gen: Optional[str]) -> List[str]:
    """(questions, generation seconds) of generator ``gen``: its kept questions and its stage's time in this run."""
    if not gen:
        return [MISSING, MISSING]
    filt = ((metrics.get("question_quality") or {}).get(gen) or {}).get("filter") or {}
    stage = (metrics.get("stages") or {}).get(f"generated/{gen}") or {}
    secs = number(stage.get("seconds")) + (" (reused)" if stage.get("reused") else "") if stage else MISSING
    return [integer(filt.get("kept")) if filt else MISSING, secs]


def _training_cost(training: Mapping[str, Any], name: Optional[str]) -> List[str]:
    """(pairs, epochs, seconds, pairs/s) of training ``name``, as recorded when it trained."""
    t = training.get(name) if name else None
    if not t:
        return [MISSING] * 4
    c = t["cost"]
    secs = number(c.get("wall_seconds")) + (" (reused)" if t.get("reused") else "")
    return [integer(t["pairs"]["rows"]), integer(c.get("epochs")), secs, number(c.get("pairs_per_s"))]


def _tested(p: Any) -> Optional[float]:
    """A p-value for Holm's family, or None (no test: no difference to test, or a NaN from an all-zero one)."""
    return None if p is None or p != p else float(p)


def training_section(metrics: Mapping[str, Any]) -> List[str]:
    """The section's lines; empty when the run trained no encoder."""
    training = metrics.get("training") or {}
    if not training:
        return []
    indexes = metrics.get("indexes") or {}
    shown = plotted_metrics(metrics)
    swept = {p["system"] for sw in (metrics.get("experiments") or {}).get("sweeps") or [] for p in sw["points"] if p["system"] != sw["system"]}
    pooled = {(r["system"], r["metric"]): r for r in metrics.get("comparisons") or [] if r.get("lang") == POOLED}
    names = [n for n in metrics.get("systems") or {} if n not in swept]
    # The run's baseline: compared with, never compared (each other system's chain ends there).
    compared = {r["system"] for r in pooled.values()}
    roots = sorted({r["baseline"] for r in pooled.values() if r.get("baseline")} - compared)
    base_model = str((indexes.get(roots[0]) or {}).get("encoder") or "") if roots else ""
    # The pooled rows' p are unadjusted; the question here is asked once per system: Holm across them.
    adjusted = {}
    for m in shown:
        ps = holm([_tested(pooled.get((n, m), {}).get("p_value")) for n in names])
        adjusted.update({(n, m): p for n, p in zip(names, ps)})
    header = ["system", "what", "vs"]
    for m in shown:
        header += [f"Δ {m} (pts)", "95% CI", "p (Holm)"]
    header += ["questions", "generation s", "training pairs", "epochs", "training s", "pairs/s"]
    rows = []
    for name in names:
        trained, gen = system_kind(indexes.get(name) or {})
        what = " + ".join(x for x in (f"trained on {training[trained]['pairs']['source']}" if trained in training else "",
                                      f"augmented by {gen}" if gen else "") if x) or "E(p)"
        model = str((indexes.get(name) or {}).get("encoder") or "")
        if not trained and model and model != base_model:
            # Another encoder altogether (e.g. mUSE): the reader must see it is not the baseline's weights.
            what = f"{what}, encoder {model}"
        row = [name, what]
        vs = None
        for m in shown:
            r = pooled.get((name, m)) or {}
            vs = vs or r.get("baseline")
            row += [points(r.get("mean_diff")), ci_points(r.get("ci95")), pvalue(adjusted[(name, m)])]
        row.insert(2, vs or MISSING)
        rows.append(row + _augmentation_cost(metrics, gen) + _training_cost(training, trained))
    note = ("Each system against its baseline on the pooled questions (paired t-test, bootstrap CI: the comparisons above; "
            "p Holm-adjusted across this table's systems per metric), beside its cost: "
            "augmentation = the generator's kept questions and its stage's seconds in this run; training = the pairs "
            "(after the leak guard), epochs, wall seconds and pairs/s of the training loop, as recorded when the artifact was "
            "trained (reused: not trained again in this run).")
    return ["## Training vs augmentation", "", note, ""] + table(header, rows) + [""]


__all__ = ["system_kind", "training_section"]
