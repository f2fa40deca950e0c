"""Filters with seeded resampling: a scripted generator (no model) through QueryGenerator.generate_attempts,
the stage's tables and commit counts, and metrics.json's question_quality from the manifests alone."""

from __future__ import annotations

from typing import Dict, List, Tuple

import pyarrow as pa
import pytest

from xqg_ray.config import GeneratorConfig
from xqg_ray.config.schema import FilterConfig
from xqg_ray.evaluation.question_quality import quality_report
from xqg_ray.evaluation.question_filter import reject_reason, selection
from xqg_ray.evaluation.question_quality import filter_counts, run_quality, unit_quality
from xqg_ray.ids import seed_for
from xqg_ray.models.generator import QueryGenerator
from xqg_ray.models.prompts import load_fewshot
from xqg_ray.models.rounds import round_tag
from xqg_ray.schemas import ATTEMPTS_SCHEMA, KEPT, PASSED, UNFILTERED
from xqg_ray.stages.generate import draws_table, queries_table, sort_draws

LUTHER = (11, "Martin Luther", "Martin Luther was a German priest who wrote the Ninety-five Theses in 1517 and translated the Bible into German.")
GOOD_DE = "Wann schrieb Martin Luther seine fünfundneunzig Thesen?"
COPY_DE = "In welcher Dynastie wurde der größte Teil der heute erhaltenen Chinesischen Mauer gebaut?"  # the de exemplar's question
LOOP_DE = "Wann Wann Wann schrieb Luther die Thesen?"
ENGLISH = "When did Martin Luther write the theses?"
GOOD_ES = "¿Cuándo escribió Martin Luther las noventa y cinco tesis?"
GOOD_ES2 = "¿En qué idioma tradujo Lutero la Biblia?"
OTHER = (12, "Coffee", "Coffee is brewed from roasted coffee beans.")
OTHER_DE = "Woraus wird Kaffee gemacht?"
OTHER_ES = "¿De qué se hace el café?"

# (passage id, language, round) -> the texts of that round's draws, draw 0 first.
SCRIPT: Dict[Tuple[int, str, int], List[str]] = {
    (11, "de", 0): [GOOD_DE, COPY_DE],
    (11, "de", 1): [GOOD_DE],            # repeats the kept draw: duplicate
    (11, "de", 2): [LOOP_DE],            # degenerate: the slot is left empty after 3 rounds
    (11, "es", 0): [ENGLISH, ""],        # wrong language, empty
    (11, "es", 1): [GOOD_ES, GOOD_ES2],
    (12, "de", 0): [OTHER_DE, OTHER_DE + " "],  # the same question twice: duplicate
    (12, "de", 1): ["Wie wird Kaffee zubereitet?"],
    (12, "es", 0): [OTHER_ES, "¿Qué se tuesta para hacer café?"],
}


class Scripted(QueryGenerator):
    """A QueryGenerator without a model: each round's draws come from SCRIPT; every seed asked is recorded."""

    computed_in = {"dtype": "scripted", "device": "cpu"}  # no model: what a unit's commit record says

    def __init__(self, cfg: GeneratorConfig):  # noqa: D107 - no model to load
        self.name, self.cfg = "g", cfg
        self.fewshot = load_fewshot()
        self.draw_exemplars = False  # the pool's first exemplar (COPY_DE's), as the scripts below were written for
        self.calls: List[List[Tuple[int, str, Tuple[int, ...]]]] = []
        self.rows: List[Tuple[int, str, str]] = []
        self.script = SCRIPT

    def prompt_ids(self, pid, title, text, lang):  # noqa: ANN001
        return (), []

    def generate_attempts(self, rows, judge=None):  # noqa: ANN001
        self.rows, self.calls = list(rows), []  # a call's rounds are counted from 0
        return super().generate_attempts(rows, judge=judge)

    def _run(self, prompts):  # noqa: ANN001
        r = len(self.calls)
        self.calls.append([(self.rows[p.row][0], p.lang, tuple(p.seeds)) for p in prompts])
        return [self.script[(self.rows[p.row][0], p.lang, r)][: len(p.seeds)] for p in prompts]


