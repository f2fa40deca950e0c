"""Delta segments of generated queries and draws: an update writes only its new and changed passages' rows.

The generate stage's actor runs in this process (no Ray) with a fake generator
whose draws depend on the passage alone, and with a provided-query table; each
chain of updates is compared with a from-scratch run on the final corpus.
Embedding segments and the whole-job chain are in tests/test_delta_segments.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xqg_ray.config import StorageConfig
from xqg_ray.ids import content_hash
from xqg_ray.schemas import GENERATED_SCHEMA
from xqg_ray.store.integrity import write_table_committed
from xqg_ray.store.segments import live_table, segment_source
from xqg_ray.store.storage import Storage


class FakeGenerator:
    """Draws that depend on a passage alone: 1 + (id // 10) % 2 rounds per language, the last one kept."""

    computed_in = {"dtype": "scripted", "device": "cpu"}  # no model: what a unit's commit record says

    def generate_attempts(self, passages, judge=None):
        out = []
        for pid, _title, text in passages:
            rounds = 1 + (pid // 10) % 2
            out.append([{"lang": lang, "round": r, "draw": 0, "text": f"{text} ? {lang}{r}", "empty": False, "wrong_language": r < rounds - 1,
                         "exemplar": None, "degenerate": False, "duplicate": False, "reason": "wrong_language" if r < rounds - 1 else None,
                         "kept": r == rounds - 1, "unfiltered": r == 0} for lang in ("de", "zh") for r in range(rounds)])
        return out


def gen_actor(root: str, kind: str, slices: Optional[Dict[str, Any]] = None):
    from xqg_ray.config import GeneratorConfig
    from xqg_ray.stages.generate import GeneratePartition

    cfg = GeneratorConfig(kind="provided", path="unused", languages=["de", "zh"], n_per_language=2)
    actor = GeneratePartition(root, StorageConfig(), "generated/g", "g", cfg, 1, 1, provided=slices or {"slices": []}, compact_fraction=0.5)
    if kind != "provided":
        actor.cfg, actor.gen = GeneratorConfig(kind=kind, languages=["de", "zh"], n_per_language=2), FakeGenerator()
    return actor


def gen_unit(root: str, ids: list, changed: Dict[int, str], key: str, prior: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    from xqg_ray.stages.records import GenerateUnit

    corpus = pa.table({"id": pa.array(ids, pa.int64()), "docid": [f"d{i}" for i in ids], "title": ["t"] * len(ids),
                       "text": [changed.get(i, f"text {i}") for i in ids], "content_hash": [content_hash("t", changed.get(i, f"text {i}")) for i in ids]})
    rec = write_table_committed(Storage(), root, f"in/corpus-{key}.parquet", corpus)
    return GenerateUnit(partition=0, unit="p-00000", key=key, corpus=rec, prior=None if prior is None else segment_source(prior),
                        out=f"generated/g/data/{key}.parquet", prior_attempts=None if prior is None else prior.get("attempts")).to_json()


def gen_files(root: str) -> Dict[str, int]:
    """Relative path -> rows of every Parquet file under generated/g/data and generated/g/attempts."""
    return {str(p.relative_to(root)): pq.ParquetFile(p).metadata.num_rows
            for d in ("data", "attempts") for p in sorted((Path(root) / "generated" / "g" / d).glob("*.parquet"))}


def test_generated_chain_writes_deltas_of_queries_and_draws_and_reads_as_a_rebuild(tmp_path):
    from xqg_ray.schemas import ATTEMPTS_SCHEMA
    from xqg_ray.store.segments import NO_KIND, LiveParquet, compact_unit, live_parquet

    root, storage = str(tmp_path), Storage()
    actor = gen_actor(root, "seq2seq")
    base = list(range(10, 210, 10))  # 20 passages: 30 draws per 10 (ids alternate 1 and 2 rounds x 2 languages)
    v1 = actor.run_unit(gen_unit(root, base, {}, "v1"))
    assert "segments" not in v1 and v1["rows"] == 20 and v1["attempts"]["rows"] == 60
    # add 1 passage (210: 4 draws) and change 1 (40: 2 draws): a delta of their rows in each file, 40 tombstoned in each
    before = gen_files(root)
    v2 = actor.run_unit(gen_unit(root, base + [210], {40: "changed forty"}, "v2", v1))
    written = {k: v for k, v in gen_files(root).items() if k not in before}
    assert written == {"generated/g/data/v2.parquet": 2, "generated/g/data/v2.tombstones.parquet": 1,
                       "generated/g/attempts/v2.parquet": 6, "generated/g/attempts/v2.tombstones.parquet": 1}
    tomb = pq.read_table(tmp_path / "generated/g/attempts/v2.tombstones.parquet")
    assert list(zip(tomb["kind"].to_pylist(), tomb["id"].to_pylist())) == [(NO_KIND, 40)]
    assert [s["rows"] for s in v2["segments"]] == [20, 2] and [s["rows"] for s in v2["attempts"]["segments"]] == [60, 6]
    assert (v2["rows"], v2["attempts"]["rows"], v2["computed"], v2["reused"]) == (21, 64, 2, 19)
    # remove 2 passages (one of the base, the one just added): an empty delta, 2 tombstones in each file
    final = [i for i in base if i != 20]
    v3 = actor.run_unit(gen_unit(root, final, {40: "changed forty"}, "v3", v2))
    assert [s["rows"] for s in v3["segments"]] == [20, 2, 0] and v3["attempts"]["segments"][2]["tombstones"]["rows"] == 2
    assert (v3["rows"], v3["computed"], v3["reused"]) == (19, 0, 19)
    # the live rows (whole and streamed) == a from-scratch build of the final corpus, exactly: no tombstoned row is read
    fresh = actor.run_unit(gen_unit(root, final, {40: "changed forty"}, "fresh"))
    whole, whole_draws = pq.read_table(tmp_path / fresh["file"]), pq.read_table(tmp_path / fresh["attempts"]["file"])
    assert live_table(storage, root, v3).equals(whole) and live_table(storage, root, v3["attempts"]).equals(whole_draws)
    assert whole_draws.schema == ATTEMPTS_SCHEMA and 20 not in whole["id"].to_pylist()
    assert (v3["filter"], v3["quality"], v3["failed_slots"]) == (fresh["filter"], fresh["quality"], fresh["failed_slots"])
    for rec, table in ((v3, whole), (v3["attempts"], whole_draws)):
        f = live_parquet(storage, root, segment_source(rec) if rec is v3 else rec, where="the test")
        assert isinstance(f, LiveParquet)
        assert pa.concat_tables([pa.Table.from_batches([b]) for b in f.batches(None, 3)]).equals(table)
        assert pa.concat_tables([pa.Table.from_batches([b]) for b in f.batches(["id", "content_hash"], 5)]).equals(table.select(["id", "content_hash"]))
    # the kept questions an encode unit selects from the draws, streamed over the segments: the rebuild's
    from xqg_ray.stages.sources import selected_queries
    from xqg_ray.store.integrity import VerifiedParquet

    select = {"questions": "kept", "languages": ["de", "zh"], "n": 2}
    kept = pa.concat_tables(selected_queries(live_parquet(storage, root, v3["attempts"]), select, 3))
    assert kept.equals(pa.concat_tables(selected_queries(VerifiedParquet(storage, root, fresh["attempts"]), select, 3))) and kept.num_rows == 19
    with pytest.raises(ValueError, match="delta segments"):  # the newest segment alone is never read as the partition
        from xqg_ray.store.integrity import read_table_verified
        read_table_verified(storage, root, segment_source(v3))
    # compaction: one file per record, the same bytes as the rebuild's
    from xqg_ray.stages.compact import GENERATED_ROW_GROUP

    one, replaced = compact_unit(storage, root, v3, GENERATED_ROW_GROUP, "the test", {None: GENERATED_SCHEMA, "attempts": ATTEMPTS_SCHEMA})
    assert replaced == 6 and "segments" not in one and "segments" not in one["attempts"]
    assert (one["sha256"], one["attempts"]["sha256"], one["rows"]) == (fresh["sha256"], fresh["attempts"]["sha256"], 19)
    # past compact_fraction: rewritten whole
    big = actor.run_unit(gen_unit(root, final, {i: f"new {i}" for i in final[:12]}, "v4", v3))
    assert "segments" not in big and "segments" not in big["attempts"] and (big["computed"], big["reused"]) == (12, 7)


def test_provided_queries_write_a_delta_of_the_changed_passages(tmp_path):
    root, storage = str(tmp_path), Storage()
    ids = list(range(10, 210, 10))
    table = pa.table({"line": pa.array(range(1, 23), pa.int64()), "docid": [f"d{i}" for i in ids] + ["d210", "nowhere"],
                      "id": pa.array(ids + [210, 999], pa.int64()), "lang": ["de"] * 22, "text": [f"q {i}" for i in ids] + ["q 210", "lost"]})
    slices = {"slices": [{"partition": 0, **write_table_committed(storage, root, "provided/g/p-00000.parquet", table)}]}
    actor = gen_actor(root, "provided", slices)
    v1 = actor.run_unit(gen_unit(root, ids, {}, "v1"))
    assert "segments" not in v1 and (v1["rows"], v1["computed"], v1["set_aside"]) == (20, 20, 2)  # d210 not yet in the corpus
    before = gen_files(root)
    v2 = actor.run_unit(gen_unit(root, ids + [210], {40: "changed forty"}, "v2", v1))
    written = {k: v for k, v in gen_files(root).items() if k not in before}
    # only the 2 new versions are joined (the others' rows reused) and written; the set-aside rows are the whole slice's
    assert written == {"generated/g/data/v2.parquet": 2, "generated/g/data/v2.tombstones.parquet": 1, "generated/g/data/quarantine-v2.parquet": 1}
    assert (v2["rows"], v2["computed"], v2["reused"], v2["set_aside"]) == (21, 2, 19, 1) and [s["rows"] for s in v2["segments"]] == [20, 2]
    fresh = actor.run_unit(gen_unit(root, ids + [210], {40: "changed forty"}, "fresh"))
    assert live_table(storage, root, v2).equals(pq.read_table(tmp_path / fresh["file"]))
    assert pq.read_table(tmp_path / v2["quarantine"]["file"]).equals(pq.read_table(tmp_path / fresh["quarantine"]["file"]))
