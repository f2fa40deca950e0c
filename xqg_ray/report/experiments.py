"""report.md sections and charts for the research questions: sweeps, robustness, languages, encoders.

Input is metrics.json's ``experiments`` entry (see :mod:`xqg_ray.evaluation.experiments`)
plus the comparisons; every figure drawn from it is also a table here.  The tables
show the run's headline metrics (``metrics.headline_metrics`` of its
``metric_names``), the charts the first R@kt and the MRR of those.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence

from ..evaluation.metrics import METRIC_NAMES, headline_metrics
from ..evaluation.significance import POOLED
from . import plots
from .cells import ci, ci_points, pct, points, pvalue, table


def shown_metrics(metrics: Mapping[str, Any]) -> List[str]:
    """The metrics the experiment tables show: the run's headline metrics (all are in metrics.json)."""
    return headline_metrics(metrics.get("metric_names") or METRIC_NAMES)


def plotted_metrics(metrics: Mapping[str, Any]) -> List[str]:
    """The metrics the experiment charts draw: the first R@kt and the MRR (R@kt saturates on
    small corpora, where the rank-sensitive MRR still moves)."""
    shown = shown_metrics(metrics)  # the R@kt metrics, then the MRR
    return list(dict.fromkeys(shown[:1] + shown[-1:]))


def _images(charts: Mapping[str, Sequence[str]], key: str, alt: str) -> List[str]:
    return [line for path in charts.get(key, []) for line in (f"![{alt}]({path})", "")]


def _test_cells(test: Mapping[str, Any]) -> List[str]:
    """A tuned result's evaluated figures (``tuning.TUNED_KEYS`` of one metric) as table cells."""
    return [pct(test.get("mean")), ci(test.get("ci95")), points(test.get("diff")), ci_points(test.get("diff_ci95")),
            pvalue(test.get("p_value")), pvalue(test.get("p_perm"))]


def tuned_section(tuning: Mapping[str, Any]) -> List[str]:
    """The values chosen on the dev questions and their evaluated figures (empty without tuning)."""
    if not tuning:
        return []
    rows, sizes, metric = [], set(), ""
    for system, params in tuning.items():
        for param, t in params.items():
            metric, test = t["metric"], (t.get("test") or {}).get(t["metric"], {})
            sizes.add(t["dev_questions"])
            rows.append([system, param, t["chosen"], t["system"], pct(t["dev_scores"].get(str(t["chosen"])))] + _test_cells(test))
    n = ", ".join(str(x) for x in sorted(sizes))
    return ["### Tuned on dev", "",
            f"Each sweep's value is chosen on {n} dev questions (neither evaluated nor used as human queries) by the best "
            f"macro {metric} there, ties to the configured value; never on the evaluated questions.  The evaluated figures "
            "of the chosen point are the system's tuned result; its comparison to the baseline is one pre-specified test "
            "(no sweep adjustment).", ""] + table(
        ["system", "param", "chosen", "point", f"dev {metric}", metric, "95% CI", "diff", "diff 95% CI", "p t", "p perm"], rows) + [""]


def groups_section(groups: Mapping[str, Any], indexes: Mapping[str, Any]) -> List[str]:
    """Each tuning group's choice on the dev questions across its systems and the chosen one's evaluated figures
    (empty without groups); ``indexes``: metrics.json's index facts, the chosen system's settings."""
    if not groups:
        return []
    rows, notes, sizes, metric = [], [], set(), ""
    for group, g in groups.items():
        metric, test = g["metric"], (g.get("test") or {}).get(g["metric"], {})
        sizes.add(g["dev_questions"])
        facts = indexes.get(g["chosen"]) or {}
        rows.append([group, g["chosen"], facts.get("questions"), facts.get("aggregation"), facts.get("alpha"),
                     pct(g["dev_scores"].get(g["chosen"]))] + _test_cells(test))
        notes += [f"{group}: dev {metric} by candidate: " + ", ".join(f"{c} {pct(v)}" for c, v in g["dev_scores"].items())
                  + f"; the baseline ({g['baseline']}): {pct(g['baseline_dev_score'])}.", "",
                  f"{group}: {g['chosen']} against the baseline per language ({metric} diff, p t Holm-adjusted across languages): "
                  + ", ".join(f"{lang} {points(c['diff'])} (p {pvalue(c['p_holm'])})" for lang, c in sorted((g.get("languages") or {}).items())) + ".", ""]
    n = ", ".join(str(x) for x in sorted(sizes))
    return ["### Chosen on dev across systems", "",
            f"Each group's result is the system or sweep point with the best macro {metric} on {n} dev questions among the "
            "group's systems and their sweep points (so which questions, the aggregation and alpha are chosen together; ties to "
            "the first listed), never on the evaluated questions.  Its comparison to the baseline is the group's one "
            "pre-specified test.", ""] + table(
        ["group", "chosen", "questions", "aggregation", "alpha", f"dev {metric}", metric, "95% CI", "diff", "diff 95% CI", "p t", "p perm"],
        rows) + [""] + notes


