"""Systems of a generator's kept (filtered) questions next to its unfiltered ones, from one generation.

Without Ray: the kept questions streamed from a hand-made attempts file, the sources the encode stage
plans, the config checks and the report's system definitions.  With Ray (tiny random models, whose
questions the filters mostly reject): one run with the unfiltered system only, then the same output
directory with a kept system added (no second generation; the unfiltered outputs unchanged; the kept
vectors equal (1 - alpha) E(p) + alpha * sum E(q) over the kept questions encoded by hand), a rerun
that reuses everything, and a kept `sum` system refused before indexing when counts are unequal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from corpus_versions import current
from xqg_ray.config import ConfigError, GeneratorConfig, RunConfig, SystemConfig, load_config
from xqg_ray.config.validate import problems
from xqg_ray.config.choices import ROUND_TRIP
from xqg_ray.config.schema import FilterConfig
from xqg_ray.schemas import ATTEMPTS_SCHEMA, KEPT, PASSED, UNFILTERED
from xqg_ray.stages.generate import queries_table
from xqg_ray.stages.sources import query_sources, selected_queries
from xqg_ray.store.integrity import VerifiedParquet, write_table_committed
from xqg_ray.store.ledger import fingerprint
from xqg_ray.store.storage import Storage

REPO = Path(__file__).resolve().parents[1]
LANGS = ["de", "es"]


def _draw(pid: int, lang: str, rnd: int, draw: int, text: str, kept: bool, unfiltered: bool) -> dict:
    return {"id": pid, "content_hash": f"h{pid}", "lang": lang, "round": rnd, "draw": draw, "text": text, "empty": False,
            "wrong_language": False, "exemplar": None, "degenerate": False, "duplicate": False,
            "reason": None if kept else "wrong_language", "kept": kept, "unfiltered": unfiltered}


# Three passages, 2 questions per language: 7 keeps all four first draws, 8 gets one redraw kept
# and one slot left empty, 9 keeps nothing in es.
DRAWS = pa.Table.from_pylist([
    _draw(7, "de", 0, 0, "d7a", True, True), _draw(7, "de", 0, 1, "d7b", True, True),
    _draw(7, "es", 0, 0, "e7a", True, True), _draw(7, "es", 0, 1, "e7b", True, True),
    _draw(8, "de", 0, 0, "d8a", False, True), _draw(8, "de", 0, 1, "d8b", True, True), _draw(8, "de", 1, 0, "d8c", True, False),
    _draw(8, "es", 0, 0, "e8a", False, True), _draw(8, "es", 0, 1, "e8b", True, True), _draw(8, "es", 1, 0, "e8c", False, False),
    _draw(9, "de", 0, 0, "d9a", True, True), _draw(9, "de", 0, 1, "d9b", True, True),
    _draw(9, "es", 0, 0, "e9a", False, True), _draw(9, "es", 0, 1, "e9b", False, True),
], schema=ATTEMPTS_SCHEMA)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 100])
def test_kept_questions_stream_a_passage_at_a_time_whatever_the_batch(tmp_path, rows):
    storage = Storage()
    rec = write_table_committed(storage, str(tmp_path), "attempts/p-00000.parquet", DRAWS)
    f = VerifiedParquet(storage, str(tmp_path), rec)
    for which in (KEPT, UNFILTERED):
        parts = list(selected_queries(f, {"generator": "g", "questions": which, "languages": LANGS, "n": 2}, rows))
        assert all(p.num_rows for p in parts)
        assert pa.concat_tables(parts).equals(queries_table(DRAWS, LANGS, 2, which))
    kept = pa.concat_tables(list(selected_queries(f, {"generator": "g", "questions": KEPT, "languages": LANGS, "n": 2}, rows)))
    assert kept["id"].to_pylist() == [7, 8, 9] and kept["failed"].to_pylist() == [0, 1, 2]
    assert [[q["text"] for q in qs] for qs in kept["queries"].to_pylist()] == [
        ["d7a", "d7b", "e7a", "e7b"], ["d8b", "d8c", "e8b"], ["d9a", "d9b"]]


@pytest.mark.parametrize("rows", [1, 100])
def test_passed_questions_are_the_kept_ones_without_the_fill(tmp_path, rows):
    """filters.fill_empty keeps a slot's best round-trip reject (kept, its reason left as round_trip): the
    passed selection leaves it out, and the slot empty."""
    def filled(pid, lang, draw, text, reason, kept):
        return {**_draw(pid, lang, 0, draw, text, kept, True), "reason": reason}

    draws = pa.Table.from_pylist([
        filled(5, "de", 0, "d5a", None, True), filled(5, "de", 1, "d5b", ROUND_TRIP, True),
        filled(5, "es", 0, "e5a", ROUND_TRIP, True), filled(5, "es", 1, "e5b", ROUND_TRIP, False),
        filled(6, "de", 0, "d6a", "degenerate", False), filled(6, "de", 1, "d6b", None, True),
        filled(6, "es", 0, "e6a", None, True), filled(6, "es", 1, "e6b", None, True),
    ], schema=ATTEMPTS_SCHEMA)
    storage = Storage()
    f = VerifiedParquet(storage, str(tmp_path), write_table_committed(storage, str(tmp_path), "attempts/p-00000.parquet", draws))

    def select(which):
        t = pa.concat_tables(list(selected_queries(f, {"generator": "g", "questions": which, "languages": LANGS, "n": 2}, rows)))
        return [[q["text"] for q in qs] for qs in t["queries"].to_pylist()], t["failed"].to_pylist()

    assert select(PASSED) == ([["d5a"], ["d6b", "e6a", "e6b"]], [3, 1])
    assert select(KEPT) == ([["d5a", "d5b", "e5a"], ["d6b", "e6a", "e6b"]], [1, 1])
    assert select(UNFILTERED) == ([["d5a", "d5b", "e5a", "e5b"], ["d6a", "d6b", "e6a", "e6b"]], [0, 0])


def test_kept_rows_are_reused_per_passage_like_any_generator(tmp_path, tiny_models):
    """An encode unit of a kept source, then the next version of its partition (passage 8 changed):
    only the changed passage's kept questions are encoded again, and the rows equal a fresh unit's."""
    from xqg_ray.config import EncoderConfig, StorageConfig
    from xqg_ray.stages.encode_actor import EncodePartition
    from xqg_ray.stages.records import EncodePartitionUnit

    storage, root = Storage(), str(tmp_path)
    actor = EncodePartition(root, StorageConfig(), EncoderConfig(model=tiny_models["tiny-bert"], max_passage_length=24, dtype="float32"), 1)
    select = {"generator": "g", "questions": KEPT, "languages": LANGS, "n": 2}
    changed = DRAWS.filter(pc.equal(DRAWS["id"], 8)).to_pylist()
    v2 = pa.Table.from_pylist([r for r in DRAWS.to_pylist() if r["id"] == 7]
                              + [{**r, "content_hash": "h8-2", "text": r["text"] + "!", "kept": True} for r in changed]
                              + [r for r in DRAWS.to_pylist() if r["id"] == 9], schema=ATTEMPTS_SCHEMA)

    def unit(tag: str, draws: pa.Table, prior=None) -> dict:
        corpus = pa.table({"id": pa.array([7, 8, 9], pa.int64()), "title": ["t"] * 3, "text": [f"passage {i} {tag[:2]}" if i == 8 else f"passage {i}" for i in (7, 8, 9)],
                           "content_hash": sorted(set(draws["content_hash"].to_pylist()), key=lambda h: h[1])})
        gens = {"g@kept": {"src": "S", "key": tag, "select": select, **write_table_committed(storage, root, f"in/attempts-{tag}.parquet", draws)}}
        return actor.run_unit(EncodePartitionUnit(stage="embeddings", partition=0, unit="p-00000", key=tag, gens=gens, prior=prior, out=f"embeddings/data/{tag}.parquet",
                                                  corpus=write_table_committed(storage, root, f"in/corpus-{tag}.parquet", corpus)).to_json())

    first = unit("v1", DRAWS)
    rows = pq.read_table(tmp_path / first["file"])
    assert rows["kind"].to_pylist() == ["gen:g@kept"] * 3 + ["passage"] * 3 and rows["count"].to_pylist()[:3] == [4, 3, 2]
    assert first["counts"] == {"g@kept": {"min": 2, "max": 4, "zero": 0, "passages": 3}}
    update = unit("v2", v2, prior={k: first[k] for k in ("file", "sha256", "bytes", "rows")})
    assert update["computed_by_kind"] == {"passage": 1, "gen:g@kept": 1} and update["reused_by_kind"] == {"passage": 2, "gen:g@kept": 2}
    fresh = unit("v2-fresh", v2)
    a, b = pq.read_table(tmp_path / update["file"]), pq.read_table(tmp_path / fresh["file"])
    assert a["count"].to_pylist() == b["count"].to_pylist() == [4, 6, 2, 1, 1, 1]
    np.testing.assert_allclose(np.stack(a["vector"].to_numpy(zero_copy_only=False)), np.stack(b["vector"].to_numpy(zero_copy_only=False)), rtol=0, atol=1e-6)


def _manifest(name: str) -> dict:
    units = [{"partition": p, "key": f"k{p}", "file": f"generated/{name}/data/p-{p}.parquet", "sha256": "d", "bytes": 1, "rows": 3,
              "attempts": {"file": f"generated/{name}/attempts/p-{p}.parquet", "sha256": "a", "bytes": 2, "rows": 14}} for p in (0, 1)]
    return {"fingerprint": "F", "gen_fp": "G", "generator": {"languages": LANGS, "n_per_language": 2}, "units": units}


def test_sources_add_a_kept_selection_only_where_a_system_reads_it():
    gens = {"g": _manifest("g"), "h": _manifest("h")}
    cfg = RunConfig(output_dir="x", systems=[SystemConfig(name="baseline"), SystemConfig(name="a", generator="g"),
                                             SystemConfig(name="b", generator="h", questions=UNFILTERED)])
    assert query_sources(cfg, gens) == gens  # no kept system: the generators' manifests as they are
    cfg.systems += [SystemConfig(name="c", generator="g", questions=KEPT), SystemConfig(name="d", generator="g", questions=KEPT, alpha=0.3)]
    got = query_sources(cfg, gens)
    assert list(got) == ["g", "h", "g@kept"] and got["g"] is gens["g"] and got["h"] is gens["h"]
    kept = got["g@kept"]
    assert kept["fingerprint"] == fingerprint({"gen": "F", "questions": KEPT}) and kept["gen_fp"] == fingerprint({"gen": "G", "questions": KEPT})
    assert kept["select"] == {"generator": "g", "questions": KEPT, "languages": LANGS, "n": 2}
    assert kept["units"] == [{"partition": p, "key": f"k{p}", "file": f"generated/g/attempts/p-{p}.parquet", "sha256": "a", "bytes": 2, "rows": 14}
                             for p in (0, 1)]


def test_questions_is_checked():
    cfg = RunConfig(output_dir="x", generators={"g": GeneratorConfig(kind="causal", model="m"), "human": GeneratorConfig(kind="provided", path="p")},
                    systems=[SystemConfig(name="baseline", questions=KEPT), SystemConfig(name="a", generator="g", questions=KEPT),
                             SystemConfig(name="b", generator="human", questions=KEPT), SystemConfig(name="c", generator="g", questions="all"),
                             SystemConfig(name="d", generator="human", questions=UNFILTERED)])
    assert problems(cfg) == [
        "system 'baseline': questions='kept' needs a generator; remove it from the baseline",
        "system 'b': questions='kept' needs a generating generator ('human' is provided: its queries are not filtered)",
        "system 'c': questions='all': use one of kept, passed, unfiltered",
    ]
    # passed = kept without the fill: with fill_empty off they are the same questions, encoded twice for nothing.
    cfg.systems = [SystemConfig(name="baseline"), SystemConfig(name="p", generator="g", questions=PASSED)]
    assert problems(cfg) == ["system 'p': questions='passed' are the kept questions without filters.fill_empty's additions, "
                             "and generators.g.filters.fill_empty is off: set questions: kept"]
    cfg.generators["g"].filters = FilterConfig(enabled=["round_trip"], fill_empty=True)
    assert problems(cfg) == []
    assert SystemConfig(name="x").questions == UNFILTERED


def test_a_systems_own_round_trip_and_rounds_are_checked():
    """Replayed from the stored draws: only looser than the generator's, only of its filtered questions."""
    g = GeneratorConfig(kind="causal", model="m", filters=FilterConfig(enabled=["round_trip"], round_trip_top_k=3, max_attempts=2))
    cfg = RunConfig(output_dir="x", generators={"g": g, "h": GeneratorConfig(kind="causal", model="m")}, systems=[
        SystemConfig(name="baseline"),
        SystemConfig(name="ok", generator="g", questions=KEPT, round_trip_top_k=10, max_attempts=1),
        SystemConfig(name="u", generator="g", round_trip_top_k=10),
        SystemConfig(name="tight", generator="g", questions=PASSED, round_trip_top_k=3),
        SystemConfig(name="more", generator="g", questions=KEPT, max_attempts=2),
        SystemConfig(name="neg", generator="g", questions=KEPT, max_attempts=-1),
        SystemConfig(name="no-rt", generator="h", questions=KEPT, round_trip_top_k=5),
    ])
    cfg.generators["g"].filters.fill_empty = True
    assert problems(cfg) == [
        "system 'u': round_trip_top_k and max_attempts choose among the filtered questions: set questions: kept or passed",
        "system 'tight': round_trip_top_k=3 must be above generators.g.filters.round_trip_top_k (3): "
        "the draws a stricter k would redraw were never made",
        "system 'more': max_attempts=2 must be from 1 to generators.g.filters.max_attempts - 1 (1): the rounds replayed are the ones stored",
        "system 'neg': max_attempts=-1 must be 0 (the generator's) or above",
        "system 'no-rt': round_trip_top_k=5 needs the round trip: generators.h.filters.enabled lacks 'round_trip'",
    ]
    from xqg_ray.config.systems import query_source

    assert [query_source(s) for s in cfg.systems[:4]] == ["", "g@kept@k10@r1", "g", "g@passed@k3"]


