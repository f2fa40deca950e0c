"""Delta segments: an update that changes little of a partition writes only its new and changed rows.

The unit tests drive ``EncodePartition`` in this process (no Ray) on committed
synthetic inputs, as tests/test_encode_memory.py does; the last test runs the
whole job on conf/smoke.yaml through a chain of updates (add, change, remove,
compact) and compares it with a from-scratch build of the final corpus.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xqg_ray.config import ConfigError, EncoderConfig, StorageConfig, load_config
from xqg_ray.ids import content_hash, passage_ids, shard_partitions
from xqg_ray.schemas import GENERATED_SCHEMA, PASSAGE, gen_kind
from xqg_ray.stages.encode_actor import EncodePartition
from xqg_ray.stages.records import EncodePartitionUnit
from xqg_ray.stages.reuse import PriorOutput
from xqg_ray.store.integrity import write_table_committed
from xqg_ray.store.segments import compact_entry, live_batches, live_table, segment_source, segments
from xqg_ray.store.storage import Storage

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
WORDS = "river city bank museum treaty löwe 東京 пример the of and a".split()
SRCS = {gen_kind("a"): "fp-a", gen_kind("b"): "fp-b"}
KINDS = [gen_kind("a"), gen_kind("b"), PASSAGE]
GENERATORS = ("t5", "gpt2")  # conf/smoke.yaml's


def inputs(root: str, ids: list, changed: Dict[int, str], tag: str) -> Dict[str, Any]:
    """Committed corpus and two generators' tables of passages ``ids`` (a passage's rows depend on its id and text only)."""
    storage = Storage()
    rngs = {i: np.random.default_rng([7, i]) for i in ids}
    texts = {i: changed.get(i, " ".join(rngs[i].choice(WORDS, size=int(rngs[i].integers(1, 20))))) for i in ids}
    corpus = pa.table({"id": pa.array(ids, pa.int64()), "title": ["t"] * len(ids), "text": [texts[i] for i in ids],
                       "content_hash": [content_hash("t", texts[i]) for i in ids]})
    rec = {"corpus": write_table_committed(storage, root, f"in/corpus-{tag}.parquet", corpus), "gens": {}}
    for name, langs in (("a", ["de", "zh"]), ("b", ["ja"])):
        queries = [[{"lang": lang, "text": f"{texts[i]} ? {lang}{k}"} for lang in langs for k in range(1 + i % 3)] for i in ids]
        t = pa.table({"id": corpus["id"], "content_hash": corpus["content_hash"], "queries": queries,
                      "failed": pa.array(np.zeros(len(ids), np.int32))}, schema=GENERATED_SCHEMA)
        rec["gens"][name] = {"src": f"fp-{name}", "key": f"k-{name}", **write_table_committed(storage, root, f"in/{name}-{tag}.parquet", t)}
    return rec


def unit(rec: Dict[str, Any], out: str, prior: Optional[Dict[str, Any]] = None, fraction: float = 0.5) -> Dict[str, Any]:
    return EncodePartitionUnit(stage="embeddings", partition=0, unit="p-00000", key=out, corpus=rec["corpus"], gens=rec["gens"],
                               prior=None if prior is None else segment_source(prior), out=f"embeddings/data/{out}.parquet",
                               prior_srcs=SRCS if prior is not None else None, compact_fraction=fraction).to_json()


@pytest.fixture(scope="module")
def actor(tiny_models):
    cfg = EncoderConfig(model=tiny_models["tiny-bert"], pooling="mean", max_query_length=16, max_passage_length=24,
                        batch_size=16, dtype="float32", window_rows=8)
    return EncodePartition("unused", StorageConfig(), cfg, threads=1)


def run(actor: EncodePartition, root: str, u: Dict[str, Any], monkeypatch) -> Dict[str, Any]:
    monkeypatch.setattr(actor, "root", root)
    return actor.run_unit(u)


def files(root: str) -> Dict[str, int]:
    """Relative path -> bytes of every data file under embeddings/data."""
    d = Path(root) / "embeddings" / "data"
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(d.iterdir())} if d.is_dir() else {}


def same(a: pa.Table, b: pa.Table) -> None:
    """Same rows: every column but the vectors exactly, the vectors to float noise of other window compositions."""
    for col in ("kind", "src", "id", "content_hash", "count", "slot_counts"):
        assert a[col].equals(b[col]), col
    for col in ("vector",):
        np.testing.assert_allclose(np.stack(a[col].to_numpy(zero_copy_only=False)), np.stack(b[col].to_numpy(zero_copy_only=False)), rtol=0, atol=1e-6)


def test_a_chain_of_small_updates_writes_deltas_and_reads_as_a_rebuild(actor, tmp_path, monkeypatch):
    root, storage = str(tmp_path), Storage()
    base = list(range(10, 310, 10))  # 30 passages
    v1 = run(actor, root, unit(inputs(root, base[:25], {}, "v1"), "v1"), monkeypatch)
    assert "segments" not in v1 and v1["rows"] == 75
    before = files(root)
    # add 2 passages: one delta segment of their 6 rows, nothing tombstoned
    v2 = run(actor, root, unit(inputs(root, base[:27], {}, "v2"), "v2", v1), monkeypatch)
    written = {k: v for k, v in files(root).items() if k not in before}
    assert written == {"embeddings/data/v2.parquet": v2["bytes"]}
    assert [s["rows"] for s in v2["segments"]] == [75, 6] and "tombstones" not in v2["segments"][1]
    assert (v2["rows"], v2["computed"], v2["reused"]) == (81, 6, 75)
    assert v2["computed_by_kind"] == {PASSAGE: 2, gen_kind("a"): 2, gen_kind("b"): 2}
    # change 2 passages: 6 new rows, their 6 old rows tombstoned (kind, id)
    before = files(root)
    v3 = run(actor, root, unit(inputs(root, base[:27], {40: "changed forty", 260: "changed 260"}, "v3"), "v3", v2), monkeypatch)
    written = {k: v for k, v in files(root).items() if k not in before}
    assert written == {"embeddings/data/v3.parquet": v3["bytes"], "embeddings/data/v3.tombstones.parquet": v3["segments"][2]["tombstones"]["bytes"]}
    tomb = pq.read_table(tmp_path / "embeddings/data/v3.tombstones.parquet")
    assert list(zip(tomb["kind"].to_pylist(), tomb["id"].to_pylist())) == [(k, i) for k in KINDS for i in (40, 260)]
    assert [s["rows"] for s in v3["segments"]] == [75, 6, 6] and (v3["rows"], v3["computed"], v3["reused"]) == (81, 6, 75)
    # remove 2 passages (one of the base, one of the first delta): an empty delta and 6 tombstones
    final = [i for i in base[:27] if i not in (20, 270)]
    final_rec = inputs(root, final, {40: "changed forty", 260: "changed 260"}, "v4")
    v4 = run(actor, root, unit(final_rec, "v4", v3), monkeypatch)
    assert [s["rows"] for s in v4["segments"]] == [75, 6, 6, 0] and (v4["rows"], v4["computed"], v4["reused"]) == (75, 0, 75)
    assert v4["segments"][3]["tombstones"]["rows"] == 6
    # live rows == a from-scratch build of the final corpus
    fresh = run(actor, root, unit(final_rec, "fresh"), monkeypatch)
    live, whole = live_table(storage, root, v4), pq.read_table(tmp_path / fresh["file"])
    same(live, whole)
    assert v4["counts"] == fresh["counts"]
    # a tombstoned row is never read: the changed passages' old versions and the removed ones are gone
    hashes = dict(zip(live.filter(pa.compute.equal(live["kind"], PASSAGE))["id"].to_pylist(), live.filter(pa.compute.equal(live["kind"], PASSAGE))["content_hash"].to_pylist()))
    assert 20 not in hashes and 270 not in hashes and hashes[40] == content_hash("t", "changed forty")
    prior = PriorOutput(storage, root, segment_source(v4), where="the test")
    got = pa.concat_tables(list(prior.batches(PASSAGE, "", 4, ["kind", "src", "id", "content_hash"])))
    assert got["id"].to_pylist() == final and got["content_hash"].to_pylist() == whole.filter(pa.compute.equal(whole["kind"], PASSAGE))["content_hash"].to_pylist()
    # streamed a few rows at a time (an index build's read): the same live rows, no batch over its byte budget
    cols = ["kind", "id", "content_hash", "vector"]
    streamed = list(live_batches(storage, root, v4, cols, 1200))

    def batch_rows(seg):  # the budget's rows: 1200 bytes over the file's decoded bytes per row
        m = pq.ParquetFile(tmp_path / seg["file"]).metadata
        return max(1, 1200 * m.num_rows // sum(m.row_group(g).total_byte_size for g in range(m.num_row_groups)))
    assert len(streamed) == sum(-(-seg["rows"] // batch_rows(seg)) for seg in v4["segments"]) > 4
    assert sum(t.num_rows for t in streamed) == 75  # 75 + 6 + 6 stored rows, 12 of them dead
    key = [("kind", "ascending"), ("id", "ascending")]
    assert pa.concat_tables(streamed).sort_by(key).equals(live.select(cols).sort_by(key))
    # compaction: one file holding exactly the live rows
    one = compact_entry(storage, root, v4, 8)
    assert "segments" not in one and one["rows"] == 75 and one["file"] == "embeddings/data/v4.compact.parquet"
    assert pq.read_table(tmp_path / one["file"]).equals(live)
    # an update past compact_fraction rewrites the partition as one file
    big = run(actor, root, unit(inputs(root, final, {260: "changed 260", **{i: f"new {i}" for i in final[:12]}}, "v5"), "v5", v4), monkeypatch)
    assert "segments" not in big and (big["rows"], big["computed"], big["reused"]) == (75, 36, 39)


def test_no_delta_over_other_sources_or_with_fraction_zero(actor, tmp_path, monkeypatch):
    root = str(tmp_path)
    ids = list(range(10, 210, 10))
    v1 = run(actor, root, unit(inputs(root, ids, {}, "v1"), "v1"), monkeypatch)
    rec = inputs(root, ids, {30: "changed"}, "v2")
    assert "segments" not in run(actor, root, unit(rec, "zero", v1, fraction=0.0), monkeypatch)
    other = {**unit(rec, "other", v1), "prior_srcs": {**SRCS, gen_kind("a"): "fp-old"}}
    assert "segments" not in run(actor, root, other, monkeypatch)
    assert len(run(actor, root, unit(rec, "delta", v1), monkeypatch)["segments"]) == 2
    # the same key recomputed over its own output (its commit record cleaned up): rewritten whole, the same bytes
    again = run(actor, root, unit(inputs(root, ids, {}, "v1"), "v1", v1), monkeypatch)
    assert "segments" not in again and again["sha256"] == v1["sha256"] and again["reused"] == 60


def test_compact_fraction_is_validated():
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, ["corpus.compact_fraction=-1"])
    assert str(e.value).splitlines()[1:] == ["  - corpus.compact_fraction must be >= 0 (0: never a delta segment), got -1.0"]


def test_chain_add_change_remove_compact_equals_rebuild(versions, scratch_v2, ray_local, tmp_path):
    """The whole job through add -> change -> remove -> compact equals a from-scratch build of the final corpus;
    each update writes delta segments of the corpus partitions, the embeddings and each generator's queries and draws."""
    from corpus_versions import ADDED, CHANGED, REMOVED, assert_same_runs, current, files_overrides, read_trec
    from xqg_ray.pipeline import run as run_job
    from xqg_ray.stages.compact import compact

    corpus, out = tmp_path / "corpus", tmp_path / "out"
    shutil.copytree(versions["v1"], corpus)
    cfg = load_config(SMOKE, files_overrides(corpus, versions["queries"], out))
    run_job(cfg)
    v1_rows = {u["partition"]: u["rows"] for u in current(out, "embeddings")["units"]}
    revised = {json.loads(line)["docid"]: line for line in (versions["v2"] / "a.jsonl").read_text().splitlines()}
    steps = [
        ("add", lambda: shutil.copy(versions["v2"] / "b.jsonl", corpus / "b.jsonl"), len(ADDED), 0),
        ("change", lambda: (corpus / "a.jsonl").write_text("".join(revised.get(json.loads(line)["docid"], line) + "\n"
                                                                  for line in (corpus / "a.jsonl").read_text().splitlines())), len(CHANGED), len(CHANGED)),
        ("remove", lambda: shutil.copy(versions["v2"] / "a.jsonl", corpus / "a.jsonl"), 0, len(REMOVED)),
    ]
    tombstoned = {"add": 0, "change": 3 * len(CHANGED), "remove": 3 * (len(CHANGED) + len(REMOVED))}
    touched = {"add": ADDED, "change": CHANGED, "remove": []}
    gen_dirs = [out / "generated" / g / d for g in GENERATORS for d in ("data", "attempts")]
    for name, edit, computed, dead in steps:
        before = set((out / "embeddings" / "data").iterdir())
        gen_before = {d: set(d.iterdir()) for d in gen_dirs}
        parts_before = set((out / "corpus" / "parts").iterdir())
        shards_before = {s: {sh["key"] for sh in current(out, f"index/{s}")["shards"]} for s in SYSTEMS}
        before_m = {s: {sh["shard"]: sh for sh in current(out, f"index/{s}")["shards"]} for s in SYSTEMS}
        edit()
        run_job(cfg)
        # corpus: a delta of the added and changed passages in each touched partition, the dead ids tombstoned
        rows = {p.name: pq.ParquetFile(p).metadata.num_rows for p in set((out / "corpus" / "parts").iterdir()) - parts_before}
        assert sum(n for f, n in rows.items() if not f.endswith(".tombstones.parquet")) == computed, (name, rows)
        assert sum(n for f, n in rows.items() if f.endswith(".tombstones.parquet")) == dead, (name, rows)
        snap = json.loads((out / current(out, "benchmark")["snapshot_file"]).read_text())
        assert any(len(r.get("segments", [])) > 1 for r in snap["partitions"]), name
        for g in GENERATORS:  # generated: a delta of the computed passages' rows in each file, their dead ids tombstoned
            gm = current(out, f"generated/{g}")
            assert gm["rows"]["computed"] == computed, (name, g)
            ids = set(passage_ids(touched[name]))
            draws = sum(int(pa.compute.sum(pa.compute.is_in(live_table(Storage(), str(out), u["attempts"], ["id"])["id"], value_set=pa.array(list(ids), pa.int64()))).as_py() or 0)
                        for u in gm["units"])
            for d, want in (("data", computed), ("attempts", draws)):
                rows = {p.name: pq.ParquetFile(p).metadata.num_rows for p in sorted(set((out / "generated" / g / d).iterdir()) - gen_before[out / "generated" / g / d])}
                assert sum(n for f, n in rows.items() if not f.endswith(".tombstones.parquet")) == want, (name, g, d, rows)
                assert sum(n for f, n in rows.items() if f.endswith(".tombstones.parquet")) == dead, (name, g, d, rows)
            deltas = [u for u in gm["units"] if u.get("segments")]
            assert deltas and all(len(u["attempts"]["segments"]) == len(u["segments"]) for u in deltas), (name, g)
        emb = current(out, "embeddings")
        assert emb["computed_by_kind"] == {"passage": computed, "gen:t5": computed, "gen:gpt2": computed}, name
        # what this update wrote: delta segments of exactly the computed rows (3 kinds) and tombstones of the dead ones
        new = sorted(set((out / "embeddings" / "data").iterdir()) - before)
        rows = {p.name: pq.ParquetFile(p).metadata.num_rows for p in new}
        assert sum(n for f, n in rows.items() if not f.endswith(".tombstones.parquet")) == 3 * computed, (name, rows)
        assert sum(n for f, n in rows.items() if f.endswith(".tombstones.parquet")) == 3 * dead, (name, rows)
        deltas = [u for u in emb["units"] if u.get("segments")]
        assert deltas and all(u["file"] == u["segments"][-1]["file"] for u in deltas), name
        assert sum(u["segments"][0]["rows"] for u in deltas) == sum(v1_rows[u["partition"]] for u in deltas), name  # never rewritten
        assert sum(t["tombstones"]["rows"] for u in deltas for t in u["segments"] if t.get("tombstones")) == tombstoned[name], name
        # index: each changed shard updated, reading of each embeddings file the segments appended since
        # its prior version, or the whole file where the update rewrote it (past compact_fraction)
        units = {u["partition"]: u for u in emb["units"]}
        for s, kinds in SYSTEMS.items():
            m = current(out, f"index/{s}")
            redone = [sh for sh in m["shards"] if sh["key"] not in shards_before[s]]
            assert redone and {sh["mode"] for sh in redone} == {"updated"}, (name, s)
            assert m["changes"] == {"added": computed, "removed": dead}, (name, s)
            for sh in redone:
                want = 0
                for p, was in zip(shard_partitions(4, 2)[sh["shard"]], before_m[s][sh["shard"]]["sources"]):
                    segs = segments(units[p])
                    appended = [x["sha256"] for x in segs[:len(was)]] == was
                    want += kinds * (sum(x["rows"] for x in segs[len(was):]) if appended else units[p]["rows"]) // 3  # 3 kinds alike
                assert sh["rows_read"] == want, (name, s, sh["shard"])
            if name != "remove":  # no partition rewritten: the index read exactly the new rows
                assert sum(sh["rows_read"] for sh in redone) == kinds * computed, (name, s)
        # evaluate: the rows its lookup found are kept per partition, over the snapshot's current segments
        looked = json.loads((out / "lookups" / "index.json").read_text())["partitions"]
        assert {str(p.relative_to(out)) for p in (out / "lookups").iterdir()} == {r["file"] for r in looked.values()} | {"lookups/index.json"}
        assert all(r["corpus_segments"] == [x["sha256"] for x in segments(snap["partitions"][int(p)])] for p, r in looked.items()), name
    scratch, rebuilt = scratch_v2

    def same_as_rebuild(metrics: Dict[str, Any]) -> None:
        for s in ("baseline", "xqg", "xqg-a0.3", "causal-mean"):
            assert_same_runs(out / "runs" / f"{s}.trec", scratch / "runs" / f"{s}.trec")
            assert pq.read_table(out / "per_query" / f"{s}.parquet").equals(pq.read_table(scratch / "per_query" / f"{s}.parquet"))
            assert not {d for hits in read_trec(out / "runs" / f"{s}.trec").values() for d, _ in hits} & set(REMOVED), s
        assert metrics["systems"] == rebuilt["systems"]

    final = run_job(cfg)  # nothing changed: every stage reused
    same_as_rebuild(final)
    # the train stage's pairs read the segmented queries and draws as the rebuild's single files
    pairs = [train_pairs(load_config(SMOKE, files_overrides(src, versions["queries"], d))) for src, d in ((corpus, out), (versions["v2"], scratch))]
    assert pairs[0] == pairs[1] and all(pairs[0].values())
    runs_before = {p.name: p.read_bytes() for p in (out / "runs").iterdir()}
    emb_fp = current(out, "embeddings")["fingerprint"]
    done = compact(cfg)
    snap = json.loads((out / current(out, "benchmark")["snapshot_file"]).read_text())
    assert done["corpus"]["partitions"] == len([r for r in snap["partitions"] if r["file"].endswith(".compact.parquet")]) > 0
    assert not any(r.get("segments") for r in snap["partitions"])
    assert {str(p.relative_to(out)) for p in (out / "corpus" / "parts").iterdir()} == {r["file"] for r in snap["partitions"]}
    assert [r["digest"] for r in snap["partitions"]] == [r["digest"] for r in json.loads((scratch / current(scratch, "benchmark")["snapshot_file"]).read_text())["partitions"]]
    assert done["embeddings"]["partitions"] == len([u for u in current(out, "embeddings")["units"] if u["file"].endswith(".compact.parquet")]) > 0
    emb = current(out, "embeddings")
    assert emb["fingerprint"] == emb_fp and not any(u.get("segments") for u in emb["units"])
    named = {u["file"] for u in emb["units"]}
    assert {str(p.relative_to(out)) for p in (out / "embeddings" / "data").iterdir()} == named  # the old segments are gone
    for g in GENERATORS:  # each generator's partitions: one file each (queries, draws), the rebuild's bytes
        assert done[f"generated/{g}"]["partitions"] > 0, g
        gm, fresh = current(out, f"generated/{g}"), current(scratch, f"generated/{g}")
        assert not any(u.get("segments") or u["attempts"].get("segments") for u in gm["units"]), g
        assert [(u["sha256"], u["attempts"]["sha256"]) for u in gm["units"]] == [(u["sha256"], u["attempts"]["sha256"]) for u in fresh["units"]], g
        for d in ("data", "attempts"):
            named = {(u if d == "data" else u["attempts"])["file"] for u in gm["units"]}
            assert {str(p.relative_to(out)) for p in (out / "generated" / g / d).iterdir()} == named, (g, d)
    assert compact(cfg) == {"corpus": {"partitions": 0, "segments": 0}, **{f"generated/{g}": {"partitions": 0, "segments": 0} for g in GENERATORS},
                            "embeddings": {"partitions": 0, "segments": 0}}
    after = run_job(cfg)
    assert {k: v["reused"] for k, v in after["stages"].items() if k in ("benchmark", "embeddings", "index", *(f"generated/{g}" for g in GENERATORS))} == {
        "benchmark": True, "embeddings": True, "index": True, **{f"generated/{g}": True for g in GENERATORS}}
    assert {p.name: p.read_bytes() for p in (out / "runs").iterdir()} == runs_before
    same_as_rebuild(after)
    assert [u["rows"] for u in current(out, "embeddings")["units"]] == [u["rows"] for u in current(scratch, "embeddings")["units"]]


