"""The dev split (``benchmark.dev_fraction``) and honest tuning on it (``eval.tune_on``).

- the dev questions are a third split of the XQuAD base ids: never evaluated,
  never provided as human queries, in every configured language (real data);
- ``dev_fraction: 0`` leaves every benchmark table exactly as before (content
  hashes taken before the dev split existed);
- ``choose_on_dev`` / ``tune`` on hand-made per-query tables, ties included;
- a tiny end-to-end run: the dev questions are searched on every system, stay
  out of every evaluated table, and metrics.json records the alpha chosen on them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Set

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus_versions import current
from helpers_data import shared_datasets
from xqg_ray.benchmark.build import XQUAD_LANGUAGES, build_xquad, read_xquad_source
from xqg_ray.config import BenchmarkConfig, ConfigError, PerturbationConfig, SystemConfig, SweepConfig, load_config
from xqg_ray.evaluation.tuning import choose_on_dev, dev_score, tune, tune_groups
from xqg_ray.ids import seed_for

DATA = shared_datasets()
needs_data = pytest.mark.skipif(DATA is None, reason="real XQuAD/SQuAD data not found (set XQG_SHARED_DATASETS)")
NON_EN = sorted(lang for lang in XQUAD_LANGUAGES if lang != "en")
REPO = Path(__file__).resolve().parents[1]


def bases(t: pa.Table) -> Set[str]:
    return {q.rsplit("-", 1)[0] for q in t["qid"].to_pylist()}


def content_sha(t: pa.Table) -> str:
    """The sha256 of a table's rows as sorted-key JSON: independent of the Parquet writer's version."""
    return hashlib.sha256(json.dumps(t.to_pylist(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@pytest.fixture(scope="module")
def src():
    assert DATA is not None
    return read_xquad_source(str(DATA))


# -- the split ---------------------------------------------------------------------
@needs_data
def test_dev_split_is_disjoint_by_base_id_from_evaluated_and_heldout(src) -> None:
    cfg = BenchmarkConfig(source=str(DATA), heldout_fraction=0.3, dev_fraction=0.2, corpus_limit=300)
    t = build_xquad(cfg, src)
    all_bases = {q.base_id for q in src.xquad["en"]}
    heldout = {b for b in all_bases if seed_for(13, "heldout", b) / 2**63 < 0.3}  # today's draw, unmoved
    drawn = {b for b in all_bases - heldout if seed_for(13, "dev", b) / 2**63 < 0.2 / 0.7}
    dev, evaluated = bases(t.dev), bases(t.queries)
    assert (len(all_bases), len(heldout), len(drawn), len(dev), len(evaluated)) == (1190, 368, 237, 235, 585)
    assert (t.dev.num_rows, t.queries.num_rows) == (2585, 6435)  # 235 and 585 base ids in 11 languages
    assert dev <= drawn and not dev & evaluated and not dev & heldout and not evaluated & heldout
    # Two drawn base ids share a question text with an evaluated one: left out with all their languages.
    assert t.extra["dev"] == {"base_ids": 235, "drawn_base_ids": 237, "questions": 2585, "same_text_as_evaluated": 22}
    assert evaluated == all_bases - heldout - drawn
    assert sorted(set(t.dev["lang"].to_pylist())) == NON_EN
    # Human queries: neither a dev nor an evaluated id, nor a dev question's text.
    provided = bases(t.provided)
    assert t.provided.num_rows == 4503 and not provided & dev and not provided & evaluated
    dev_texts = set(zip(t.dev["lang"].to_pylist(), t.dev["text"].to_pylist()))
    assert not dev_texts & set(zip(t.provided["lang"].to_pylist(), t.provided["text"].to_pylist()))
    assert not dev_texts & set(zip(t.queries["lang"].to_pylist(), t.queries["text"].to_pylist()))
    # Every dev gold passage is in the (limited) corpus, and the dev table is the questions' schema.
    assert set(t.dev["gold_docid"].to_pylist()) <= set(t.corpus["docid"].to_pylist())
    assert t.dev.schema.equals(t.queries.schema)


@needs_data
def test_dev_questions_follow_the_configured_languages_and_cap(src) -> None:
    cfg = BenchmarkConfig(source=str(DATA), languages=["de", "es"], dev_fraction=0.2, max_queries_per_language=8, corpus_limit=24)
    t = build_xquad(cfg, src)
    assert (t.queries.num_rows, t.dev.num_rows) == (16, 16)
    assert {lang: t.dev["lang"].to_pylist().count(lang) for lang in ("de", "es")} == {"de": 8, "es": 8}
    assert not bases(t.dev) & bases(t.queries) and t.provided is None


@needs_data
@pytest.mark.parametrize("kw, expected", [
    ({}, ("c4820323d6a67586dc32afe9253fbb8f0448b100d11fb74b5f145dfc0e93f2d2", None,
          "78c913a1855270e336cd551199c3c40542b182bb59609b0dc50111ec59fe85e4")),
    ({"heldout_fraction": 0.3, "corpus_limit": 300},
     ("89c6c57f8223c18ff9210e48dcbed70ba1f81b2e1a6cc0072d93274774a60b8c",
      "5a8e8e0a15813c4910b00b9ab4ec6dbc3830a27b28a6eb24fa7d88a2ccf2f68a",
      "a394a2f52717722ab6dccb542e0158019463fdad2d738359044db06f35bff438")),
    ({"heldout_fraction": 0.2, "languages": ["de", "es", "zh"], "max_queries_per_language": 100, "corpus_limit": 500},
     ("5ffb20dd98889ea3bf75067b1f6e4f299d0058b6422e2898f7744b6b5f77de22",
      "eee7bccd77ab0ef5945edd38fd2fa57eb3caa18fe62dab1956cf73e77a53f186",
      "03bf4d25f4bd5cc6af0abf6df9c8e5a812976aa3df3cc47ad0b2cfcbf809e679")),
])
def test_dev_fraction_zero_leaves_every_table_as_before(src, kw, expected) -> None:
    """The hashes were taken on the builder before the dev split existed."""
    t = build_xquad(BenchmarkConfig(source=str(DATA), dev_fraction=0.0, **kw), src)
    got = (content_sha(t.queries), content_sha(t.provided) if t.provided is not None else None, content_sha(t.corpus.select(["docid"])))
    assert got == expected
    assert t.dev is None and "dev" not in t.extra


def test_dev_settings_are_checked_when_the_config_loads() -> None:
    smoke = str(REPO / "conf" / "smoke.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(smoke, ["benchmark.heldout_fraction=0.5", "benchmark.dev_fraction=0.5", "eval.tune_on=test"])
    assert str(e.value).splitlines()[1:] == [
        "  - benchmark.dev_fraction must be >= 0 with heldout_fraction + dev_fraction < 1",
        "  - eval.tune_on='test': use one of dev, none",
    ]
    with pytest.raises(ConfigError) as e:
        load_config(smoke, ["benchmark.kind=files", "benchmark.corpus=c.jsonl", "benchmark.queries=q.jsonl", "benchmark.dev_fraction=0.1"])
    assert str(e.value).splitlines()[1:] == ["  - benchmark.dev_fraction applies to kind xquad only (kind=files): set it to 0"]
    cfg = load_config(smoke)
    cfg.perturbations = [PerturbationConfig(name="dev")]
    from xqg_ray.config.validate import perturbation_set_problems

    assert perturbation_set_problems(cfg) == ["perturbation name 'dev' is the dev questions' query set: rename it"]


# -- choosing on dev ----------------------------------------------------------------
LANGS = ["de", "de", "de", "es", "es"]


def test_dev_score_is_the_macro_mean_over_languages_skipping_none() -> None:
    assert dev_score([1.0, 1.0, 1.0, 0.0, None], LANGS) == 0.5  # micro would be 0.75
    assert dev_score([None] * 5, LANGS) is None


def test_choose_on_dev_picks_the_best_dev_score() -> None:
    per_query = {
        0.01: [1.0, 1.0, 1.0, 0.0, None],  # de 1, es 0: 0.5 (the best micro mean, 0.75)
        0.1: [0.5, 0.5, 0.5, 1.0, 0.5],  # de 0.5, es 0.75: 0.625
        0.3: [0.0, 0.0, 1.0, 0.5, 0.5],  # de 1/3, es 0.5: 0.41666...
    }
    chosen, scores = choose_on_dev(per_query, LANGS, prefer=0.01)
    assert chosen == 0.1
    assert scores == {0.01: 0.5, 0.1: 0.625, 0.3: (1 / 3 + 0.5) / 2}


def test_choose_on_dev_ties_go_to_the_configured_value_else_the_first() -> None:
    per_query = {"mean": [1.0, 0.0, 0.5, 0.5, 0.5], "sum": [0.5, 0.5, 0.5, 1.0, 0.0], "max": [0.0, 0.0, 0.0, 1.0, 1.0]}
    assert choose_on_dev(per_query, LANGS, prefer="sum") == ("sum", {"mean": 0.5, "sum": 0.5, "max": 0.5})
    assert choose_on_dev(per_query, LANGS, prefer="other")[0] == "mean"
    assert choose_on_dev(per_query, LANGS)[0] == "mean"
    assert choose_on_dev({1: [None] * 5, 2: [None] * 5}, LANGS) == (None, {1: None, 2: None})


def test_tune_reports_the_chosen_points_evaluated_figures() -> None:
    def dev_table(vals):
        return pa.table({"qid": [f"q{i}" for i in range(5)], "lang": LANGS, "MRR@10": vals})

    def point(system, value, mean):
        return {"system": system, "value": value, "metrics": {"MRR@10": {
            "mean": mean, "ci95": [mean - 0.1, mean + 0.1], "diff": mean - 0.5, "diff_ci95": [-0.2, 0.2],
            "p_value": 0.04, "p_perm": 0.05, "p_value_holm_sweep": 0.08, "p_perm_holm_sweep": 0.1}}}

    sweeps = [{"system": "xqg", "param": "alpha", "points": [point("xqg", 0.01, 0.9), point("xqg@alpha=0.3", 0.3, 0.6)]}]
    dev = {"xqg": dev_table([0.0, 0.0, 0.0, 1.0, 0.0]), "xqg@alpha=0.3": dev_table([1.0, 0.0, 0.0, 1.0, 0.0])}
    # On the evaluated questions alpha=0.01 is better (0.9); on dev alpha=0.3 is: dev decides.
    assert tune(sweeps, dev, "MRR@10") == {"xqg": {"alpha": {
        "chosen": 0.3, "system": "xqg@alpha=0.3", "on": "dev", "metric": "MRR@10", "dev_questions": 5,
        "dev_scores": {"0.01": 0.25, "0.3": (1 / 3 + 0.5) / 2},
        "test": {"MRR@10": {"mean": 0.6, "ci95": [0.5, 0.7], "diff": 0.6 - 0.5, "diff_ci95": [-0.2, 0.2], "p_value": 0.04, "p_perm": 0.05}},
    }}}


def test_a_tuning_group_chooses_across_systems_on_dev_and_evaluates_only_the_choice() -> None:
    def dev_table(vals):
        return pa.table({"qid": [f"q{i}" for i in range(5)], "lang": LANGS, "MRR@10": vals})

    dev = {"baseline": dev_table([0.0, 0.0, 1.0, 0.0, 0.0]), "xqg": dev_table([1.0, 0.0, 0.0, 1.0, 0.0]),
           "xqg@alpha=0.3": dev_table([1.0, 1.0, 0.0, 0.0, 0.0]), "kept": dev_table([0.0, 0.0, 0.0, 1.0, 1.0])}
    asked = []

    def evaluated(name):
        asked.append(name)
        return {"test": {"MRR@10": {"mean": 0.7}}, "languages": {"de": {"diff": 0.1}}}

    groups = {"g": ["xqg", "xqg@alpha=0.3", "kept"], "h": ["xqg@alpha=0.3", "xqg"]}
    # Macro dev (de, es): xqg (1/3 + 1/2) / 2 = 5/12, xqg@alpha=0.3 (2/3 + 0) / 2 = 1/3, kept (0 + 1) / 2: kept wins g;
    # h lists xqg@alpha=0.3 first, but xqg scores higher.
    got = tune_groups(groups, {"g": "baseline", "h": "baseline"}, dev, "MRR@10", evaluated)
    common = {"on": "dev", "metric": "MRR@10", "dev_questions": 5, "baseline": "baseline", "baseline_dev_score": (1 / 3 + 0) / 2,
              "test": {"MRR@10": {"mean": 0.7}}, "languages": {"de": {"diff": 0.1}}}
    assert got == {
        "g": {"chosen": "kept", "dev_scores": {"xqg": (1 / 3 + 1 / 2) / 2, "xqg@alpha=0.3": (2 / 3 + 0) / 2, "kept": 0.5}, **common},
        "h": {"chosen": "xqg", "dev_scores": {"xqg@alpha=0.3": (2 / 3 + 0) / 2, "xqg": (1 / 3 + 1 / 2) / 2}, **common},
    }
    assert asked == ["kept", "xqg"]  # the evaluated figures of the chosen systems only
    # A tie goes to the first candidate in the group's order.
    tie = {"a": dev_table([1.0, 0.0, 0.0, 0.0, 0.0]), "b": dev_table([0.0, 1.0, 0.0, 0.0, 0.0]), "baseline": dev["baseline"]}
    assert tune_groups({"t": ["b", "a"]}, {"t": "baseline"}, tie, "MRR@10", evaluated)["t"]["chosen"] == "b"
    assert tune_groups({"t": ["a", "b"]}, {"t": "baseline"}, tie, "MRR@10", evaluated)["t"]["chosen"] == "a"
    # No candidate scored on dev (a language no encoder covers): nothing chosen, nothing evaluated.
    none = {"a": pa.table({"qid": ["q0"], "lang": ["de"], "MRR@10": pa.array([None], pa.float64())}), "baseline": dev["baseline"]}
    asked.clear()
    out = tune_groups({"t": ["a"]}, {"t": "baseline"}, none, "MRR@10", evaluated)["t"]
    assert (out["chosen"], out["test"], out["languages"], asked) == (None, None, None, [])


def test_tuning_group_candidates_are_the_systems_then_their_sweep_points() -> None:
    from xqg_ray.config.systems import tune_candidates

    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), ["benchmark.dev_fraction=0.2", "eval.tune_groups={g: [xqg-a0.3, xqg]}"])
    cfg.systems[1].sweep = SweepConfig(alpha=[0.01, 0.1, 0.2])
    from xqg_ray.config.systems import expand_sweeps

    cfg = expand_sweeps(cfg)
    assert tune_candidates(cfg, cfg.eval.tune_groups["g"]) == ["xqg-a0.3", "xqg", "xqg@alpha=0.1", "xqg@alpha=0.2"]


def test_tuning_groups_are_checked_when_the_config_loads() -> None:
    smoke = str(REPO / "conf" / "smoke.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(smoke, ["eval.tune_groups={xqg: [baseline, nope, xqg], g: [], h: [xqg, causal-mean]}", "encoders={e2: {model: tiny:tiny-bert}}",
                            "systems=[{name: baseline}, {name: xqg, generator: t5}, {name: b2, encoder: e2}, {name: causal-mean, generator: gpt2, encoder: e2}]"])
    assert str(e.value).splitlines()[1:] == [
        "  - eval.tune_groups.xqg: name the group like no system, with letters, digits, '-', '_' and '.'",
        "  - eval.tune_groups.xqg: ['baseline', 'nope'] are not systems with a generator; list systems (their sweep points join by themselves), not a baseline",
        "  - eval.tune_groups.xqg is chosen on dev questions: set benchmark.dev_fraction > 0 and eval.tune_on: dev",
        "  - eval.tune_groups.g is empty: list the systems it chooses among",
        "  - eval.tune_groups.g is chosen on dev questions: set benchmark.dev_fraction > 0 and eval.tune_on: dev",
        "  - eval.tune_groups.h: its systems have different baselines; a group's result is one comparison, so list systems of one baseline",
        "  - eval.tune_groups.h is chosen on dev questions: set benchmark.dev_fraction > 0 and eval.tune_on: dev",
    ]
    cfg = load_config(smoke, ["benchmark.dev_fraction=0.2", "eval.tune_groups={g: [xqg, xqg-a0.3, causal-mean]}"])
    assert cfg.eval.tune_groups == {"g": ["xqg", "xqg-a0.3", "causal-mean"]}


def test_tuned_figures_are_the_chosen_systems_test_and_its_languages_holm() -> None:
    from xqg_ray.evaluation.experiments import macro_ci, tuned_figures

    per_query = {"s": pa.table({"qid": ["q0", "q1", "q2", "q3", "q4"], "lang": LANGS, "MRR@10": [1.0, 0.5, 0.0, 1.0, 0.0]})}

    def row(system, lang, diff, p, holm):
        return {"system": system, "metric": "MRR@10", "lang": lang, "mean_diff": diff, "ci95": [diff - 0.1, diff + 0.1],
                "p_value": p, "p_holm": holm, "p_perm": p + 0.01}

    comparisons = [row("s", "de", 0.2, 0.01, 0.02), row("s", "es", -0.1, 0.3, 0.3), row("s", "all", 0.05, 0.04, 0.04),
                   row("other", "de", 0.9, 0.001, 0.002), row("other", "all", 0.9, 0.001, 0.001)]
    got = tuned_figures("s", per_query, comparisons, ["MRR@10"], "MRR@10", 200, 3)
    interval = macro_ci([1.0, 0.5, 0.0, 1.0, 0.0], LANGS, 200, 3)
    assert got == {
        "test": {"MRR@10": {"mean": 0.5, "ci95": interval["ci95"], "diff": 0.05, "diff_ci95": [0.05 - 0.1, 0.05 + 0.1], "p_value": 0.04, "p_perm": 0.05}},
        "languages": {"de": {"diff": 0.2, "ci95": [0.2 - 0.1, 0.2 + 0.1], "p_value": 0.01, "p_holm": 0.02},
                      "es": {"diff": -0.1, "ci95": [-0.1 - 0.1, -0.1 + 0.1], "p_value": 0.3, "p_holm": 0.3}},
    }


def test_the_report_gives_each_group_its_choice_settings_test_and_languages(monkeypatch) -> None:
    from xqg_ray.report import experiments as R

    group = {"chosen": "xqg@alpha=0.3", "on": "dev", "metric": "MRR@10", "dev_questions": 12,
             "dev_scores": {"xqg": 0.5, "xqg@alpha=0.3": 0.625}, "baseline": "baseline", "baseline_dev_score": 0.45,
             "test": {"MRR@10": {"mean": 0.61, "ci95": [0.5, 0.7], "diff": 0.031, "diff_ci95": [0.001, 0.06], "p_value": 0.04, "p_perm": 0.0004}},
             "languages": {"es": {"diff": -0.01, "ci95": [-0.1, 0.1], "p_value": 0.5, "p_holm": 0.5},
                           "de": {"diff": 0.07, "ci95": [0.0, 0.1], "p_value": 0.01, "p_holm": 0.02}}}
    indexes = {"xqg@alpha=0.3": {"questions": "kept", "aggregation": "mean", "alpha": 0.3}}
    lines = R.groups_section({"xqg-tuned": group}, indexes)
    assert lines[0] == "### Chosen on dev across systems" and "on 12 dev questions" in lines[2]
    assert lines[4:] == [
        "| group | chosen | questions | aggregation | alpha | dev MRR@10 | MRR@10 | 95% CI | diff | diff 95% CI | p t | p perm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        "| xqg-tuned | xqg@alpha=0.3 | kept | mean | 0.3 | 62.5 | 61.0 | [50.0, 70.0] | +3.1 | [+0.1, +6.0] | 0.040 | <0.001 |",
        "",
        "xqg-tuned: dev MRR@10 by candidate: xqg 50.0, xqg@alpha=0.3 62.5; the baseline (baseline): 45.0.", "",
        "xqg-tuned: xqg@alpha=0.3 against the baseline per language (MRR@10 diff, p t Holm-adjusted across languages): "
        "de +7.0 (p 0.020), es -1.0 (p 0.500).", "",
    ]
    assert R.groups_section({}, indexes) == []
    # The forest chart draws every system but sweep points, and the group's chosen point among them.
    drawn = []
    monkeypatch.setattr(R.plots, "forest_plot", lambda rows, **kw: drawn.append(sorted({r["system"] for r in rows})) or b"png")
    comparisons = [{"system": s, "metric": "MRR@10", "lang": "all"} for s in ("xqg", "xqg@alpha=0.3", "xqg@alpha=0.5", "human")]
    metrics = {"metric_names": ["MRR@10"], "comparisons": comparisons, "experiments": {"sweeps": [{"system": "xqg", "param": "alpha", "points": [
        {"system": n, "value": v, "metrics": {"MRR@10": {"mean": 0.5, "ci95": [0.4, 0.6]}}} for n, v in (("xqg", 0.1), ("xqg@alpha=0.3", 0.3), ("xqg@alpha=0.5", 0.5))]}]}}
    monkeypatch.setattr(R.plots, "sweep_plot", lambda *a, **kw: b"png")
    R.experiment_charts(metrics)
    R.experiment_charts({**metrics, "tuning_groups": {"xqg-tuned": group}})
    assert drawn == [["human", "xqg"], ["human", "xqg", "xqg@alpha=0.3"]]


# -- end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned(tmp_path_factory, ray_local, shared_datasets, tiny_models):
    from xqg_ray.config.systems import expand_sweeps
    from xqg_ray.pipeline import run

    out = tmp_path_factory.mktemp("dev") / "run"
    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), [
        f"output_dir={out}", f"benchmark.source={shared_datasets}", "ray.progress=false", "benchmark.corpus_limit=24",
        "benchmark.max_queries_per_language=6", "benchmark.dev_fraction=0.3"])
    cfg.systems = [SystemConfig(name="baseline"),
                   SystemConfig(name="xqg", generator="t5", alpha=0.01, allow_unequal_counts=True, sweep=SweepConfig(alpha=[0.01, 0.3]))]
    cfg.generators = {"t5": cfg.generators["t5"]}
    cfg.eval.tune_groups = {"xqg-tuned": ["xqg"]}
    first = run(expand_sweeps(cfg))
    report = (out / "report.md").read_text()
    return out, first, run(expand_sweeps(cfg)), report


def test_the_alpha_is_chosen_on_the_dev_questions_end_to_end(tuned) -> None:
    out, metrics, _, _ = tuned
    bench = current(out, "benchmark")
    dev = pq.read_table(out / bench["files"]["dev"]["file"])
    test = pq.read_table(out / bench["files"]["queries"]["file"])
    assert bench["counts"]["dev"] == dev.num_rows == 12 and test.num_rows == 12
    assert not bases(dev) & bases(test)
    # The dev questions are searched on every system and kept out of every evaluated table.
    for name in ("baseline", "xqg", "xqg@alpha=0.3"):
        d = pq.read_table(out / "per_query" / "dev" / f"{name}.parquet")
        assert d["qid"].to_pylist() == dev["qid"].to_pylist()
        assert pq.read_table(out / "per_query" / f"{name}.parquet")["qid"].to_pylist() == test["qid"].to_pylist()
        assert (out / "runs" / "dev" / f"{name}.trec").exists() and (out / "runs" / f"{name}.xor.json").exists()
        assert not (out / "runs" / "dev" / f"{name}.xor.json").exists()  # the XOR-Retrieve file is for evaluated questions
    assert metrics["experiments"]["robustness"] == {}  # the dev set is no perturbation
    assert not {c["system"] for c in metrics["comparisons"]} - {"xqg", "xqg@alpha=0.3"}
    assert metrics["benchmark"]["queries"] == 12 and metrics["benchmark"]["dev_questions"] == 12
    # The choice: the best macro MRR@10 on dev, from the dev per-query files; its evaluated figures beside it.
    scores = {a: dev_score(pq.read_table(out / "per_query" / "dev" / f"{n}.parquet")["MRR@10"].to_pylist(), dev["lang"].to_pylist())
              for a, n in ((0.01, "xqg"), (0.3, "xqg@alpha=0.3"))}
    best = max(scores.values())
    chosen = 0.01 if scores[0.01] == best else 0.3
    t = metrics["tuning"]["xqg"]["alpha"]
    assert (t["chosen"], t["on"], t["metric"], t["dev_questions"]) == (chosen, "dev", "MRR@10", 12)
    assert t["dev_scores"] == {str(a): s for a, s in scores.items()}
    point = next(p for sw in metrics["experiments"]["sweeps"] for p in sw["points"] if p["value"] == chosen)
    assert t["system"] == point["system"] and t["test"]["MRR@10"]["mean"] == point["metrics"]["MRR@10"]["mean"]
    report = (out / "report.md").read_text()
    assert f"Chosen on 12 dev questions: alpha={chosen} " in report and "### Tuned on dev" in report
    # The group of xqg and its sweep points chooses the same point, from the same dev scores; its test is that
    # point's pooled comparison, and each language's row (p Holm-adjusted across languages) of the comparisons.
    g = metrics["tuning_groups"]["xqg-tuned"]
    assert (g["chosen"], g["dev_scores"], g["baseline"]) == (t["system"], {"xqg": scores[0.01], "xqg@alpha=0.3": scores[0.3]}, "baseline")
    assert g["baseline_dev_score"] == dev_score(pq.read_table(out / "per_query" / "dev" / "baseline.parquet")["MRR@10"].to_pylist(),
                                                dev["lang"].to_pylist())
    assert g["test"] == t["test"]
    rows = [c for c in metrics["comparisons"] if c["system"] == g["chosen"] and c["metric"] == "MRR@10" and c["lang"] != "all"]
    assert g["languages"] == {c["lang"]: {"diff": c["mean_diff"], "ci95": c["ci95"], "p_value": c["p_value"], "p_holm": c["p_holm"]} for c in rows}
    assert sorted(g["languages"]) == sorted(set(test["lang"].to_pylist()))
    assert f"| xqg-tuned | {g['chosen']} | unfiltered | sum | {chosen} |" in report


def test_a_rerun_reuses_the_dev_search_and_chooses_the_same(tuned) -> None:
    out, first, second, report = tuned
    assert second["stages"]["search"]["reused"] is True and second["stages"]["queries"]["reused"] is True
    assert second["tuning"] == first["tuning"] and second["tuning_groups"] == first["tuning_groups"]
    def sweeps(text: str) -> str:  # the stage timings elsewhere in the report differ between runs
        return text.split("## Sweeps", 1)[1].split("\n## ", 1)[0]

    assert sweeps((out / "report.md").read_text()) == sweeps(report) and "Chosen on 12 dev questions" in sweeps(report)