def test_definitions_name_the_selection():
    from xqg_ray.report.markdown import render_markdown

    indexes = {
        "baseline": {"generator": None, "aggregation": None, "alpha": 0.0, "query_counts": None},
        "xqg": {"generator": "gemma", "questions": UNFILTERED, "aggregation": "sum", "alpha": 0.01, "encoder_name": "default",
                "query_counts": {"min": 5, "max": 5, "zero": 0, "passages": 9}},
        "xqg-kept": {"generator": "gemma", "questions": KEPT, "aggregation": "sum", "alpha": 0.01, "encoder_name": "default",
                     "query_counts": {"min": 3, "max": 5, "zero": 0, "passages": 9}},
        "human": {"generator": "human", "aggregation": "mean", "alpha": 0.3, "encoder_name": "default",
                  "query_counts": {"min": 0, "max": 2, "zero": 4, "passages": 9}},
    }
    md = render_markdown({"systems": {}, "indexes": indexes}, {}).splitlines()
    assert "| xqg | default | gemma (unfiltered) | sum | 0.01 | all | 5–5 | 0 |" in md
    assert "| xqg-kept | default | gemma (kept) | sum | 0.01 | all | 3–5 | 0 |" in md
    assert "| human | default | human | mean | 0.3 | all | 0–2 | 4 |" in md


