"""The round-trip filter: a question is kept only if its own passage ranks within ``round_trip_top_k`` of its
partition's passages under the run's encoder (Promptagator's consistency filter), resampled like any rejection.

Without Ray: a scripted generator and a scripted judge (exact rejections, seeds of the redraws, which draws
are judged, counts by reason), the config checks and the generator's key.  With Ray: one smoke run with the
filter on, every judged draw's stored rank and verdict recomputed from the stored passage vectors and a fresh
encoding of the draw, every passage row of the embeddings the judge's own vectors, a system replayed at a
looser k and one round, and the held-out human questions' round trip (the reference in the report)
recomputed from their files the same way.  The judge itself: ``test_round_trip_judge``; replays:
``test_replay``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from corpus_versions import current
from test_question_filter import GOOD_DE, LUTHER, OTHER, OTHER_DE, OTHER_ES, Scripted, _cfg, _summary
from xqg_ray.config import load_config
from xqg_ray.config.schema import ROUND_TRIP
from xqg_ray.evaluation.question_filter import reject_reason, selection
from xqg_ray.evaluation.question_quality import filter_counts
from xqg_ray.ids import seed_for
from xqg_ray.schemas import KEPT, PASSAGE, PASSED
from xqg_ray.stages.generate import draws_table, sort_draws

REPO = Path(__file__).resolve().parents[1]
ON = ["empty", "wrong_language", "exemplar_copy", "duplicate", "degenerate", ROUND_TRIP]
OFF_TOPIC_DE = "Wer baute das Kolosseum in Rom?"   # about another passage: its own ranks low
OFF_TOPIC_ES = "¿Quién pintó la Mona Lisa?"
OTHER_DE2 = "Wie wird Kaffee zubereitet?"
OTHER_ES2 = "¿Qué se tuesta para hacer café?"


class ScriptedJudge:
    """Ranks by question text; records every (passage id, question) it is asked to rank."""

    def __init__(self, ranks: Dict[str, int]):
        self.table, self.asked = ranks, []

    def ranks(self, passage_ids: Sequence[int], questions: Sequence[str]) -> List[int]:
        self.asked.append(list(zip(passage_ids, questions)))
        return [self.table[q] for q in questions]


RANKS = {GOOD_DE: 1, OFF_TOPIC_DE: 7, OFF_TOPIC_ES: 3, "¿Cuándo escribió Lutero las tesis?": 2,
         OTHER_DE: 1, OTHER_DE2: 2, OTHER_ES: 1, OTHER_ES2: 4, "¿Qué es el café?": 1}


def _gen(**filters) -> Scripted:
    gen = Scripted(_cfg(enabled=ON, **filters))
    gen.script = {
        (11, "de", 0): [GOOD_DE, OFF_TOPIC_DE],
        (11, "de", 1): ["Wann Wann Wann schrieb Luther die Thesen?"],   # degenerate: never judged
        (11, "de", 2): [OFF_TOPIC_DE],                                  # rank 7 again: the slot stays empty
        (11, "es", 0): [OFF_TOPIC_ES, "¿Cuándo escribió Lutero las tesis?"],
        (11, "es", 1): [OFF_TOPIC_ES],
        (11, "es", 2): [OFF_TOPIC_ES],
        (12, "de", 0): [OTHER_DE, OTHER_DE2],
        (12, "es", 0): [OTHER_ES, OTHER_ES2],
        (12, "es", 1): ["¿Qué es el café?"],
    }
    return gen


def test_round_trip_rejects_exactly_the_draws_ranked_below_k_and_resamples_them():
    gen, judge = _gen(round_trip_top_k=2), ScriptedJudge(RANKS)
    luther, other = gen.generate_attempts([LUTHER, OTHER], judge=judge)
    assert _summary(luther) == [
        ("de", 0, 0, None, True, True), ("de", 0, 1, ROUND_TRIP, False, True),
        ("de", 1, 0, "degenerate", False, False), ("de", 2, 0, ROUND_TRIP, False, False),
        ("es", 0, 0, ROUND_TRIP, False, True), ("es", 0, 1, None, True, True),
        ("es", 1, 0, ROUND_TRIP, False, False), ("es", 2, 0, ROUND_TRIP, False, False),
    ]
    assert _summary(other) == [
        ("de", 0, 0, None, True, True), ("de", 0, 1, None, True, True),
        ("es", 0, 0, None, True, True), ("es", 0, 1, ROUND_TRIP, False, True), ("es", 1, 0, None, True, False),
    ]
    # One call per round, for exactly the draws no cheaper reason rejects, each with its own passage.
    assert judge.asked == [
        [(11, GOOD_DE), (11, OFF_TOPIC_DE), (11, OFF_TOPIC_ES), (11, "¿Cuándo escribió Lutero las tesis?"),
         (12, OTHER_DE), (12, OTHER_DE2), (12, OTHER_ES), (12, OTHER_ES2)],
        [(11, OFF_TOPIC_ES), (12, "¿Qué es el café?")],   # the degenerate de draw is not judged
        [(11, OFF_TOPIC_DE), (11, OFF_TOPIC_ES)],
    ]
    assert gen.calls[1][0][2] == (seed_for(5, "g", 11, "de", "retry", 0, 0),)  # the redraws keep the retry seeds
    draws = sort_draws(draws_table([11, 12], ["h11", "h12"], [luther, other]), ["de", "es"])
    assert filter_counts(draws, ["de", "es"], 2) == {
        "draws": 13, "kept": 6, "left_empty": 2,
        "rejected": {"total": 7, "by_reason": {"blank": 0, "empty": 0, "wrong_language": 0, "exemplar_copy": 0, "duplicate": 0,
                                               "degenerate": 1, ROUND_TRIP: 6}}}
    # A rerun gets the same draws and verdicts.
    assert _gen(round_trip_top_k=2).generate_attempts([LUTHER, OTHER], judge=ScriptedJudge(RANKS)) == [luther, other]


def test_k_widens_what_is_kept():
    luther, _ = _gen(round_trip_top_k=3).generate_attempts([LUTHER, OTHER], judge=ScriptedJudge(RANKS))
    assert [(d["lang"], d["round"], d["reason"]) for d in luther] == [
        ("de", 0, None), ("de", 0, ROUND_TRIP), ("de", 1, "degenerate"), ("de", 2, ROUND_TRIP), ("es", 0, None), ("es", 0, None)]


def test_fill_empty_keeps_each_empty_slots_best_ranked_draw_once():
    luther, other = _gen(round_trip_top_k=2, fill_empty=True).generate_attempts([LUTHER, OTHER], judge=ScriptedJudge(RANKS))
    assert _summary(luther) == [
        ("de", 0, 0, None, True, True), ("de", 0, 1, ROUND_TRIP, True, True),        # rank 7, the earliest of the two
        ("de", 1, 0, "degenerate", False, False), ("de", 2, 0, ROUND_TRIP, False, False),  # the same text again: a duplicate
        ("es", 0, 0, ROUND_TRIP, True, True), ("es", 0, 1, None, True, True),         # rank 3: the best es candidate
        ("es", 1, 0, ROUND_TRIP, False, False), ("es", 2, 0, ROUND_TRIP, False, False),
    ]
    assert _summary(other) == _summary(_gen(round_trip_top_k=2).generate_attempts([LUTHER, OTHER], judge=ScriptedJudge(RANKS))[1])
    draws = sort_draws(draws_table([11, 12], ["h11", "h12"], [luther, other]), ["de", "es"])
    assert filter_counts(draws, ["de", "es"], 2) == {
        "draws": 13, "kept": 8, "left_empty": 0, "filled": 2,
        "rejected": {"total": 5, "by_reason": {"blank": 0, "empty": 0, "wrong_language": 0, "exemplar_copy": 0, "duplicate": 0,
                                               "degenerate": 1, ROUND_TRIP: 4}}}
    assert selection(luther, ["de", "es"], 2, KEPT) == ([{"lang": "de", "text": GOOD_DE}, {"lang": "de", "text": OFF_TOPIC_DE},
                                                          {"lang": "es", "text": OFF_TOPIC_ES}, {"lang": "es", "text": "¿Cuándo escribió Lutero las tesis?"}], 0)
    # Without the fill's two additions: one question per language, a slot of each empty.
    assert selection(luther, ["de", "es"], 2, PASSED) == ([{"lang": "de", "text": GOOD_DE},
                                                            {"lang": "es", "text": "¿Cuándo escribió Lutero las tesis?"}], 2)


def test_a_duplicate_is_counted_as_a_duplicate_even_when_judged():
    gen = _gen(round_trip_top_k=2)
    gen.script = {(12, "de", 0): [OTHER_DE, OTHER_DE + " "], (12, "de", 1): [OTHER_DE2], (12, "es", 0): [OTHER_ES, "¿Qué es el café?"]}
    [draws] = gen.generate_attempts([OTHER], judge=ScriptedJudge({**RANKS, OTHER_DE + " ": 1}))
    assert [d["reason"] for d in draws] == [None, "duplicate", None, None, None]


def test_the_filter_needs_a_judge_and_is_off_by_default():
    with pytest.raises(ValueError, match="pass a RoundTripJudge"):
        _gen().generate_attempts([LUTHER])
    from xqg_ray.config.schema import FilterConfig

    assert ROUND_TRIP not in FilterConfig().enabled and FilterConfig().round_trip_top_k == 1
    flags = {"empty": False, "wrong_language": False, "exemplar": None, "degenerate": False}
    assert reject_reason("q", {**flags, ROUND_TRIP: 2}, False, ON, 1) == ROUND_TRIP
    assert reject_reason("q", {**flags, ROUND_TRIP: 2}, False, ON, 2) is None
    assert reject_reason("q", {**flags, ROUND_TRIP: 9}, False, ON[:-1], 1) is None  # not enabled
    assert reject_reason("q", flags, False, ON, 1) is None  # not judged


def test_config_checks():
    from xqg_ray.config.validate import one_generator_problems

    assert one_generator_problems("generators.g", _cfg(enabled=ON, round_trip_top_k=0)) == ["generators.g.filters.round_trip_top_k=0: must be >= 1"]
    assert one_generator_problems("generators.g", _cfg(enabled=ON, round_trip_top_k=3, fill_empty=True)) == []
    assert one_generator_problems("generators.g", _cfg(fill_empty=True)) == [
        "generators.g.filters.fill_empty=true fills slots the round trip left empty: add round_trip to generators.g.filters.enabled or drop fill_empty"]
    # The judge is the run's `encoder` section, which is never a trained encoder (that needs the kept questions first).
    with pytest.raises(Exception, match="the encoder section is the run's base"):
        load_config(str(REPO / "conf" / "smoke.yaml"), [f"generators.t5.filters.enabled={ON}", "encoder.model=trained:t"])


def test_key_holds_the_judge_only_when_it_is_on(tmp_path):
    from types import SimpleNamespace

    from xqg_ray.stages.generate import generator_fingerprint, generator_settings

    def key(*overrides: str) -> str:
        cfg = load_config(str(REPO / "conf" / "smoke.yaml"), list(overrides))
        return generator_fingerprint(SimpleNamespace(cfg=cfg), "t5")

    base = load_config(str(REPO / "conf" / "smoke.yaml"), [])
    # Off: the settings (and so the stored outputs' keys) are those from before the round trip existed.
    assert "round_trip_top_k" not in generator_settings(base.generators["t5"])["filters"]
    assert "fill_empty" not in generator_settings(base.generators["t5"])["filters"]
    assert "draw_ahead" not in generator_settings(base.generators["t5"])["filters"]
    assert key() != key("generators.t5.filters.draw_ahead=1")  # the same seeds, other batches: other float rounding
    assert key() == key("generators.t5.filters.round_trip_top_k=4") == key("encoder.max_passage_length=64")
    on = f"generators.t5.filters.enabled={ON}"
    assert len({key(), key(on), key(on, "generators.t5.filters.round_trip_top_k=4"), key(on, "encoder.max_passage_length=64"),
                key(on, "generators.t5.filters.fill_empty=true")}) == 5


# ---------------------------------------------------------------- one run with Ray

K = 2


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory, ray_local, shared_datasets, tiny_models):
    from xqg_ray.pipeline import run

    out = tmp_path_factory.mktemp("roundtrip") / "run"
    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), [
        f"output_dir={out}", f"benchmark.source={shared_datasets}", "ray.progress=false", "benchmark.max_queries_per_language=6",
        "benchmark.corpus_limit=16", f"generators.t5.filters.enabled={ON}", f"generators.t5.filters.round_trip_top_k={K}",
        "generators.t5.filters.max_attempts=2", "generators.t5.filters.draw_ahead=1", "eval.bootstrap_samples=50", "eval.permutation_samples=50",
        "benchmark.heldout_fraction=0.5"])
    from xqg_ray.config import GeneratorConfig, SystemConfig

    # The held-out human questions too: their round trip is measured in t5's languages, as the reference.
    cfg.generators = {"t5": cfg.generators["t5"], "human": GeneratorConfig(kind="provided", path="benchmark:provided")}
    cfg.systems = [SystemConfig(name="baseline"),
                   SystemConfig(name="xqg-kept", generator="t5", alpha=0.3, aggregation="mean", questions=KEPT),
                   # The kept questions replayed with a round trip that rejects nothing (k = every passage) and one round.
                   SystemConfig(name="xqg-kept-all", generator="t5", alpha=0.3, aggregation="mean", questions=KEPT,
                                round_trip_top_k=16, max_attempts=1),
                   SystemConfig(name="human-mean", generator="human", alpha=0.3, aggregation="mean")]
    return out, cfg, run(cfg)


def test_every_verdict_matches_the_rank_recomputed_from_the_stored_vectors(judged_run):
    from xqg_ray.evaluation.quality import round_trip_ranks
    from xqg_ray.models.factory import make_encoder

    out, cfg, result = judged_run
    gen, emb = current(out, "generated/t5"), current(out, "embeddings")
    enc = make_encoder(cfg.encoder, 1)
    nparts = len(gen["units"])
    judged = kept = rejected = 0
    for u in gen["units"]:
        draws = pq.read_table(out / u["attempts"]["file"]).to_pylist()
        e = pq.read_table(out / next(x for x in emb["units"] if x["partition"] == u["partition"])["file"])
        e = e.filter(pc.equal(e["kind"], PASSAGE))
        ids = e["id"].to_pylist()
        if not ids:  # a partition the corpus left empty (16 passages hashed over 4): nothing drawn there
            assert draws == [] and "drawn_ahead" not in u
            continue
        # draw_ahead 1: each round-0 prompt sampled its round-1 draws too; round 1 read as many as it needed.
        by_round = [sum(d["round"] == r for d in draws) for r in (0, 1)]
        assert u["drawn_ahead"] == {"made": by_round[0], "unused": by_round[0] - by_round[1]}
        pv = np.asarray(e["vector"].combine_chunks().flatten().to_numpy(), np.float32).reshape(len(ids), -1)
        assert all(i % nparts == u["partition"] for i in ids)
        asked = [d for d in draws if d["reason"] in (None, ROUND_TRIP, "duplicate")]
        qv = enc.encode([d["text"] for d in asked], "query")
        rows = [ids.index(d["id"]) for d in asked]
        ranks = round_trip_ranks(qv, rows, pv, "ip", passage_ids=ids)
        # The judge encoded the passages in its own batches: a score within float rounding of the own
        # passage's may order either way, so each verdict is checked against the rank band it allows.
        scores = qv @ pv.T
        own = scores[np.arange(len(rows)), rows][:, None]
        eps = 1e-5
        best = 1 + (scores > own + eps).sum(axis=1)
        worst = (scores > own - eps).sum(axis=1)  # the own passage counted: the rank if every near tie went against it
        assert np.all(best <= ranks) and np.all(ranks <= worst)
        # The rank is stored with the draw (what a looser threshold is replayed from); a draw a cheaper reason rejected has none.
        assert all(b <= d["round_trip"] <= w for d, b, w in zip(asked, best.tolist(), worst.tolist()))
        assert all(d["round_trip"] is None for d in draws if d not in asked)
        for d, b, w in zip(asked, best.tolist(), worst.tolist()):
            if d["reason"] == ROUND_TRIP:
                assert w > K, d
                rejected += 1
            elif d["kept"]:
                assert b <= K, d
                kept += 1
        judged += len(asked)
    counts = gen["filter"]["rejected"]["by_reason"]
    # Random models: both verdicts happen, and the manifest counts the same rejections.
    assert kept > 0 and rejected > 0 and counts[ROUND_TRIP] == rejected
    assert gen["filter"]["kept"] == kept
    assert result["indexes"]["xqg-kept"]["questions"] == KEPT
    assert result["indexes"]["xqg-kept-all"]["questions"] == "kept@k16@r1"


def test_the_run_encodes_each_passage_once_the_judges_vectors_are_its_embeddings(judged_run):
    """The judge's E(p) of each partition is committed with its generate unit and the embeddings take them:
    every passage row of the run comes from the judge, the same bits (no passage encoded twice)."""
    import json

    from xqg_ray.arrow_utils import arrow_to_vectors

    out, _, _ = judged_run
    gen, emb = current(out, "generated/t5"), current(out, "embeddings")
    seeds = {u["partition"]: u["passage_vectors"] for u in gen["units"] if u.get("passage_vectors")}
    assert sorted(seeds) == sorted(u["partition"] for u in emb["units"] if u["rows"])  # every partition with passages
    for u in emb["units"]:
        if u["partition"] not in seeds:
            continue
        rec = json.loads((out / u["commit"]).read_text())
        e = pq.read_table(out / u["file"])
        e = e.filter(pc.equal(e["kind"], PASSAGE))
        s = pq.read_table(out / seeds[u["partition"]]["file"])
        assert rec["passages_from_judge"] == e.num_rows == s.num_rows > 0
        assert e["id"].to_pylist() == s["id"].to_pylist()
        assert arrow_to_vectors(e["vector"]).tobytes() == arrow_to_vectors(s["vector"]).tobytes()


def test_a_replayed_selection_is_encoded_from_the_stored_draws(judged_run):
    """xqg-kept-all (k 16 of 16 passages, one round): each passage's first-round draws that only the round trip
    (or nothing) rejected, from the same generation; its own embedding rows beside the generator's kept ones."""
    out, _, result = judged_run
    gen, emb = current(out, "generated/t5"), current(out, "embeddings")
    want: Dict[int, int] = {}
    for u in gen["units"]:
        for d in pq.read_table(out / u["attempts"]["file"]).to_pylist():
            want[d["id"]] = want.get(d["id"], 0) + (d["round"] == 0 and d["reason"] in (None, ROUND_TRIP))
    got: Dict[str, Dict[int, int]] = {}
    for u in emb["units"]:
        e = pq.read_table(out / u["file"], columns=["kind", "id", "count"]).to_pylist()
        for r in e:
            got.setdefault(r["kind"], {})[r["id"]] = r["count"]
    assert got["gen:t5@kept@k16@r1"] == want
    assert got["gen:t5@kept@k16@r1"] != got["gen:t5@kept"]  # the k 2 round trip rejected some first draws
    assert result["systems"]["xqg-kept-all"] != result["systems"]["xqg-kept"]
    # The run's round-trip measure of the kept questions: every sampled one within k.
    rt = result["question_quality"]["t5"][KEPT]["overall"]["round_trip"]
    assert rt["n"] > 0 and rt["hits@5"] == rt["n"] and rt["median_rank"] <= K