def _cfg(**filters) -> GeneratorConfig:
    return GeneratorConfig(kind="causal", model="x", languages=["de", "es"], n_per_language=2, few_shot=1, seed=5,
                           filters=FilterConfig(**filters))


def _summary(draws):
    return [(d["lang"], d["round"], d["draw"], d["reason"], d["kept"], d["unfiltered"]) for d in draws]


def test_each_filter_rejects_exactly_the_bad_draws_and_resamples_with_seeds():
    gen = Scripted(_cfg())
    luther, other = gen.generate_attempts([LUTHER, OTHER])
    assert _summary(luther) == [
        ("de", 0, 0, None, True, True), ("de", 0, 1, "exemplar_copy", False, True),
        ("de", 1, 0, "duplicate", False, False), ("de", 2, 0, "degenerate", False, False),
        ("es", 0, 0, "wrong_language", False, True), ("es", 0, 1, "blank", False, False),
        ("es", 1, 0, None, True, True), ("es", 1, 1, None, True, False),
    ]
    assert [(d["exemplar"], d["wrong_language"], d["duplicate"]) for d in luther[:2]] == [(None, False, False), ("exact", False, False)]
    assert _summary(other) == [
        ("de", 0, 0, None, True, True), ("de", 0, 1, "duplicate", False, True), ("de", 1, 0, None, True, False),
        ("es", 0, 0, None, True, True), ("es", 0, 1, None, True, True),
    ]
    # Round 0 draws n per language; a later round only what the kept questions lack, with the retry seeds.
    rounds = [[(pid, lang, len(s)) for pid, lang, s in call] for call in gen.calls]
    assert rounds == [[(11, "de", 2), (11, "es", 2), (12, "de", 2), (12, "es", 2)], [(11, "de", 1), (11, "es", 2), (12, "de", 1)], [(11, "de", 1)]]
    assert gen.calls[0][0][2] == tuple(seed_for(5, "g", 11, "de", "sample", j) for j in range(2))
    assert gen.calls[1][1][2] == tuple(seed_for(5, "g", 11, "es", "retry", 0, j) for j in range(2))
    assert gen.calls[2][0][2] == (seed_for(5, "g", 11, "de", "retry", 1, 0),)
    assert selection(luther, ["de", "es"], 2, KEPT) == ([{"lang": "de", "text": GOOD_DE}, {"lang": "es", "text": GOOD_ES}, {"lang": "es", "text": GOOD_ES2}], 1)
    assert selection(luther, ["de", "es"], 2, UNFILTERED) == (
        [{"lang": "de", "text": GOOD_DE}, {"lang": "de", "text": COPY_DE}, {"lang": "es", "text": ENGLISH}, {"lang": "es", "text": GOOD_ES}], 0)
    # The same draws on a rerun (a resumed unit generates its partition again with the same seeds).
    assert Scripted(_cfg()).generate_attempts([LUTHER, OTHER]) == [luther, other]


def test_unfiltered_selection_is_the_generation_without_filters():
    on, off = Scripted(_cfg()), Scripted(_cfg(enabled=[]))
    assert on.generate_many([LUTHER, OTHER]) == off.generate_many([LUTHER, OTHER])
    draws = off.generate_attempts([LUTHER, OTHER])
    assert all(d["kept"] == d["unfiltered"] for ds in draws for d in ds)
    # One round fewer for Luther's de (nothing to resample) and no rejection but the blank draw.
    assert [r for ds in draws for r in (d["reason"] for d in ds) if r] == ["blank"]
    assert len(off.calls) == 2


