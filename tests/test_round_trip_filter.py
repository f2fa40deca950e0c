"""The round-trip filter: a question is kept only if its own passage ranks within ``round_trip_top_k`` of its
partition's passages under the run's encoder (Promptagator's consistency filter), resampled like any rejection.

Without Ray: a scripted generator and a scripted judge (exact rejections, seeds of the redraws, which draws
are judged, counts by reason), the judge over a tiny encoder against the ranks computed by hand, the config
checks and the generator's key.  With Ray: one smoke run with the filter on, every judged draw's rank
recomputed from the stored passage vectors and a fresh encoding of the draw, and the held-out human
questions' round trip (the reference in the report) recomputed from their files the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from corpus_versions import current
from test_question_filter import GOOD_DE, LUTHER, OTHER, OTHER_DE, OTHER_ES, Scripted, _cfg, _summary
from xqg_ray.config import load_config
from xqg_ray.config.schema import ROUND_TRIP
from xqg_ray.evaluation.question_filter import reject_reason, replay, selection
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
    assert key() == key("generators.t5.filters.round_trip_top_k=4") == key("encoder.max_passage_length=64")
    on = f"generators.t5.filters.enabled={ON}"
    assert len({key(), key(on), key(on, "generators.t5.filters.round_trip_top_k=4"), key(on, "encoder.max_passage_length=64"),
                key(on, "generators.t5.filters.fill_empty=true")}) == 5


def test_judge_ranks_are_the_exhaustive_ranks_under_the_encoder(tiny_models):
    from xqg_ray.evaluation.quality import round_trip_ranks
    from xqg_ray.models.encoder import format_passage
    from xqg_ray.models.factory import make_encoder
    from xqg_ray.models.judge import RoundTripJudge

    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), []).encoder
    ids = [40, 7, 23, 91]
    titles = ["Luther", "Coffee", "Rome", ""]
    texts = ["Martin Luther wrote theses.", "Coffee is brewed.", "Rome has the Colosseum.", "Bees make honey."]
    judge = RoundTripJudge(cfg, "ip", 1)
    judge.use(ids, titles, texts)
    qs, own = ["Who wrote theses?", "What is brewed?", "Where is the Colosseum?", "What do bees make?", "Honey?"], [40, 7, 23, 91, 91]
    enc = make_encoder(cfg, 1)
    p = enc.encode([format_passage(cfg.passage_template, a, b) for a, b in zip(titles, texts)], "passage")
    want = round_trip_ranks(enc.encode(qs, "query"), [ids.index(i) for i in own], p, "ip", passage_ids=ids)
    got = judge.ranks(own, qs)
    assert got == want.tolist() and all(1 <= r <= 4 for r in got) and judge.ranks([], []) == []


# ---------------------------------------------------------------- one run with Ray

K = 2


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory, ray_local, shared_datasets, tiny_models):
    from xqg_ray.pipeline import run

    out = tmp_path_factory.mktemp("roundtrip") / "run"
    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), [
        f"output_dir={out}", f"benchmark.source={shared_datasets}", "ray.progress=false", "benchmark.max_queries_per_language=6",
        "benchmark.corpus_limit=16", f"generators.t5.filters.enabled={ON}", f"generators.t5.filters.round_trip_top_k={K}",
        "generators.t5.filters.max_attempts=2", "eval.bootstrap_samples=50", "eval.permutation_samples=50",
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
            assert draws == []
            continue
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


# ---------------------------------------------------------------- updates (the generate actor without Ray)

class PartitionSizeJudge:
    """Ranks every question at the size of the reference set it was given: with k = 20 a partition of 20
    passages keeps everything, one of 21 nothing.  Records each reference set and each question asked."""

    device = "cpu"

    def __init__(self):
        self.used, self.asked, self.size = [], [], 0

    def use(self, ids, titles, texts):  # noqa: ANN001
        self.used.append(list(ids))
        self.size = len(ids)
        self.vecs = np.arange(2 * len(ids), dtype=np.float32).reshape(len(ids), 2)  # committed with the unit

    def ranks(self, passage_ids, questions):  # noqa: ANN001
        self.asked += list(passage_ids)
        return [self.size] * len(questions)


class Numbered(Scripted):
    """One question per passage and draw seed, no model."""

    def _run(self, prompts):  # noqa: ANN001
        return [[f"Frage {self.rows[p.row][0]} {s % 997}?" for s in p.seeds] for p in prompts]


def test_an_update_judges_new_passages_against_the_whole_new_partition_and_keeps_the_old_verdicts(tmp_path):
    """The documented semantics (docs/configuration.md): the verdict is made when a passage's questions are drawn."""
    from test_delta_generated import gen_actor, gen_unit

    from xqg_ray.config import GeneratorConfig
    from xqg_ray.config.schema import FilterConfig
    from xqg_ray.store.segments import live_table
    from xqg_ray.store.storage import Storage

    root = str(tmp_path)
    cfg = GeneratorConfig(kind="seq2seq", languages=["de"], n_per_language=1, seed=3,
                          filters=FilterConfig(enabled=[ROUND_TRIP], round_trip_top_k=20, max_attempts=1))
    actor = gen_actor(root, "seq2seq")
    actor.cfg, actor.gen, actor.judge = cfg, Numbered(cfg), PartitionSizeJudge()
    base = list(range(10, 210, 10))  # 20 passages
    v1 = actor.run_unit(gen_unit(root, base, {}, "v1"))
    assert actor.judge.used == [base] and sorted(actor.judge.asked) == base
    assert v1["filter"]["kept"] == 20 and v1["filter"]["rejected"]["by_reason"][ROUND_TRIP] == 0
    # One passage added: the reference set is the whole live partition (21), only the new passage is drawn and
    # judged (rank 21 > 20: rejected), and the 20 reused passages keep their draws and verdicts.
    actor.judge.asked = []
    v2 = actor.run_unit(gen_unit(root, base + [210], {}, "v2", v1))
    assert actor.judge.used[-1] == base + [210] and actor.judge.asked == [210]
    storage = Storage()
    d1, d2 = live_table(storage, root, v1["attempts"]), live_table(storage, root, v2["attempts"])
    assert d2.filter(pc.less(d2["id"], 210)).equals(d1)
    assert d2.filter(pc.equal(d2["id"], 210))["reason"].to_pylist() == [ROUND_TRIP]
    assert (v2["computed"], v2["reused"], v2["filter"]["kept"]) == (1, 20, 20)
    # Each unit commits its reference set's vectors: the whole partition as the judge held it.
    pv = pq.read_table(tmp_path / v2["passage_vectors"]["file"])
    assert pv["id"].to_pylist() == base + [210] and pv["vector"].to_pylist()[-1] == [40.0, 41.0]
    assert v1["passage_vectors"]["file"] != v2["passage_vectors"]["file"] and v2["passage_vectors"]["device"] == "cpu"
    # A rebuild of the same 21 passages judges all of them against 21: the one result an update does not reproduce.
    fresh = actor.run_unit(gen_unit(root, base + [210], {}, "fresh"))
    assert fresh["filter"]["kept"] == 0 and fresh["filter"]["rejected"]["by_reason"][ROUND_TRIP] == 21
    draws = pq.read_table(tmp_path / fresh["attempts"]["file"])
    assert draws["text"].to_pylist() == d2["text"].to_pylist()  # the same draws: only the verdicts differ


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