# ---------------------------------------------------------------- one run, one generation

ALPHA = 0.3
KEPT_SYSTEM = {"name": "xqg-kept", "generator": "t5", "alpha": ALPHA, "aggregation": "sum", "questions": KEPT, "allow_unequal_counts": True}


def _cfg(out: Path, shared: Path, *systems: dict):
    # One draw per slot (max_attempts 1): the filters reject most of the random model's questions,
    # so kept selections are smaller than the unfiltered ones and their counts unequal.
    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), [
        f"output_dir={out}", f"benchmark.source={shared}", "ray.progress=false", "benchmark.max_queries_per_language=6",
        "benchmark.corpus_limit=16", "generators.t5.filters.max_attempts=1", "eval.bootstrap_samples=50", "eval.permutation_samples=50"])
    cfg.systems = [SystemConfig(name="baseline"), SystemConfig(name="xqg", generator="t5", alpha=0.01, aggregation="sum", allow_unequal_counts=True),
                   *[SystemConfig(**s) for s in systems]]
    return cfg


def _index(out: Path, system: str):
    """(ids, vectors) of a system's shards and the sha256 of each shard file."""
    ids, vecs = [], []
    m = current(out, f"index/{system}")
    for sh in m["shards"]:
        index = faiss.read_index(str(out / sh["file"]))
        ids.append(faiss.vector_to_array(index.id_map).astype(np.int64))
        vecs.append(faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal))
    return np.concatenate(ids), np.concatenate(vecs), [sh["sha256"] for sh in m["shards"]]


