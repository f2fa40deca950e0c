"""Replaying a generation's stored draws at a looser round trip or fewer rounds (``evaluation.question_filter.replay``).

A system of kept or passed questions can set its own ``round_trip_top_k`` and ``max_attempts``: its questions
are the stored draws judged again, never drawn again.  Each replay here equals a generation made at those
settings (the scripted generator and judge of ``test_round_trip_filter``), from the draws in memory and read
back from an attempts file; the one inexact case is counted.  The Ray run's replayed system is in
``test_round_trip_filter``.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from test_question_filter import GOOD_DE, LUTHER, OTHER, OTHER_DE, OTHER_ES
from test_round_trip_filter import OFF_TOPIC_ES, ON, OTHER_DE2, RANKS, ScriptedJudge, _gen
from xqg_ray.config.schema import ROUND_TRIP
from xqg_ray.evaluation.question_filter import replay
from xqg_ray.schemas import KEPT, PASSED
from xqg_ray.stages.generate import draws_table, sort_draws


@pytest.mark.parametrize("fill", [False, True])
def test_replayed_verdicts_at_a_looser_k_or_fewer_rounds_equal_a_generation_there(fill):
    """A system's own round-trip threshold and rounds (chosen on dev questions) come from the stored draws:
    replaying them equals generating again with those settings, draw for draw, verdict for verdict."""
    stored = _gen(round_trip_top_k=2, fill_empty=fill).generate_attempts([LUTHER, OTHER], judge=ScriptedJudge(RANKS))
    for k, rounds in [(2, 3), (3, 3), (7, 3), (2, 1), (2, 2), (3, 1)]:
        again = _gen(round_trip_top_k=k, max_attempts=rounds, fill_empty=fill).generate_attempts([LUTHER, OTHER], judge=ScriptedJudge(RANKS))
        for mine, theirs in zip(stored, again):
            assert replay(mine, ["de", "es"], 2, ON, k, rounds, 0.8, fill) == (theirs, 0), (k, rounds)
    # At k 3 Luther's es slot is kept at once (ranks 3 and 2): its two later draws are not made.
    luther = replay(stored[0], ["de", "es"], 2, ON, 3, 3, 0.8, fill)[0]
    assert [(d["lang"], d["round"], d["reason"], d["kept"]) for d in luther] == [
        ("de", 0, None, True), ("de", 0, ROUND_TRIP, fill), ("de", 1, "degenerate", False), ("de", 2, ROUND_TRIP, False),
        ("es", 0, None, True), ("es", 0, None, True)]


def test_a_duplicate_only_the_looser_verdicts_create_counts_the_draws_never_made():
    """n 1: at k 1 the de question is rejected and redrawn, so the es question (the same words) is kept; at k 2
    the de one is kept first, the es one becomes its duplicate, and es would need a draw round 1 never made."""
    same = "Wann schrieb Luther die 95 Thesen?"
    draws = [
        {"lang": "de", "round": 0, "draw": 0, "text": same, "empty": False, "wrong_language": False, "exemplar": None, "degenerate": False, ROUND_TRIP: 2},
        {"lang": "de", "round": 1, "draw": 0, "text": GOOD_DE, "empty": False, "wrong_language": False, "exemplar": None, "degenerate": False, ROUND_TRIP: 1},
        {"lang": "es", "round": 0, "draw": 0, "text": same, "empty": False, "wrong_language": False, "exemplar": None, "degenerate": False, ROUND_TRIP: 1},
    ]
    strict, missing = replay(draws, ["de", "es"], 1, [ROUND_TRIP, "duplicate"], 1, 2, 0.8, False)
    assert ([d["reason"] for d in strict], missing) == ([ROUND_TRIP, None, None], 0)
    loose, missing = replay(draws, ["de", "es"], 1, [ROUND_TRIP, "duplicate"], 2, 2, 0.8, False)
    assert ([(d["lang"], d["round"], d["reason"]) for d in loose], missing) == ([("de", 0, None), ("es", 0, "duplicate")], 1)


@pytest.mark.parametrize("rows", [1, 100])
def test_a_replayed_selection_read_from_the_attempts_file_equals_a_generation_at_its_thresholds(tmp_path, rows):
    """The stored draws (ranks included) written and read back as the encode stage reads a selected source:
    kept and passed at k 3 or one round equal those of a generation made there; the fingerprints differ."""
    from xqg_ray.stages.generate import queries_table
    from xqg_ray.stages.sources import selected_queries, selected_source
    from xqg_ray.store.integrity import VerifiedParquet, write_table_committed
    from xqg_ray.store.storage import Storage

    langs = ["de", "es"]
    stored = sort_draws(draws_table([11, 12], ["h11", "h12"], _gen(round_trip_top_k=2, fill_empty=True).generate_attempts(
        [LUTHER, OTHER], judge=ScriptedJudge(RANKS))), langs)
    assert stored["round_trip"].to_pylist()[:4] == [1, 7, None, 7]  # the ranks are stored; the degenerate draw was not judged
    storage = Storage()
    f = VerifiedParquet(storage, str(tmp_path), write_table_committed(storage, str(tmp_path), "attempts/p-00000.parquet", stored))
    manifest = {"fingerprint": "F", "gen_fp": "G", "units": [{"partition": 0, "key": "K", "attempts": {"file": "x"}}],
                "generator": {"languages": langs, "n_per_language": 2,
                              "filters": {"enabled": ON, "round_trip_top_k": 2, "max_attempts": 3, "duplicate_jaccard": 0.8, "fill_empty": True}}}
    prints = set()
    for which in (KEPT, PASSED):
        for k, rounds in [(0, 0), (3, 0), (0, 1), (7, 2)]:
            source = selected_source("g", manifest, which, k, rounds)
            prints.add(source["fingerprint"])
            got = pa.concat_tables(list(selected_queries(f, source["select"], rows)))
            again = _gen(round_trip_top_k=k or 2, max_attempts=rounds or 3, fill_empty=True).generate_attempts([LUTHER, OTHER], judge=ScriptedJudge(RANKS))
            assert got.equals(queries_table(sort_draws(draws_table([11, 12], ["h11", "h12"], again), langs), langs, 2, which)), (which, k, rounds)
    assert len(prints) == 8
    # At k 3 the passed questions gain Luther's es draw of rank 3; Other's rank-4 es draw still gives way to its redraw.
    k3 = pa.concat_tables(list(selected_queries(f, selected_source("g", manifest, PASSED, 3)["select"], rows)))
    assert [[q["text"] for q in qs] for qs in k3["queries"].to_pylist()] == [
        [GOOD_DE, OFF_TOPIC_ES, "¿Cuándo escribió Lutero las tesis?"], [OTHER_DE, OTHER_DE2, OTHER_ES, "¿Qué es el café?"]]
    # With one round, Other's es slot has no redraw: passed leaves it empty.
    r1 = pa.concat_tables(list(selected_queries(f, selected_source("g", manifest, PASSED, 0, 1)["select"], rows)))
    assert ([[q["text"] for q in qs] for qs in r1["queries"].to_pylist()], r1["failed"].to_pylist()) == (
        [[GOOD_DE, "¿Cuándo escribió Lutero las tesis?"], [OTHER_DE, OTHER_DE2, OTHER_ES]], [2, 1])