# The smoke config's systems -> how many kinds of embeddings rows each reads (E(p), and its generator's sums).
SYSTEMS = {"baseline": 1, "xqg": 2, "xqg-a0.3": 2, "causal-mean": 2}


def train_pairs(cfg) -> Dict[str, list]:  # noqa: ANN001 - RunConfig
    """(generator, questions) -> the train stage's (query, passage) pairs of every partition, as lists."""
    from corpus_versions import current
    from xqg_ray.progress import StageTimer
    from xqg_ray.schemas import KEPT, UNFILTERED
    from xqg_ray.stages.context import Context
    from xqg_ray.stages.prepare import run_benchmark
    from xqg_ray.stages.train import generator_partition_pairs

    ctx = Context(cfg=cfg, storage=Storage(), root=cfg.output_dir, timer=StageTimer(), threads=1)
    ctx.bench, ctx.snapshot = run_benchmark(ctx)
    found = {}
    for g in GENERATORS:
        manifest = current(Path(cfg.output_dir), f"generated/{g}")
        for q in (KEPT, UNFILTERED):
            found[f"{g}/{q}"] = [t.to_pylist() for t, _ in generator_partition_pairs(ctx, g, manifest, q)]
    return found


def test_compact_verb_on_a_directory_without_segments(tmp_path, capsys):
    from xqg_ray.cli import main

    assert main(["compact", SMOKE, f"output_dir={tmp_path / 'out'}"]) == 0
    assert json.loads(capsys.readouterr().out) == {"corpus": {"partitions": 0, "segments": 0},
                                                   **{f"generated/{g}": {"partitions": 0, "segments": 0} for g in GENERATORS},
                                                   "embeddings": {"partitions": 0, "segments": 0}}