def _embedding_rows(out: Path, kind: str) -> pa.Table:
    m = current(out, "embeddings")
    t = pa.concat_tables([pq.read_table(out / u["file"]) for u in m["units"]])
    return t.filter(pc.equal(t["kind"], kind)).sort_by("id")


def _files(out: Path, stage: str) -> Dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / stage).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_local, shared_datasets, tiny_models):
    from xqg_ray.pipeline import run

    out = tmp_path_factory.mktemp("kept") / "run"
    first = run(_cfg(out, shared_datasets))
    before = {"generated": _files(out, "generated/t5"), "xqg": _index(out, "xqg"), "baseline": _index(out, "baseline"),
              "rows": {k: _embedding_rows(out, k) for k in ("passage", "gen:t5")}, "embeddings": current(out, "embeddings")}
    second = run(_cfg(out, shared_datasets, KEPT_SYSTEM))
    third = run(_cfg(out, shared_datasets, KEPT_SYSTEM))
    return out, first, before, second, third


def _kept_questions(out: Path) -> Dict[int, List[str]]:
    draws = pa.concat_tables([pq.read_table(out / u["attempts"]["file"]) for u in current(out, "generated/t5")["units"]])
    got: Dict[int, List[str]] = {}
    for r in draws.to_pylist():
        got.setdefault(r["id"], [])
        if r["kept"]:
            got[r["id"]].append(r["text"])
    return got


