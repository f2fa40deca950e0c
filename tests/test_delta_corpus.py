"""Corpus partitions kept as delta segments: an update writes its added and changed rows, not the partition.

A 240-passage corpus is ingested, then updated three times with
``compact_fraction`` 0.5 (add, change and remove a few passages; then again over
the segmented result; then a change that passes the churn threshold).  Each
snapshot's live rows, digests and corpus hash equal a from-scratch ingest of
the same input; each delta segment holds exactly the added and changed rows of
its partition and its tombstones exactly the removed and changed ids; the
parent's files are named again, never rewritten.  The evaluate stage's id
lookup and the reuse check read the segments, and a corrupted tombstones file
is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xqg_ray.config import StorageConfig
from xqg_ray.ids import passage_id
from xqg_ray.ingest import ingest_corpus
from xqg_ray.ingest.partition import verify_partition
from xqg_ray.ingest.snapshot import fingerprint_sources_cached
from xqg_ray.ingest.sources import list_corpus_files
from xqg_ray.ingest.lookup import partition_rows, read_rows_by_id
from xqg_ray.store.integrity import IntegrityError
from xqg_ray.store.segments import live_table, segments
from xqg_ray.store.storage import Storage

P = 4
N = 240
CFG = StorageConfig()
S = Storage()


def write(d: Path, texts: Dict[str, str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"docid": k, "title": "T", "text": v}) for k, v in sorted(texts.items())]
    (d / "c.jsonl").write_text("\n".join(lines) + "\n")
    return d


def ingest(root: Path, d: Path, parent: Any = None, compact_fraction: float = 0.5) -> Dict[str, Any]:
    return ingest_corpus(CFG, str(root), str(d), num_partitions=P, parent=parent, num_cpus=1.0, compact_fraction=compact_fraction)


def live(root: Path, m: Dict[str, Any]) -> pa.Table:
    return pa.concat_tables([live_table(S, str(root), r) for r in m["partitions"]]).sort_by("id")


def one_file(root: Path, m: Dict[str, Any]) -> pa.Table:
    """The rows of a snapshot of whole files (a from-scratch ingest)."""
    assert all(len(segments(r)) == 1 for r in m["partitions"])
    return pa.concat_tables([pq.read_table(root / r["file"]) for r in m["partitions"]]).sort_by("id")


def ids_of(docids: List[str]) -> List[int]:
    return sorted(passage_id(x) for x in docids)


def check_same_as_scratch(tmp: Path, root: Path, m: Dict[str, Any], texts: Dict[str, str], name: str) -> None:
    scratch_root = tmp / f"scratch-{name}"
    s = ingest(scratch_root, write(tmp / f"in-{name}", texts), compact_fraction=0.0)
    assert live(root, m).equals(one_file(scratch_root, s))
    assert [r["digest"] for r in m["partitions"]] == [r["digest"] for r in s["partitions"]]
    assert [r["rows"] for r in m["partitions"]] == [r["rows"] for r in s["partitions"]]
    assert m["corpus_hash"] == s["corpus_hash"]


@pytest.fixture(scope="module")
def v1(tmp_path_factory, ray_local):
    tmp = tmp_path_factory.mktemp("dc")
    texts = {f"d{i:03d}": f"passage number {i}" for i in range(N)}
    root = tmp / "out"
    return tmp, root, texts, ingest(root, write(tmp / "in-v1", texts))


def test_updates_append_delta_segments_equal_to_a_rebuild(v1) -> None:
    tmp, root, t1, m1 = v1
    assert all(len(segments(r)) == 1 for r in m1["partitions"])  # no parent: whole files
    # v2: 4 added, 2 changed, 2 removed
    t2 = dict(t1)
    t2.update({f"new{i}": f"new passage {i}" for i in range(4)})
    t2["d010"], t2["d020"] = "edited ten", "edited twenty"
    del t2["d030"], t2["d040"]
    m2 = ingest(root, write(tmp / "in-v2", t2), parent=m1)
    assert m2["changes"] == {"added": 4, "changed": 2, "removed": 2, "unchanged": N - 4}
    check_same_as_scratch(tmp, root, m2, t2, "v2")
    fresh = ids_of([f"new{i}" for i in range(4)] + ["d010", "d020"])
    dead = ids_of(["d010", "d020", "d030", "d040"])
    touched = {i % P for i in fresh + dead}
    for r1, r2 in zip(m1["partitions"], m2["partitions"]):
        p = r2["partition"]
        if p not in touched:
            assert r2 == r1
            continue
        segs = segments(r2)
        assert len(segs) == 2
        assert {k: segs[0][k] for k in ("file", "sha256", "bytes", "rows")} == {k: r1[k] for k in ("file", "sha256", "bytes", "rows")}
        delta = pq.read_table(root / segs[1]["file"])
        assert delta["id"].to_pylist() == [i for i in fresh if i % P == p]  # only the added and changed rows, by id
        tomb = [i for i in dead if i % P == p]
        if tomb:
            t = pq.read_table(root / segs[1]["tombstones"]["file"])
            assert t["id"].to_pylist() == tomb and set(t["kind"].to_pylist()) == {""}
        else:
            assert "tombstones" not in segs[1]
        assert r2["rows"] == r1["rows"] + sum(i % P == p for i in fresh) - len(tomb)
        verify_partition(CFG, str(root), r2, "test")

    # The id lookup of the evaluate stage: changed rows come from the delta, removed ones are gone.
    want = np.array(ids_of(["d010", "d030", "new0", "d001", "d011"]), np.int64)
    got = {}
    for p in range(P):
        ids = want[want % P == p]
        if len(ids):
            t = read_rows_by_id(S, str(root), m2["partitions"][p], ids).table
            got.update(zip(t["docid"].to_pylist(), t["text"].to_pylist()))
    assert got == {"d010": "edited ten", "new0": "new passage 0", "d001": "passage number 1", "d011": "passage number 11"}

    # With the rows the previous snapshot's lookup found as a cache: the same rows, and only the delta segment read
    # (d010's cached row is dead: tombstoned by the delta, which holds its new text; d030's is removed).
    for p in range(P):
        ids = want[want % P == p]
        if not len(ids):
            continue
        before = read_rows_by_id(S, str(root), m1["partitions"][p], ids)
        plain = read_rows_by_id(S, str(root), m2["partitions"][p], ids)
        cached = read_rows_by_id(S, str(root), m2["partitions"][p], ids, cached=before.found, cached_segments=[m1["partitions"][p]["sha256"]])
        assert cached.table.equals(plain.table), p
        segs = segments(m2["partitions"][p])
        delta_only = read_rows_by_id(S, str(root), segs[-1], ids).rows_read if len(segs) > 1 else 0
        assert cached.rows_read == delta_only < plain.rows_read, p
        # the same snapshot again: the ids found are all cached, nothing is read (an absent id would be looked for)
        again = read_rows_by_id(S, str(root), m2["partitions"][p], plain.table["id"].to_numpy(), cached=cached.found,
                                cached_segments=[x["sha256"] for x in segs])
        assert again.table.equals(plain.table) and again.rows_read == 0, p
        assert set(cached.found["segment"].to_pylist()) <= {x["sha256"] for x in segs}

    # The lookup task with a cache file: used when intact; missing or changed, the corpus is read and a new one written.
    p = int(want[0] % P)
    ids = want[want % P == p]
    plain = read_rows_by_id(S, str(root), m2["partitions"][p], ids).table
    _, rec = partition_rows(str(root), CFG, m2["partitions"][p], ids, None, "lookups/a.parquet")
    assert rec["corpus_segments"] == [x["sha256"] for x in segments(m2["partitions"][p])]
    assert partition_rows(str(root), CFG, m2["partitions"][p], ids, rec, "lookups/a.parquet") == (plain, rec)  # same name: kept
    (root / "lookups" / "a.parquet").write_bytes(b"damaged")
    got, again = partition_rows(str(root), CFG, m2["partitions"][p], ids, rec, "lookups/b.parquet")
    assert got.equals(plain) and again["sha256"] == rec["sha256"] and pq.read_table(root / "lookups" / "b.parquet").num_rows == plain.num_rows
    # a record of an older format (no corpus_segments): looked up again and written anew, not a KeyError
    old_format = {k: v for k, v in again.items() if k != "corpus_segments"}
    got, again2 = partition_rows(str(root), CFG, m2["partitions"][p], ids, old_format, "lookups/b.parquet")
    assert got.equals(plain) and again2 == again

    # v3 over the segmented v2: a third segment where touched again; the rebuild still equal.
    t3 = dict(t2)
    t3["d010"] = "edited again"
    t3["new9"] = "ninth new"
    del t3["new0"]
    m3 = ingest(root, write(tmp / "in-v3", t3), parent=m2)
    assert m3["changes"] == {"added": 1, "changed": 1, "removed": 1, "unchanged": len(t2) - 2}
    check_same_as_scratch(tmp, root, m3, t3, "v3")
    p10 = passage_id("d010") % P
    assert len(segments(m3["partitions"][p10])) == len(segments(m2["partitions"][p10])) + 1
    t = read_rows_by_id(S, str(root), m3["partitions"][p10], np.array([passage_id("d010")], np.int64)).table
    assert t["text"].to_pylist() == ["edited again"]

    # v4: most passages changed, past the 0.5 churn: every partition is one whole file again.
    t4 = {k: (v + " v4" if i % 4 else v) for i, (k, v) in enumerate(sorted(t3.items()))}
    m4 = ingest(root, write(tmp / "in-v4", t4), parent=m3)
    assert all(len(segments(r)) == 1 and "segments" not in r for r in m4["partitions"])
    check_same_as_scratch(tmp, root, m4, t4, "v4")


def test_a_corrupted_tombstones_file_is_refused(v1) -> None:
    tmp, root0, t1, m1 = v1
    import shutil

    root = tmp / "corrupt"
    shutil.copytree(root0, root)
    t2 = dict(t1)
    t2["d050"] = "edited fifty"
    m2 = ingest(root, write(tmp / "in-c2", t2), parent=m1)
    rec = m2["partitions"][passage_id("d050") % P]
    tomb = root / segments(rec)[1]["tombstones"]["file"]
    data = bytearray(tomb.read_bytes())
    data[len(data) // 2] ^= 0x01
    tomb.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="tombstones"):
        verify_partition(CFG, str(root), rec, "the test")
    with pytest.raises(IntegrityError, match="tombstones"):
        live_table(S, str(root), rec)


def fingerprinted(root: Path, d: Path, parent: Any = None, compact_fraction: float = 0.5) -> Dict[str, Any]:
    """An ingest with the input files' sha256 (as the benchmark stage runs it), so unchanged files are reused."""
    listed = list_corpus_files(S, [str(p) for p in sorted(d.iterdir())])
    fp = fingerprint_sources_cached(CFG, listed, {})
    return ingest_corpus(CFG, str(root), listed, num_partitions=P, parent=parent, sources=fp.sources, num_cpus=1.0,
                         compact_fraction=compact_fraction)


