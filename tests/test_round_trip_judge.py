"""The round-trip judge itself: its ranks, its reference set when a partition is updated, and its passage
vectors, which the encode stage takes for its own (``stages.encode_actor.JudgedPassages``).

Without Ray: a judge over a tiny encoder against ranks computed by hand; the generate actor with a
judge that records its reference sets; an encode actor given a judge's committed vectors (the same
bits as its own encoding) and the planner that chooses them.  The Ray run's check that every passage
row is the judge's is in ``test_round_trip_filter``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from test_question_filter import Scripted
from xqg_ray.config import load_config
from xqg_ray.config.schema import ROUND_TRIP

REPO = Path(__file__).resolve().parents[1]


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