def sweeps_section(sweeps: Sequence[Mapping[str, Any]], metrics: Sequence[str], charts: Mapping[str, Sequence[str]],
                   tuning: Mapping[str, Any] | None = None) -> List[str]:
    if not sweeps:
        return []
    tuning = tuning or {}
    lines = ["## Sweeps", "",
             "Each point is built from the stored encodings.  Differences are against the system's baseline, "
             "paired by question; p (Holm) is adjusted across the points of one sweep.", ""]
    if not tuning:
        lines += ["No value is chosen: the run has no dev questions (`benchmark.dev_fraction` 0) or `eval.tune_on` is none, "
                  "and a choice on the evaluated questions would overstate it.", ""]
    lines += tuned_section(tuning)
    for sw in sweeps:
        lines += [f"### {sw['system']}: {sw['param']}", ""]
        t = tuning.get(sw["system"], {}).get(sw["param"])
        if t is not None:
            dev = ", ".join(f"{v}: {pct(s)}" for v, s in t["dev_scores"].items())
            lines += [f"Chosen on {t['dev_questions']} dev questions: {sw['param']}={t['chosen']} "
                      f"(dev {t['metric']} by value: {dev}).", ""]
        lines += _images(charts, f"sweep:{sw['system']}:{sw['param']}", f"{sw['system']} {sw['param']}")
        for m in metrics:
            rows = []
            for p in sw["points"]:
                s = p["metrics"][m]
                rows.append([p["value"], p["system"], pct(s["mean"]), ci(s["ci95"]), points(s.get("diff")), ci_points(s.get("diff_ci95")),
                             pvalue(s.get("p_value_holm_sweep")), pvalue(s.get("p_perm_holm_sweep"))])
            lines += [f"{m}:", ""] + table([sw["param"], "system", m, "95% CI", "diff", "diff 95% CI", "p t (Holm)", "p perm (Holm)"], rows) + [""]
    return lines


def robustness_section(rob: Mapping[str, Any], metrics: Sequence[str], charts: Mapping[str, Sequence[str]], swept: Sequence[str] = ()) -> List[str]:
    if not rob:
        return []
    lines = ["## Robustness to perturbed questions", "",
             "The same questions, perturbed (seeded); drop = perturbed - clean, paired by question "
             "(sweep points: see metrics.json `experiments.robustness`).", ""]
    lines += _images(charts, "robustness", "robustness")
    for m in metrics:
        rows = []
        for qset, systems in rob.items():
            for name, r in systems.items():
                if name in swept:
                    continue
                c = next((x for x in r["comparisons"] if x["metric"] == m and x["lang"] == POOLED), {})
                rows.append([qset, name, pct(r["clean"][m]["mean"]), pct(r["metrics"][m]["mean"]), points(c.get("mean_diff")),
                             ci_points(c.get("ci95")), pvalue(c.get("p_value")), pvalue(c.get("p_perm"))])
        lines += [f"{m}:", ""] + table(["perturbation", "system", "clean", "perturbed", "drop", "95% CI", "p t", "p perm"], rows) + [""]
    return lines


def languages_section(langs: Mapping[str, Any], metrics: Sequence[str], charts: Mapping[str, Sequence[str]]) -> List[str]:
    if not langs or not langs.get("values"):
        return []
    order = list(langs["order"])
    groups = sorted({k for v in langs["values"].values() for k in next(iter(v.values())) if k.startswith("group:")})
    head = [f"{lang} ({langs['resource_gib'].get(lang) or '?'} GiB)" for lang in order] + [g[len("group:"):] for g in groups]
    lines = ["## Per language, by pretraining resource level", "",
             f"Languages ordered by {langs['ordered_by']}, high to low; 95% bootstrap intervals.", ""]
    lines += _images(charts, "languages", "languages")
    for m in metrics:
        rows = []
        for name, v in langs["values"].items():
            rows.append([name] + [f"{pct(v[m][k]['mean'])} {ci(v[m][k]['ci95'])}" for k in order + groups])
        lines += [f"{m}:", ""] + table(["system"] + head, rows) + [""]
    return lines