def test_one_generation_serves_both_systems(runs):
    out, first, before, second, _ = runs
    assert first["stages"]["generated/t5"]["reused"] is False and second["stages"]["generated/t5"]["reused"] is True
    assert _files(out, "generated/t5") == before["generated"]  # no unit committed again, no file rewritten
    assert len(list((out / "generated/t5/commits").rglob("*.json"))) == 4  # one commit per partition, from the first run
    emb = current(out, "embeddings")
    assert emb["computed_by_kind"] == {"passage": 0, "gen:t5": 0, "gen:t5@kept": 16}
    assert emb["generators"]["t5"] == before["embeddings"]["generators"]["t5"] and set(emb["counts"]) == {"t5", "t5@kept"}
    assert second["indexes"]["xqg-kept"]["questions"] == KEPT and second["indexes"]["xqg"]["questions"] == UNFILTERED
    assert second["indexes"]["baseline"].get("questions") is None and set(second["systems"]) == {"baseline", "xqg", "xqg-kept"}
    assert "| xqg-kept | default | t5 (kept) | sum | 0.3 | all |" in (out / "report.md").read_text()


def test_unfiltered_outputs_keep_todays_keys_and_bytes(runs):
    out, _, before, _, _ = runs
    # The first run's embeddings units are keyed as before filters: the generator's (fingerprint, unit key) only.
    gen = current(out, "generated/t5")
    snap = json.loads((out / current(out, "benchmark")["snapshot_file"]).read_text())
    gkeys = {u["partition"]: u["key"] for u in gen["units"]}
    efp = before["embeddings"]["enc_fp"]
    assert [u["key"] for u in before["embeddings"]["units"]] == [
        fingerprint({"enc": efp, "digest": p["digest"], "gens": {"t5": (gen["gen_fp"], gkeys[p["partition"]])}}) for p in snap["partitions"]]
    assert before["embeddings"]["generators"] == {"t5": gen["gen_fp"]}
    # With the kept system added: the same passage and unfiltered rows, the same index contents.
    for kind, rows in before["rows"].items():
        assert _embedding_rows(out, kind).equals(rows), kind
    for system in ("xqg", "baseline"):
        ids, vecs, shas = _index(out, system)
        assert shas == before[system][2] and np.array_equal(ids, before[system][0]) and np.array_equal(vecs, before[system][1])