def test_punctuation_is_a_question_without_filters_and_empty_with_them():
    off = Scripted(_cfg(enabled=[]))
    off.script = {(12, "de", 0): ["?", OTHER_DE], (12, "es", 0): [OTHER_ES, "¿Qué se tuesta?"]}
    assert all(d["kept"] and d["unfiltered"] for d in off.generate_attempts([OTHER])[0])
    gen = Scripted(_cfg())
    gen.script = {(12, "de", 0): ["?", OTHER_DE], (12, "de", 1): ["Wie wird Kaffee zubereitet?"], (12, "es", 0): [OTHER_ES, "¿Qué se tuesta?"]}
    [draws] = gen.generate_attempts([OTHER])
    # Before filters any text filled a slot (the data file keeps that); the filter calls "?" empty and resamples it.
    assert _summary(draws)[:3] == [("de", 0, 0, "empty", False, True), ("de", 0, 1, None, True, True), ("de", 1, 0, None, True, False)]
    assert draws[0]["duplicate"] is None


def test_each_reason_only_when_enabled():
    flags = {"empty": False, "wrong_language": True, "exemplar": "near", "degenerate": True}
    assert reject_reason("q", flags, True, ["degenerate"]) == "degenerate"
    assert reject_reason("q", flags, True, ["duplicate", "degenerate"]) == "duplicate"
    assert reject_reason("q", flags, True, ["exemplar_copy", "duplicate"]) == "exemplar_copy"
    assert reject_reason("q", flags, True, []) is None
    assert reject_reason("q", {**flags, "wrong_language": None}, False, ["wrong_language"]) is None  # cannot tell: not wrong
    assert reject_reason("?", {**flags, "empty": True}, False, ["empty", "wrong_language"]) == "empty"
    assert reject_reason("?", {**flags, "empty": True}, False, []) is None
    assert reject_reason("", {**flags, "empty": True}, False, []) == "blank"  # always


def test_max_attempts_bounds_the_resampling():
    gen = Scripted(_cfg(max_attempts=1))
    luther, _ = gen.generate_attempts([LUTHER, OTHER])
    assert len(gen.calls) == 1 and selection(luther, ["de", "es"], 2, KEPT)[1] == 3  # de 1, es 2


class Seeded(Scripted):
    """SCRIPT's texts by seed: a draw's text depends on its seed alone, whichever round samples it ("" if unscripted)."""

    BY_SEED = {seed_for(5, "g", pid, lang, *round_tag(r), j): t for (pid, lang, r), ts in SCRIPT.items() for j, t in enumerate(ts)}

    def _run(self, prompts):  # noqa: ANN001
        self.calls.append([(self.rows[p.row][0], p.lang, tuple(p.seeds)) for p in prompts])
        return [[self.BY_SEED.get(s, "") for s in p.seeds] for p in prompts]


@pytest.mark.parametrize("ahead, calls, made, used", [(1, [16, 1], 8, 4), (2, [24], 16, 5)])
def test_draws_ahead_are_the_same_draws_from_fewer_prefills(ahead, calls, made, used):
    plain = Seeded(_cfg()).generate_attempts([LUTHER, OTHER])
    assert plain == Scripted(_cfg()).generate_attempts([LUTHER, OTHER])  # the seeded script is SCRIPT
    gen = Seeded(_cfg(draw_ahead=ahead))
    assert gen.generate_attempts([LUTHER, OTHER]) == plain
    # Round 0 samples each prompt's next rounds too (as many draws as round 0 needs); with 1 ahead,
    # round 1 reads them and only Luther's de is sampled again, in round 2 (3 rounds in all).
    assert [sum(len(s) for _, _, s in call) for call in gen.calls] == calls
    assert gen.calls[0][0][2][:4] == tuple(seed_for(5, "g", 11, "de", *tag, j) for tag in (("sample",), ("retry", 0)) for j in range(2))
    assert (gen.plan.made, gen.plan.used, gen.plan.unused) == (made, used, made - used)