def test_merge_by_id_streams_segments_in_id_order_one_batch_each():
    """Several id-ordered streams come out as one id order, holding at most a batch per stream."""
    import numpy as np
    import pyarrow as pa

    from xqg_ray.store.segments import merge_by_id

    held = []

    def stream(ids, b):
        for i in range(0, len(ids), b):
            held.append(i)
            yield pa.table({"id": pa.array(ids[i:i + b], pa.int64())})
        yield pa.table({"id": pa.array([], pa.int64())})  # an empty batch is passed over

    parts = [[1, 4, 5, 9, 12], [2, 3, 10], [], [6, 7, 8, 11, 13, 14]]
    out = list(merge_by_id([stream(p, 2) for p in parts]))
    assert [v for t in out for v in t["id"].to_pylist()] == list(range(1, 15))
    assert max(t.num_rows for t in out) <= 2 * len(parts)
    rng = np.random.RandomState(0)
    for _ in range(50):
        ids = rng.permutation(300)[: rng.randint(0, 200)]
        split = [sorted(x.tolist()) for x in np.array_split(rng.permutation(ids), rng.randint(1, 5))]
        got = [v for t in merge_by_id([stream(p, int(rng.randint(1, 8))) for p in split]) for v in t["id"].to_pylist()]
        assert got == sorted(ids.tolist())