def test_kept_vectors_are_the_formula_over_the_kept_questions(runs):
    from xqg_ray.models.encoder import format_passage
    from xqg_ray.models.factory import make_encoder

    out, _, _, second, _ = runs
    cfg = _cfg(out, Path("."), KEPT_SYSTEM)
    snap = json.loads((out / current(out, "benchmark")["snapshot_file"]).read_text())
    corpus = pa.concat_tables([pq.read_table(out / p["file"]) for p in snap["partitions"]]).sort_by("id")
    kept = _kept_questions(out)
    counts = np.array([len(kept[i]) for i in corpus["id"].to_pylist()])
    assert counts.max() > counts.min() and 0 < counts.sum() < 16 * 4  # the filters left some slots empty
    enc = make_encoder(cfg.encoder, 1)
    ep = enc.encode([format_passage(cfg.encoder.passage_template, a, b) for a, b in zip(corpus["title"].to_pylist(), corpus["text"].to_pylist())], "passage")
    want = []
    for i, pid in enumerate(corpus["id"].to_pylist()):
        qs = enc.encode(kept[pid], "query").astype(np.float64).sum(axis=0) if kept[pid] else np.zeros(ep.shape[1])
        want.append((1 - ALPHA) * ep[i].astype(np.float64) + ALPHA * qs)
    ids, vecs, _ = _index(out, "xqg-kept")
    order = np.argsort(ids)
    assert ids[order].tolist() == corpus["id"].to_pylist()
    np.testing.assert_allclose(vecs[order], np.array(want), rtol=0, atol=1e-5)
    c = second["indexes"]["xqg-kept"]["query_counts"]
    assert c == {"min": int(counts.min()), "max": int(counts.max()), "zero": int((counts == 0).sum()), "passages": 16}


def test_rerun_reuses_both(runs):
    _, _, _, second, third = runs
    assert [k for k in ("benchmark", "generated/t5", "embeddings", "queries", "index", "search") if not third["stages"][k]["reused"]] == []
    assert third["indexes"] == second["indexes"] and third["systems"] == second["systems"]


def test_kept_sum_with_unequal_counts_is_refused_before_indexing(runs, tmp_path, shared_datasets):
    from xqg_ray.pipeline import run

    out = runs[0]
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    counts = np.array([len(v) for v in _kept_questions(work).values()])
    strict = {**KEPT_SYSTEM, "name": "kept-strict", "allow_unequal_counts": False}
    msg = (f"system 'kept-strict': aggregation=sum with unequal query counts per passage (min {counts.min()}, max {counts.max()}, "
           f"{(counts == 0).sum()} passages with none). The sum then weights passages by how many queries they got; use "
           f"aggregation=mean, or set allow_unequal_counts=true to accept it.")
    with pytest.raises(ConfigError) as err:
        run(_cfg(work, shared_datasets, KEPT_SYSTEM, strict))
    assert str(err.value) == msg and "\n" not in msg
    assert not (work / "index" / "kept-strict").exists()