def _unit_draws() -> pa.Table:
    gen = Scripted(_cfg())
    draws = draws_table([11, 12], ["h11", "h12"], gen.generate_attempts([LUTHER, OTHER]))
    return sort_draws(draws, ["de", "es"])


def test_commit_counts_by_reason_are_exact():
    draws = _unit_draws()
    assert draws.schema == ATTEMPTS_SCHEMA and draws.num_rows == 13
    assert filter_counts(draws, ["de", "es"], 2) == {
        "draws": 13, "kept": 7, "left_empty": 1,
        "rejected": {"total": 6, "by_reason": {"blank": 1, "empty": 0, "wrong_language": 1, "exemplar_copy": 1, "duplicate": 2, "degenerate": 1, "round_trip": 0}},
    }
    kept = queries_table(draws, ["de", "es"], 2, KEPT)
    assert kept["failed"].to_pylist() == [1, 0] and kept["id"].to_pylist() == [11, 12]
    assert [q["text"] for q in kept["queries"][1].as_py()] == [OTHER_DE, "Wie wird Kaffee zubereitet?", OTHER_ES, "¿Qué se tuesta para hacer café?"]
    unf = queries_table(draws, ["de", "es"], 2, UNFILTERED)
    assert unf["failed"].to_pylist() == [0, 0] and [q["text"] for q in unf["queries"][1].as_py()][:2] == [OTHER_DE, OTHER_DE + " "]


def test_question_quality_in_metrics_from_the_units_records():
    draws = _unit_draws()
    half = [draws.filter(pa.compute.equal(draws["id"], pid)) for pid in (11, 12)]
    units = [{"quality": unit_quality(t), "filter": filter_counts(t, ["de", "es"], 2)} for t in half]
    got = run_quality({"g": {"generator": {"filters": {"max_attempts": 3}}, "units": units}, "human": {"units": [{}]}, "none": None})
    assert list(got) == ["g"]
    q = got["g"]
    assert q["filter"]["rejected"]["by_reason"] == {"blank": 1, "empty": 0, "wrong_language": 1, "exemplar_copy": 1, "duplicate": 2, "degenerate": 1, "round_trip": 0}
    assert q["filter"]["left_empty"] == 1 and q["settings"] == {"max_attempts": 3}
    unf = q[UNFILTERED]
    assert unf["overall"]["n"] == 8 and unf["overall"]["counts"] == {
        "empty": 0, "wrong_language": 1, "exemplar_exact": 1, "exemplar_near": 0, "duplicate": 1, "degenerate": 0,
        "language_unknown": 0, "rejected": 3}
    assert unf["by_language"]["es"]["counts"]["wrong_language"] == 1 and unf["by_language"]["es"]["rates"]["wrong_language"] == 0.25
    assert q[KEPT]["overall"]["n"] == 7 and q[KEPT]["overall"]["counts"]["rejected"] == 0
    # The same figures as quality_report over the selection's rows with their passages.
    rows = [{"passage_id": r["id"], "lang": r["lang"], "text": r["text"], "passage": (LUTHER if r["id"] == 11 else OTHER)[2]}
            for r in draws.to_pylist() if r[UNFILTERED]]
    ex = {lang: load_fewshot()[lang][:1] for lang in ("de", "es")}
    assert unf == quality_report(rows, ex, ["de", "es", "en"])


@pytest.mark.parametrize("bad", [{"enabled": ["nope"]}, {"max_attempts": 0}, {"exemplar_overlap": 0.0}, {"enabled": ["duplicate", "duplicate"]},
                                 {"draw_ahead": 3}, {"draw_ahead": -1}, {"max_attempts": 1, "draw_ahead": 1}])
def test_filter_config_is_validated(bad):
    from xqg_ray.config.validate import one_generator_problems

    errs = one_generator_problems("generators.g", _cfg(**bad))
    assert len(errs) == 1 and errs[0].startswith("generators.g.filters.")


