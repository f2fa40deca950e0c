"""Work proportional to the change: input files skipped by fingerprint, provided queries read per
partition, evaluation reading only the row groups of the retrieved ids, search and evaluation reused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xqg_ray.ids import content_hash, passage_id
from xqg_ray.ingest.partition import ROW_GROUP_ROWS, partition_bytes
from xqg_ray.ingest.readers import CLEAN_SCHEMA
from xqg_ray.ingest.lookup import read_rows_by_id, row_groups_holding
from xqg_ray.store.integrity import IntegrityError, write_committed
from xqg_ray.store.storage import Storage


def _partition(n: int) -> pa.Table:
    docids = [f"d{i}" for i in range(n)]
    titles = [f"t{i}" for i in range(n)]
    texts = [f"passage number {i}" for i in range(n)]
    t = pa.table({"docid": docids, "id": pa.array([passage_id(d) for d in docids], pa.int64()), "title": titles,
                  "text": texts, "content_hash": [content_hash(a, b) for a, b in zip(titles, texts)]}, schema=CLEAN_SCHEMA)
    return t.sort_by("id")


# -- evaluation reads only the row groups holding the wanted ids -----------------------------------------------

def test_a_lookup_of_k_ids_reads_at_most_k_row_groups(tmp_path):
    t = _partition(3 * ROW_GROUP_ROWS + 100)
    storage = Storage()
    rec = write_committed(storage, str(tmp_path), "corpus/parts/p-00000-x.parquet", partition_bytes(t))
    meta = pq.ParquetFile(tmp_path / rec["file"]).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [4096, 4096, 4096, 100]
    ids = t["id"].to_numpy()
    want = np.array([ids[5], ids[4096 * 2 + 7]], np.int64)  # in groups 0 and 2
    assert row_groups_holding(meta, "id", want) == [0, 2]
    got = read_rows_by_id(storage, str(tmp_path), rec, want)
    assert got.rows_read == 2 * ROW_GROUP_ROWS
    expected = t.filter(pa.compute.is_in(t["id"], value_set=pa.array(want))).select(["id", "docid", "text"])
    assert got.table.equals(expected)
    assert read_rows_by_id(storage, str(tmp_path), rec, np.array([ids[-1]], np.int64)).rows_read == 100
    # An id below every group's minimum touches none.
    assert read_rows_by_id(storage, str(tmp_path), rec, np.array([int(ids[0]) - 1], np.int64)).rows_read == 0


def test_a_lookup_checks_size_and_every_row_read(tmp_path):
    t = _partition(50)
    storage = Storage()
    rec = write_committed(storage, str(tmp_path), "p.parquet", partition_bytes(t))
    want = t["id"].to_numpy()[:3]
    bad = t.set_column(3, "text", pa.array(["changed"] + t["text"].to_pylist()[1:]))
    (tmp_path / "p.parquet").write_bytes(partition_bytes(bad))
    rec_same_size = {**rec, "bytes": (tmp_path / "p.parquet").stat().st_size}
    with pytest.raises(IntegrityError, match="does not match its id or content hash"):
        read_rows_by_id(storage, str(tmp_path), rec_same_size, want)
    size = rec_same_size["bytes"]
    with pytest.raises(IntegrityError) as e:
        read_rows_by_id(storage, str(tmp_path), {**rec, "bytes": size + 1}, want)
    assert str(e.value) == (f"{tmp_path}/p.parquet is {size} bytes, the corpus snapshot recorded {size + 1}: the file changed "
                            "after it was committed; delete it and rerun the same command to recompute it")


# -- provided queries: split once by partition, each unit reads its slice ---------------------------------------

def test_each_unit_reads_only_its_partitions_provided_rows(tmp_path):
    from xqg_ray.config import StorageConfig
    from xqg_ray.stages.provided import ProvidedQueries, split_provided

    corpus = _partition(6)  # d0 d1 d2 d5 in partition 1, d3 d4 in partition 0 (id % 2); "nope" hashes to 0
    rows = [("d0", "de", "eins"), ("nope", "de", "zwei"), ("d3", "fr", "trois"), ("d0", "de", " "),
            ("d1", "fr", "quatre"), ("d0", "de", "fünf")]
    src = tmp_path / "log.parquet"
    pq.write_table(pa.table({"docid": [r[0] for r in rows], "lang": [r[1] for r in rows], "text": [r[2] for r in rows]}), src)
    root = str(tmp_path / "out")
    idx = split_provided(StorageConfig(), root, "logs", {"uri": str(src), "sha256": "x"}, {"qids": [], "texts": []}, 2, "provided/logs/k")
    assert [(s["partition"], s["rows"], s["file"]) for s in idx["slices"]] == [
        (0, 2, "provided/logs/k/p-00000.parquet"), (1, 4, "provided/logs/k/p-00001.parquet")]
    q = ProvidedQueries(Storage(), root, idx)
    by_part = {p: corpus.filter(pa.array([i % 2 == p for i in corpus["id"].to_pylist()])) for p in (0, 1)}

    out, aside = q.for_partition(0, by_part[0])
    assert q.rows_read == 2
    assert dict(zip(by_part[0]["docid"].to_pylist(), out["queries"].to_pylist())) == {"d3": [{"lang": "fr", "text": "trois"}], "d4": []}
    assert [(r["line"], r["docid"], r["reason"]) for r in aside.to_pylist()] == [(2, "nope", "docid not in corpus")]

    out, aside = q.for_partition(1, by_part[1])
    assert q.rows_read == 2 + 4
    assert out["id"].to_pylist() == by_part[1]["id"].to_pylist()
    assert dict(zip(by_part[1]["docid"].to_pylist(), out["queries"].to_pylist())) == {
        "d0": [{"lang": "de", "text": "eins"}, {"lang": "de", "text": "fünf"}], "d1": [{"lang": "fr", "text": "quatre"}], "d2": [], "d5": []}
    assert [(r["line"], r["docid"], r["reason"]) for r in aside.to_pylist()] == [(4, "d0", "empty query text")]

    # an update joins only its new and changed passages: their rows of the whole join, the slice's set-aside rows
    todo = by_part[1].filter(pa.array([d in ("d0", "d2") for d in by_part[1]["docid"].to_pylist()]))
    part, part_aside = q.for_partition(1, by_part[1], todo)
    assert part.equals(out.filter(pa.array([d in ("d0", "d2") for d in by_part[1]["docid"].to_pylist()])))
    assert part["queries"].to_pylist() == [[{"lang": "de", "text": "eins"}, {"lang": "de", "text": "fünf"}], []]
    assert part_aside.equals(aside)


# -- unchanged input files are not read again ------------------------------------------------------------------

@pytest.fixture
def hashed_files(monkeypatch):
    """The files whose bytes are read to hash them (the only reads fingerprinting does), in call order."""
    from xqg_ray.ingest import snapshot

    seen: list = []
    real = snapshot.fingerprint_sources

    def counting(storage_cfg, files, num_cpus=0.5, sizes=None):
        seen.extend(files)
        return real(storage_cfg, files, num_cpus, sizes)

    monkeypatch.setattr(snapshot, "fingerprint_sources", counting)
    return seen


def test_unchanged_files_are_not_read_touched_ones_are_hashed_edited_ones_are_new(tmp_path, ray_local, hashed_files):
    from xqg_ray.config import StorageConfig
    from xqg_ray.ingest.snapshot import fingerprint_sources_cached

    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    files[0].write_text('{"docid": "a", "text": "alpha"}\n')
    files[1].write_text('{"docid": "b", "text": "beta"}\n')
    uris = [str(f) for f in files]

    def sha(f):
        return hashlib.sha256(f.read_bytes()).hexdigest()

    first = fingerprint_sources_cached(StorageConfig(), uris, {})
    assert hashed_files == uris and first.hashed == uris
    assert first.sources == [{"uri": str(f), "bytes": f.stat().st_size, "sha256": sha(f)} for f in files]

    again = fingerprint_sources_cached(StorageConfig(), uris, first.cache)
    assert hashed_files == uris  # nothing read
    assert again.hashed == [] and again.sources == first.sources and again.cache == first.cache

    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched, same bytes
    touched = fingerprint_sources_cached(StorageConfig(), uris, again.cache)
    assert hashed_files == uris + [uris[0]] and touched.sources == first.sources
    assert touched.cache != again.cache  # the new stamp is recorded: the next run reads nothing

    files[1].write_text('{"docid": "b", "text": "BETA"}\n')  # edited, same size
    edited = fingerprint_sources_cached(StorageConfig(), uris, touched.cache)
    assert hashed_files == uris + [uris[0], uris[1]]
    assert edited.sources == [first.sources[0], {"uri": uris[1], "bytes": files[1].stat().st_size, "sha256": sha(files[1])}]
    assert edited.sources[1]["sha256"] != first.sources[1]["sha256"]


# -- a second identical run searches nothing and gives the same results ----------------------------------------

def test_a_second_identical_run_reads_no_input_and_searches_nothing(tmp_path, ray_local, tiny_models, shared_datasets,
                                                                    hashed_files, monkeypatch):
    import json

    from xqg_ray import flows
    from xqg_ray.config import load_config
    from xqg_ray.pipeline import run

    searches: list = []
    real = flows.run_search

    def counting(ctx, manifests, jobs):
        searches.append(sorted(manifests))
        return real(ctx, manifests, jobs)

    monkeypatch.setattr(flows, "run_search", counting)
    from xqg_ray.runtime import tasks

    model_calls: list = []  # the round trip's encoder: a model host's call
    real_model_task = tasks.run_model_task

    def counting_model_task(fn, args, pool):
        model_calls.append(fn.__name__)
        return real_model_task(fn, args, pool)

    monkeypatch.setattr(tasks, "run_model_task", counting_model_task)
    out = tmp_path / "out"

    def cfg(*extra):
        c = load_config(str(Path(__file__).resolve().parents[1] / "conf" / "smoke.yaml"),
                        [f"output_dir={out}", f"benchmark.source={shared_datasets}", "ray.progress=false",
                         "benchmark.corpus_limit=24", "benchmark.max_queries_per_language=6", *extra])
        c.systems = [s for s in c.systems if s.name in ("baseline", "xqg")]
        return c

    first = run(cfg())
    n_inputs = len(hashed_files)
    assert n_inputs > 0 and searches == [["baseline", "xqg"]] and model_calls == ["round_trip_task"]
    runs = {p.name: p.read_bytes() for p in sorted((out / "runs").iterdir())}
    per_query = {p.name: p.read_bytes() for p in sorted((out / "per_query").iterdir())}

    second = run(cfg())
    assert len(hashed_files) == n_inputs  # no input file read again
    assert searches == [["baseline", "xqg"]]  # no search, no shard actor
    assert model_calls == ["round_trip_task"]  # the round trip's ranks from quality/round_trip.json: no encoder loaded
    assert second["question_quality"] == first["question_quality"]
    assert second["stages"]["search"]["reused"] is True and second["stages"]["search"]["rows"] == 0
    assert second["systems"] == first["systems"] and second["comparisons"] == first["comparisons"]
    assert {p.name: p.read_bytes() for p in sorted((out / "runs").iterdir())} == runs
    assert {p.name: p.read_bytes() for p in sorted((out / "per_query").iterdir())} == per_query
    assert json.loads((out / "results" / "current.json").read_text())["fingerprint"]

    # Another alpha for xqg: only xqg is searched again; baseline's results are reused.  The round trip's
    # cache, damaged meanwhile, is computed again to the same figures (a cache, never an error).
    (out / "quality" / "round_trip.json").write_text("{}")
    c = cfg()
    c.systems[1].alpha = 0.05
    third = run(c)
    assert searches == [["baseline", "xqg"], ["xqg"]]
    assert model_calls == ["round_trip_task"] * 2 and third["question_quality"] == first["question_quality"]
    assert third["systems"]["baseline"] == first["systems"]["baseline"]
    assert (out / "runs" / "baseline.trec").read_bytes() == runs["baseline.trec"]


def test_an_s3_file_is_stamped_by_size_and_etag(s3_endpoint):
    from xqg_ray.config import StorageConfig
    from xqg_ray.ingest.snapshot import file_stamp

    storage = Storage(StorageConfig(s3_endpoint=s3_endpoint, access_key="testing", secret_key="testing"))
    client = storage.s3_client()
    client.put_object(Bucket="xqg-test", Key="stamp/a.jsonl", Body=b"alpha\n")
    first = file_stamp(storage, "s3://xqg-test/stamp/a.jsonl")
    assert first == [6, '"' + hashlib.md5(b"alpha\n").hexdigest() + '"']  # a single-part upload's ETag is its MD5
    client.put_object(Bucket="xqg-test", Key="stamp/a.jsonl", Body=b"ALPHA\n")
    assert file_stamp(storage, "s3://xqg-test/stamp/a.jsonl", client) == [6, '"' + hashlib.md5(b"ALPHA\n").hexdigest() + '"']