def test_the_human_questions_round_trip_is_measured_in_the_generators_languages(judged_run):
    from xqg_ray.evaluation.quality import round_trip_ranks, round_trip_summary
    from xqg_ray.evaluation.question_quality import SAMPLE_PER_LANGUAGE, sample_provided
    from xqg_ray.models.factory import make_encoder

    out, cfg, result = judged_run
    human, emb = current(out, "generated/human"), current(out, "embeddings")
    # Every partition is read (this corpus holds fewer than the sample's 200 per language).
    tables = [pq.read_table(out / u["file"], columns=["id", "queries"]) for u in human["units"]]
    rows = sample_provided(tables, "human", cfg.eval.seed, cfg.generators["t5"].languages)
    langs = sorted({q["lang"] for t in tables for qs in t["queries"].to_pylist() for q in qs})
    assert set(langs) > {"de", "zh"} and sorted({r["lang"] for r in rows}) == ["de", "zh"] and len(rows) < 2 * SAMPLE_PER_LANGUAGE
    vecs = make_encoder(cfg.encoder, 1).encode([r["text"] for r in rows], "query")  # one batch, as the task encodes them
    nparts = len(emb["units"])
    ranks = [0] * len(rows)
    for u in emb["units"]:
        e = pq.read_table(out / u["file"])
        e = e.filter(pc.equal(e["kind"], PASSAGE))
        ids = e["id"].to_pylist()
        idx = [i for i, r in enumerate(rows) if r["id"] % nparts == u["partition"]]
        if not ids:
            assert idx == []
            continue
        pv = np.asarray(e["vector"].combine_chunks().flatten().to_numpy(), np.float32).reshape(len(ids), -1)
        got = round_trip_ranks(vecs[idx], [ids.index(rows[i]["id"]) for i in idx], pv, "ip", passage_ids=ids)
        for i, k in zip(idx, got.tolist()):
            ranks[i] = k
    q = result["question_quality"]["human"]
    assert q["unfiltered"]["overall"]["round_trip"] == round_trip_summary(ranks)
    for lang in ("de", "zh"):
        assert q["unfiltered"]["by_language"][lang]["round_trip"] == round_trip_summary([k for r, k in zip(rows, ranks) if r["lang"] == lang])
    others = {lang: g["round_trip"] for lang, g in q["unfiltered"]["by_language"].items() if lang not in ("de", "zh")}
    assert others and all(rt == round_trip_summary([]) for rt in others.values())  # not sampled: n 0, no rate
    assert q["round_trip_sample"]["partitions_read"] == nparts