def test_human_questions_quality_from_a_provided_generators_files(tmp_path):
    from xqg_ray.stages.question_quality import provided_quality
    from xqg_ray.schemas import GENERATED_SCHEMA
    from xqg_ray.store.integrity import write_table_committed
    from xqg_ray.store.storage import Storage

    t = pa.Table.from_pylist([
        {"id": 11, "content_hash": "h", "queries": [{"lang": "de", "text": GOOD_DE}, {"lang": "de", "text": GOOD_DE}], "failed": 0},
        {"id": 12, "content_hash": "h", "queries": [{"lang": "es", "text": ENGLISH}], "failed": 0}], schema=GENERATED_SCHEMA)
    rec = write_table_committed(Storage(), str(tmp_path), "generated/human/data/p-00000-x.parquet", t)
    q = provided_quality(Storage(), str(tmp_path), {"units": [rec]})
    assert list(q) == [UNFILTERED] and q[UNFILTERED]["overall"]["counts"]["duplicate"] == 1
    assert q[UNFILTERED]["by_language"]["es"]["counts"]["wrong_language"] == 1 and q[UNFILTERED]["overall"]["n"] == 3
    # Read a partition at a time: two partitions give quality_report of all their rows, exactly.
    t2 = pa.Table.from_pylist([
        {"id": 13, "content_hash": "h", "queries": [{"lang": "es", "text": GOOD_ES}, {"lang": "de", "text": GOOD_ES2}], "failed": 0},
        {"id": 14, "content_hash": "h", "queries": [{"lang": "es", "text": OTHER_ES}, {"lang": "es", "text": OTHER_ES}], "failed": 0}],
        schema=GENERATED_SCHEMA)
    rec2 = write_table_committed(Storage(), str(tmp_path), "generated/human/data/p-00001-x.parquet", t2)
    rows = [{"passage_id": r["id"], "lang": x["lang"], "text": x["text"]} for t in (t, t2) for r in t.to_pylist() for x in r["queries"]]
    both = provided_quality(Storage(), str(tmp_path), {"units": [rec, rec2]})[UNFILTERED]
    assert both == quality_report(rows) and both["overall"]["n"] == 7 and both["overall"]["counts"]["duplicate"] == 2
    # Kept per segment (named): an update that appends a delta segment reads only the delta.
    assert provided_quality(Storage(), str(tmp_path), {"units": [rec, rec2]}, "human")[UNFILTERED] == both
    t3 = pa.Table.from_pylist([{"id": 15, "content_hash": "h", "queries": [{"lang": "de", "text": OTHER_DE}], "failed": 0}], schema=GENERATED_SCHEMA)
    rec3 = write_table_committed(Storage(), str(tmp_path), "generated/human/data/p-00001-y.parquet", t3)
    appended = {**rec3, "segments": [rec2, rec3]}
    (tmp_path / rec["file"]).unlink()
    (tmp_path / rec2["file"]).unlink()  # cached: never read again
    rows3 = rows + [{"passage_id": 15, "lang": "de", "text": OTHER_DE}]
    assert provided_quality(Storage(), str(tmp_path), {"units": [rec, appended]}, "human")[UNFILTERED] == quality_report(rows3)


def _quality():
    draws = _unit_draws()
    return run_quality({"g": {"generator": {"filters": {"max_attempts": 3}}, "units": [
        {"quality": unit_quality(draws), "filter": filter_counts(draws, ["de", "es"], 2)}]}})


def test_report_table_and_chart():
    from xqg_ray.report.question_quality import quality_chart_png, quality_tables

    lines = quality_tables(_quality())
    assert "### g (unfiltered)" in lines and "### g (kept)" in lines
    # de: Luther's question, the exemplar copy and the coffee question twice (7, 13, 4, 4 tokens).
    assert "| de | 4 | 0.0 | 25.0 | 0.0 | 25.0 | 0.0 | 0.0 | 50.0 | 7.0 | – |" in lines
    assert "| all | 8 | 12.5 | 12.5 | 0.0 | 12.5 | 0.0 | 0.0 | 37.5 | 7.0 | – |" in lines
    assert "| all | 7 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 6.1 | – |" in lines  # kept
    assert ("Filter of g: 13 draws, 7 kept, 6 rejected (blank 1, empty 0, wrong_language 1, exemplar_copy 1, duplicate 2, "
            "degenerate 1, round_trip 0); 1 slots left empty (settings: {'max_attempts': 3}).") in lines
    png = quality_chart_png(_quality())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == quality_chart_png(_quality())