def test_a_question_two_selections_share_is_encoded_once_per_unit(tmp_path, tiny_models):
    """One unit with the unfiltered (12) and the kept (9) selections of DRAWS, 8 questions in both: the encoder
    sees each of the 13 once (21 before), and the rows equal those of a unit per selection."""
    from xqg_ray.config import EncoderConfig, StorageConfig
    from xqg_ray.stages.encode_actor import EncodePartition, QueryMemo
    from xqg_ray.stages.records import EncodePartitionUnit

    storage, root = Storage(), str(tmp_path)
    actor = EncodePartition(root, StorageConfig(), EncoderConfig(model=tiny_models["tiny-bert"], max_passage_length=24, dtype="float32"), 1)
    seen: List[str] = []
    encode = actor.encoder.encode
    actor.encoder.encode = lambda texts, kind: (seen.extend(texts) if kind == "query" else None, encode(texts, kind))[1]
    attempts = write_table_committed(storage, root, "in/attempts.parquet", DRAWS)
    corpus = write_table_committed(storage, root, "in/corpus.parquet", pa.table(
        {"id": pa.array([7, 8, 9], pa.int64()), "title": ["t"] * 3, "text": ["passage 7", "passage 8", "passage 9"], "content_hash": ["h7", "h8", "h9"]}))

    def unit(tag: str, *which: str) -> pa.Table:
        gens = {f"g@{w}": {"src": w, "key": tag, "select": {"generator": "g", "questions": w, "languages": LANGS, "n": 2}, **attempts} for w in which}
        rec = actor.run_unit(EncodePartitionUnit(stage="embeddings", partition=0, unit="p-00000", key=tag, gens=gens, prior=None,
                                                 out=f"embeddings/data/{tag}.parquet", corpus=corpus).to_json())
        return pq.read_table(tmp_path / rec["file"])

    both = unit("both", UNFILTERED, KEPT)
    kept_texts = {d["text"] for d in DRAWS.to_pylist() if d["kept"]}
    first_texts = {d["text"] for d in DRAWS.to_pylist() if d["unfiltered"]}
    assert sorted(seen) == sorted(kept_texts | first_texts) and len(seen) == 13 and len(kept_texts & first_texts) == 8
    alone = pa.concat_tables([unit("k", KEPT).filter(pc.equal(pc.field("kind"), "gen:g@kept")), unit("u", UNFILTERED)])
    for kind in ("gen:g@kept", "gen:g@unfiltered", "passage"):
        a, b = (t.filter(pc.equal(t["kind"], kind)) for t in (both, alone))
        assert a["count"].to_pylist() == b["count"].to_pylist() and a.num_rows == 3
        np.testing.assert_allclose(np.stack(a["vector"].to_numpy(zero_copy_only=False)), np.stack(b["vector"].to_numpy(zero_copy_only=False)), rtol=0, atol=1e-6)
    # The memo itself: order kept, one call for the distinct texts it lacks, the oldest evicted past its capacity.
    calls: List[List[str]] = []
    memo = QueryMemo(3)

    def fake(todo: List[str]) -> np.ndarray:
        calls.append(list(todo))
        return np.array([[float(ord(t[0])), float(len(t))] for t in todo], np.float32)

    assert memo.encode(["ab", "c", "ab"], fake, 2).tolist() == [[97, 2], [99, 1], [97, 2]]
    assert memo.encode(["c", "dd", "e"], fake, 2).tolist() == [[99, 1], [100, 2], [101, 1]]
    assert memo.encode(["ab", "e"], fake, 2).tolist() == [[97, 2], [101, 1]]
    assert calls == [["ab", "c"], ["dd", "e"], ["ab"]] and list(memo.vecs) == ["dd", "e", "ab"]
    assert memo.encode([], fake, 2).shape == (0, 2) and len(calls) == 3