def test_appended_files_reduce_only_their_rows_and_equal_a_rebuild(v1) -> None:
    """New files after the old ones: each touched partition reduces only the new chunks against its parent's
    rows (duplicates of old docids lose to them, with the winner's place in the reason; duplicates within
    the new file too; a bad row is set aside) and equals a from-scratch ingest, quarantine files included."""
    tmp, _, t1, _ = v1
    d = write(tmp / "in-append", t1)
    root = tmp / "append"
    m1 = fingerprinted(root, d)
    new = [{"docid": f"z{i}", "title": "T", "text": f"appended {i}"} for i in range(6)]
    new += [{"docid": "d007", "title": "T", "text": "a duplicate of an old passage"},
            {"docid": "z2", "title": "T", "text": "a duplicate within the new file"},
            {"docid": "z-empty", "title": "T", "text": "  "}]
    (d / "z.jsonl").write_text("\n".join(json.dumps(r) for r in new) + "\n")
    m2 = fingerprinted(root, d, parent=m1)
    touched = sorted({passage_id(f"z{i}") % P for i in range(6)})
    # every partition with a new input: new rows, the duplicate of d007, and z.jsonl's quarantine (chunk 1 -> 1 % P)
    assert m2["inputs"]["partitions_appended"] == sorted(set(touched) | {passage_id("d007") % P, 1 % P})
    assert m2["inputs"]["parsed"] == [str(d / "z.jsonl")]
    assert m2["changes"] == {"added": 6, "changed": 0, "removed": 0, "unchanged": N}
    scratch = fingerprinted(tmp / "append-scratch", d, compact_fraction=0.0)
    assert live(root, m2).equals(one_file(tmp / "append-scratch", scratch))
    for k in ("rows", "corpus_hash", "quarantine"):
        assert m2[k] == scratch[k], k
    assert m2["inputs"]["partitions"] == scratch["inputs"]["partitions"]
    reasons = pq.read_table(root / m2["quarantine"][0]["file"]) if len(m2["quarantine"]) == 1 else \
        pa.concat_tables([pq.read_table(root / q["file"]) for q in m2["quarantine"]])
    assert sorted(reasons["reason"].to_pylist()) == sorted([f"duplicate docid (first at {d / 'c.jsonl'}:8)",
                                                            f"duplicate docid (first at {d / 'z.jsonl'}:3)", "empty text"])
    for p in touched:
        segs = segments(m2["partitions"][p])
        assert len(segs) == 2 and "tombstones" not in segs[1]
        assert pq.read_table(root / segs[1]["file"])["docid"].to_pylist() == sorted(
            (f"z{i}" for i in range(6) if passage_id(f"z{i}") % P == p), key=passage_id)