def test_passed_quality_is_the_kept_questions_without_the_fill():
    from xqg_ray.evaluation.question_quality import add_round_trip, sample_draws
    from xqg_ray.report.question_quality import quality_tables

    rows = _unit_draws().to_pylist()
    i = next(k for k, d in enumerate(rows) if d["reason"] == "degenerate")
    rows[i] = {**rows[i], "reason": "round_trip", "kept": True}  # what filters.fill_empty does to a round-trip reject
    filled = pa.Table.from_pylist(rows, schema=ATTEMPTS_SCHEMA)

    def quality(t, filters):
        return run_quality({"g": {"generator": {"filters": filters}, "units": [{"quality": unit_quality(t), "filter": filter_counts(t, ["de", "es"], 2)}]}})

    q = quality(filled, {"fill_empty": True})
    on = q["g"]
    assert (on[UNFILTERED]["overall"]["n"], on[KEPT]["overall"]["n"], on[PASSED]["overall"]["n"]) == (8, 8, 7)
    assert on[KEPT]["overall"]["counts"]["degenerate"] == 1 and on[PASSED]["overall"]["counts"]["degenerate"] == 0
    # Passed: the same report as the kept questions of the draws before the fill.
    assert on[PASSED] == quality(_unit_draws(), {})["g"][KEPT]
    assert PASSED not in quality(filled, {"fill_empty": False})["g"]  # without the fill, passed is kept again: not reported twice
    assert "### g (passed)" in quality_tables({"g": on})
    # Its round trip: the sampled draws that passed, ranked with the rest.
    full = sample_draws([filled], "g", 3)  # every draw of either selection: the 10 before and the filled one
    assert (len(full), sum(r[KEPT] for r in full), sum(r[PASSED] for r in full)) == (11, 8, 7)
    assert all(r[KEPT] for r in full if r[PASSED])
    ranks = {"g": [1 + i for i in range(len(full))]}
    add_round_trip(q, {"g": full}, ranks, {"per_language": 200})
    passed = [k for r, k in zip(full, ranks["g"]) if r[PASSED]]
    assert on[PASSED]["overall"]["round_trip"]["n"] == len(passed) == 7
    assert on[PASSED]["overall"]["round_trip"]["median_rank"] == float(sorted(passed)[3])


def test_round_trip_sample_is_seeded_and_order_free():
    from xqg_ray.evaluation.question_quality import add_round_trip, sample_draws

    draws = _unit_draws()
    halves = [draws.slice(0, 6), draws.slice(6)]
    one = sample_draws(halves, "g", 3, per_language=2)
    assert one == sample_draws(halves[::-1], "g", 3, per_language=2) == sample_draws([draws], "g", 3, per_language=2)
    assert [r["lang"] for r in one] == ["de", "de", "es", "es"] and all(r[UNFILTERED] or r[KEPT] for r in one)
    assert sample_draws([draws], "g", 4, per_language=2) != one  # another seed, another sample
    full = sample_draws([draws], "g", 3)
    assert len(full) == 10  # every draw of either selection: 8 unfiltered, 7 kept, 5 in both
    q = _quality()
    ranks = {"g": [1 + i for i in range(len(full))]}
    add_round_trip(q, {"g": full}, ranks, {"per_language": 200})
    unf = [k for r, k in zip(full, ranks["g"]) if r[UNFILTERED]]
    assert q["g"][UNFILTERED]["overall"]["round_trip"]["n"] == 8 and q["g"][UNFILTERED]["overall"]["round_trip"]["hits@1"] == (1 in unf)
    assert q["g"][KEPT]["overall"]["round_trip"]["n"] == 7 and q["g"]["round_trip_sample"] == {"per_language": 200}