def test_the_encode_stage_takes_the_judges_passage_vectors_bit_for_bit(tmp_path, tiny_models):
    """The judge's E(p) of a partition, committed as the generate actor commits them, stand in for the encode
    unit's own: the encoder is not called for those passages and the rows are the same bits as without them;
    a passage the judge lacks is encoded; another device's vectors are not taken."""
    from xqg_ray.arrow_utils import vectors_to_arrow
    from xqg_ray.config import EncoderConfig, StorageConfig
    from xqg_ray.models.judge import RoundTripJudge
    from xqg_ray.schemas import passage_vectors_schema
    from xqg_ray.stages.encode_actor import EncodePartition
    from xqg_ray.stages.records import EncodePartitionUnit
    from xqg_ray.store.integrity import write_table_committed
    from xqg_ray.store.storage import Storage

    storage, root = Storage(), str(tmp_path)
    cfg = EncoderConfig(model=tiny_models["tiny-bert"], max_passage_length=24, dtype="float32")
    ids, titles = [3, 7, 11, 15, 19], ["Luther", "Coffee", "Rome", "", "Bees"]
    texts = ["Martin Luther wrote the ninety-five theses in 1517.", "Coffee is brewed.", "Rome has the Colosseum, built by Vespasian.",
             "Bees make honey.", "A hive holds one queen and many workers."]
    corpus = pa.table({"id": pa.array(ids, pa.int64()), "title": titles, "text": texts, "content_hash": [f"h{i}" for i in ids]})
    judge = RoundTripJudge(cfg, "ip", 1)
    judge.use(ids, titles, texts)
    seed = pa.table({"id": corpus["id"], "content_hash": corpus["content_hash"], "vector": vectors_to_arrow(judge.vecs)},
                    schema=passage_vectors_schema(judge.vecs.shape[1]))
    actor = EncodePartition(root, StorageConfig(), cfg, 1)
    passages: List[List[str]] = []
    encode = actor.encoder.encode
    actor.encoder.encode = lambda xs, kind: (passages.append(list(xs)) if kind == "passage" else None, encode(xs, kind))[1]
    crec = write_table_committed(storage, root, "in/corpus.parquet", corpus)

    def unit(tag: str, seed_table=None, device: str = "cpu") -> tuple:
        pv = None if seed_table is None else {**write_table_committed(storage, root, f"in/seed-{tag}.parquet", seed_table), "encoder": "E",
                                              "threads": 1, "device": device}
        passages.clear()
        rec = actor.run_unit(EncodePartitionUnit(stage="embeddings", partition=0, unit="p-00000", key=tag, gens={}, prior=None,
                                                 out=f"embeddings/data/{tag}.parquet", corpus=crec, passage_vectors=pv).to_json())
        t = pq.read_table(tmp_path / rec["file"])
        return np.stack(t["vector"].to_numpy(zero_copy_only=False)), list(passages), rec.get("passages_from_judge")

    own, calls, taken = unit("own")
    assert len(calls) == 1 and len(calls[0]) == 5 and taken is None
    got, calls, taken = unit("judged", seed)
    assert calls == [] and taken == 5 and got.tobytes() == own.tobytes()  # the same bits
    part, calls, taken = unit("part", seed.slice(0, 3))
    assert [len(c) for c in calls] == [2] and taken == 3 and np.array_equal(part[:3], own[:3])
    np.testing.assert_allclose(part[3:], own[3:], rtol=0, atol=1e-6)
    _, calls, taken = unit("gpu", seed, device="cuda")
    assert len(calls) == 1 and taken is None


def test_the_encode_stage_takes_judged_passages_only_for_its_encoder_and_threads():
    from xqg_ray.stages.encode import judged_passages

    def gen(*units):
        return {"units": [{"partition": p, **({"passage_vectors": pv} if pv else {})} for p, pv in units]}

    a = {"file": "a", "encoder": "E", "threads": 1}
    gens = {"b": gen((0, {**a, "file": "b0"}), (1, None), (2, {**a, "threads": 2})), "a": gen((0, a), (1, {**a, "encoder": "F"}), (2, None))}
    assert judged_passages(gens, "E", 1) == {0: a}
    assert judged_passages(gens, "E", 2) == {2: {**a, "threads": 2}}
    assert judged_passages({}, "E", 1) == {}