def forest_section(charts: Mapping[str, Sequence[str]]) -> List[str]:
    if not charts.get("forest"):
        return []
    return ["## Differences from the baseline, per language", ""] + _images(charts, "forest", "forest")


def _swept(exp: Mapping[str, Any]) -> set:
    """The sweep points (not the swept systems themselves)."""
    return {p["system"] for sw in exp.get("sweeps") or [] for p in sw["points"] if p["system"] != sw["system"]}


def render_experiments(metrics: Mapping[str, Any], charts: Mapping[str, Sequence[str]]) -> List[str]:
    """The experiment sections of report.md (empty when the run has none)."""
    exp = metrics.get("experiments") or {}
    names = shown_metrics(metrics)
    return (forest_section(charts) + groups_section(metrics.get("tuning_groups") or {}, metrics.get("indexes") or {})
            + sweeps_section(exp.get("sweeps") or [], names, charts, metrics.get("tuning"))
            + robustness_section(exp.get("robustness") or {}, names, charts, _swept(exp)) + languages_section(exp.get("languages") or {}, names, charts))


def experiment_charts(metrics: Mapping[str, Any]) -> dict:
    """``files``: relative PNG path -> bytes; ``keys``: chart key -> paths (one per plotted metric).

    Keys: ``forest``, ``sweep:SYSTEM:PARAM``, ``robustness``, ``languages``.
    """
    files: dict = {}
    keys: dict = {}
    for metric in plotted_metrics(metrics):
        one = _charts_for(metrics, metric)
        files.update(one["files"])
        for k, path in one["keys"].items():
            keys.setdefault(k, []).append(path)
    return {"files": files, "keys": keys}


def _charts_for(metrics: Mapping[str, Any], metric: str) -> dict:
    """The experiment figures of one metric: ``files`` (path -> PNG) and ``keys`` (chart key -> path)."""
    exp = metrics.get("experiments") or {}
    swept = _swept(exp)
    files: dict = {}
    keys: dict = {}

    def put(key: str, fname: str, png: bytes) -> None:
        files[fname] = png
        keys[key] = fname

    tag = metric.replace("@", "_at_")
    # Sweep points are drawn in their sweep's chart, except a tuning group's choice: its test is a result of its own.
    chosen = {g["chosen"] for g in (metrics.get("tuning_groups") or {}).values()}
    rows = [r for r in metrics.get("comparisons") or [] if r["metric"] == metric and (r["system"] not in swept or r["system"] in chosen)]
    if rows:
        put("forest", f"plots/forest_{tag}.png", plots.forest_plot(rows, metric=metric, title=f"{metric}: system - baseline, per language (95% CI)"))
    for sw in exp.get("sweeps") or []:
        pts = [{"value": p["metrics"][metric]["mean"], "ci": p["metrics"][metric]["ci95"]} for p in sw["points"]]
        put(f"sweep:{sw['system']}:{sw['param']}", f"plots/sweep_{sw['system']}_{sw['param']}_{tag}.png",
            plots.sweep_plot([p["value"] for p in sw["points"]], {metric: pts}, sw["param"], metric, log_x=sw["param"] == "alpha",
                             title=f"{sw['system']}: {metric} against {sw['param']} (95% band)"))
    rob = exp.get("robustness") or {}
    if rob:
        conditions = ["clean"] + list(rob)
        first = next(iter(rob.values()))
        series = {name: [{"value": first[name]["clean"][metric]["mean"], "ci": first[name]["clean"][metric]["ci95"]}]
                  + [{"value": rob[c][name]["metrics"][metric]["mean"], "ci": rob[c][name]["metrics"][metric]["ci95"]} for c in rob]
                  for name in first if name not in swept}
        put("robustness", f"plots/robustness_{tag}.png", plots.robustness_plot(conditions, series, metric, title=f"{metric} on perturbed questions (95% CI)"))
    langs = exp.get("languages") or {}
    if langs.get("values"):
        order = list(langs["order"])
        series = {name: [{"value": v[metric][lang]["mean"], "ci": v[metric][lang]["ci95"]} for lang in order] for name, v in langs["values"].items()}
        put("languages", f"plots/languages_{tag}.png", plots.per_language_plot(order, series, metric, title=f"{metric} per language, high to low resource"))
    return {"files": files, "keys": keys}