def test_provided_round_trip_sample_is_seeded_order_free_and_in_the_given_languages():
    from xqg_ray.evaluation.question_quality import sample_provided
    from xqg_ray.ids import seed_for
    from xqg_ray.schemas import GENERATED_SCHEMA

    def table(rows):
        return pa.Table.from_pylist([{"id": pid, "content_hash": "h", "queries": [{"lang": l, "text": t} for l, t in qs], "failed": 0}
                                     for pid, qs in rows], schema=GENERATED_SCHEMA)

    a = table([(11, [("de", "Wer war Luther?"), ("es", "¿Quién fue Lutero?"), ("de", "Wann lebte er?")]),
               (12, [("de", "   "), ("fr", "Qui est-ce ?"), ("zh", "他是谁？")])])
    b = table([(13, [("de", "Was ist eine Rippenqualle?"), ("zh", "什么是栉水母？")]), (14, [])])
    one = sample_provided([a, b], "human", 3, ["de", "zh"], per_language=2)
    assert one == sample_provided([b, a], "human", 3, ["de", "zh"], per_language=2)  # the order of files and rows is free
    # de: three questions with text (the blank one never counts), the two of smallest seeded key.
    de = [(11, 0, "Wer war Luther?"), (11, 2, "Wann lebte er?"), (13, 0, "Was ist eine Rippenqualle?")]
    want_de = sorted(de, key=lambda x: seed_for(3, "round-trip", "human", x[0], "de", x[1]))[:2]
    assert [(r["id"], r["text"]) for r in one if r["lang"] == "de"] == [(pid, t) for pid, _, t in want_de]
    zh = [(12, 2, "他是谁？"), (13, 1, "什么是栉水母？")]
    want_zh = sorted(zh, key=lambda x: seed_for(3, "round-trip", "human", x[0], "zh", x[1]))
    assert [(r["id"], r["text"]) for r in one if r["lang"] == "zh"] == [(pid, t) for pid, _, t in want_zh]
    assert [r["lang"] for r in one] == ["de", "de", "zh", "zh"]  # es and fr: not asked for
    assert all(r[UNFILTERED] is True and r[KEPT] is False for r in one)
    # Another seed draws by other keys: the de pair it keeps is its own two smallest.
    other = sorted(de, key=lambda x: seed_for(4, "round-trip", "human", x[0], "de", x[1]))[:2]
    assert [r["id"] for r in sample_provided([a, b], "human", 4, ["de"], per_language=2)] == [pid for pid, _, _ in other]
    assert sample_provided([a, b], "human", 3, ["ar"]) == []


def test_chart_series_has_the_round_trip_panel_beside_the_flags():
    from xqg_ray.report.question_quality import PANELS, chart_series

    q = _quality()
    q["g"][UNFILTERED]["by_language"]["de"]["round_trip"] = {"n": 4, "rate@1": 0.25}
    q["human"] = {UNFILTERED: {"overall": {}, "by_language": {"de": {"rates": {"duplicate": 0.0}, "round_trip": {"n": 2, "rate@1": 1.0}},
                                                           "zh": {"rates": {"duplicate": 0.5}}}}}
    s = chart_series(q)
    assert list(s) == [p for p, _ in PANELS] and PANELS[-1] == ("round_trip", "round trip @1")
    assert s["round_trip"] == {"g": {"de": 0.25, "es": None, "zh": None}, "human": {"de": 1.0, "es": None, "zh": None}}
    assert s["duplicate"]["human"] == {"de": 0.0, "es": None, "zh": 0.5} and s["duplicate"]["g"]["zh"] is None
