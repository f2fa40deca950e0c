"""Honest tuning: each sweep's value chosen on the dev questions, never on the evaluated ones.

The dev questions (``benchmark.dev_fraction``) are a third split of the XQuAD
base ids, disjoint from the evaluated and the held-out (provided) ones.  They
are searched on every system like another query set; only this module reads
their metrics.  For each sweep (one parameter of one system, the other
parameters at the system's values) the value with the best macro dev score of
the headline metric (MRR@``eval.mrr_k``) is chosen; ties go to the system's
configured value (the paper's), else to the first point in sweep order.  The
chosen point's *evaluated* figures, with its paired comparison to the
baseline, are then the system's tuned result: one pre-specified test, since
nothing about the evaluated questions took part in the choice.

A tuning group (``eval.tune_groups``) chooses across systems the same way:
among its systems and their sweep points, the best dev score wins (ties to the
first in the group's order), so the question selection (filtered or not), the
aggregation and alpha are chosen together and the group has one test.

Pure functions of per-query tables and the sweep entries of
:func:`xqg_ray.evaluation.experiments.sweeps`; the evaluate stage writes what
:func:`tune` returns as metrics.json's ``tuning`` and what :func:`tune_groups`
returns as its ``tuning_groups``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa

# Two dev scores closer than this are a tie (the same per-query values summed in another order).
TIE_TOLERANCE = 1e-12
# What a tuned result reports of its point's evaluated metric: value, interval, paired comparison to the baseline.
TUNED_KEYS = ("mean", "ci95", "diff", "diff_ci95", "p_value", "p_perm")


def dev_score(values: Sequence[Optional[float]], langs: Sequence[str]) -> Optional[float]:
    """The macro mean over languages (unweighted, as the headline tables) of per-query ``values``;
    None values (a language the encoder does not cover) are skipped, None when nothing is left."""
    per_lang: Dict[str, List[float]] = {}
    for v, lang in zip(values, langs):
        if v is not None:
            per_lang.setdefault(lang, []).append(float(v))
    if not per_lang:
        return None
    return sum(sum(vs) / len(vs) for _, vs in sorted(per_lang.items())) / len(per_lang)


def choose_on_dev(per_query: Mapping[Any, Sequence[Optional[float]]], langs: Sequence[str],
                  prefer: Any = None) -> Tuple[Any, Dict[Any, Optional[float]]]:
    """(chosen value, value -> dev score) from ``per_query``: sweep value -> the metric of each dev
    question (aligned with ``langs``), in sweep order.

    The best dev score wins; among tied values ``prefer`` (the configured value)
    if it is one of them, else the first in order.  None when no value has a score.
    """
    scores = {v: dev_score(vals, langs) for v, vals in per_query.items()}
    scored = [v for v, s in scores.items() if s is not None]
    if not scored:
        return None, scores
    best = max(scores[v] for v in scored)
    tied = [v for v in scored if best - scores[v] <= TIE_TOLERANCE]
    return (prefer if prefer in tied else tied[0]), scores


def tune(sweeps: Sequence[Mapping[str, Any]], dev_per_query: Mapping[str, pa.Table], metric: str) -> Dict[str, Any]:
    """``{SYSTEM: {param: {chosen, system, on, metric, dev_questions, dev_scores, test}}}`` for every sweep.

    ``sweeps``: the entries of ``experiments.sweeps`` (points in sweep order, each
    with its evaluated metrics); ``dev_per_query``: system -> its per-query table
    on the dev questions; ``metric``: the metric the choice maximises.
    ``dev_scores`` is keyed by ``str(value)`` (JSON keys); ``test`` holds the
    chosen point's evaluated figures of every metric (:data:`TUNED_KEYS`).
    """
    out: Dict[str, Any] = {}
    for sw in sweeps:
        points = sw["points"]
        first = dev_per_query[points[0]["system"]]
        langs = first["lang"].to_pylist()
        per_query = {p["value"]: dev_per_query[p["system"]][metric].to_pylist() for p in points}
        prefer = next(p["value"] for p in points if p["system"] == sw["system"])
        chosen, scores = choose_on_dev(per_query, langs, prefer)
        point = next((p for p in points if p["value"] == chosen), None)
        out.setdefault(sw["system"], {})[sw["param"]] = {
            "chosen": chosen,
            "system": point["system"] if point else None,
            "on": "dev",
            "metric": metric,
            "dev_questions": first.num_rows,
            "dev_scores": {str(v): s for v, s in scores.items()},
            "test": {m: {k: s.get(k) for k in TUNED_KEYS} for m, s in point["metrics"].items()} if point else None,
        }
    return out


def tune_groups(groups: Mapping[str, Sequence[str]], baselines: Mapping[str, str], dev_per_query: Mapping[str, pa.Table], metric: str,
                evaluated: Callable[[str], Dict[str, Any]]) -> Dict[str, Any]:
    """``{GROUP: {chosen, on, metric, dev_questions, dev_scores, baseline, baseline_dev_score, test, languages}}``.

    ``groups``: group -> its candidate systems in order (``config.systems.tune_candidates``);
    ``baselines``: group -> the baseline its systems are compared with (one per group, validate.py);
    ``dev_scores``: candidate -> its macro dev score; ``test`` and ``languages``: what
    ``evaluated(chosen)`` returns (``experiments.tuned_figures``), asked for the chosen system only
    (None when no candidate has a score).
    """
    out: Dict[str, Any] = {}
    for group, candidates in groups.items():
        first = dev_per_query[candidates[0]]
        per_query = {c: dev_per_query[c][metric].to_pylist() for c in candidates}
        chosen, scores = choose_on_dev(per_query, first["lang"].to_pylist())
        base = dev_per_query[baselines[group]]
        out[group] = {"chosen": chosen, "on": "dev", "metric": metric, "dev_questions": first.num_rows, "dev_scores": scores,
                      "baseline": baselines[group], "baseline_dev_score": dev_score(base[metric].to_pylist(), base["lang"].to_pylist()),
                      **(evaluated(chosen) if chosen is not None else {"test": None, "languages": None})}
    return out
