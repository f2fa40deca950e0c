"""The distributed corpus ingest (xqg_ray.ingest) gives exactly what the single-process reader gives.

One mixed corpus (JSONL, JSONL.gz, TSV, TSV.gz, Parquet with several row
groups) with planted bad rows and duplicates is ingested with a tiny
``chunk_bytes`` (many chunks per file) and compared row by row with
``read_corpus``; snapshots, incremental updates, integrity and the corpus
limit are checked on the same data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xqg_ray.config import StorageConfig
from xqg_ray.benchmark.corpus import CLEAN_SCHEMA, QUARANTINE_SCHEMA, CorpusError, read_corpus
from xqg_ray.ids import passage_id, seed_for
from xqg_ray.ingest import KeepSpec, fingerprint_sources, ingest_corpus
from xqg_ray.store.integrity import IntegrityError
from xqg_ray.store.sealed import read_sealed
from xqg_ray.store.storage import Storage

try:  # works whether or not tests/ is a package
    from tests.helpers_data import string_array_unchecked, write_lines
except ImportError:  # pragma: no cover
    from helpers_data import string_array_unchecked, write_lines

S = Storage()
CFG = StorageConfig()
P = 4
CHUNK = 300  # bytes: several chunks per file


def row(docid: Any, text: Any = None, title: Any = "T") -> Dict[str, Any]:
    return {"docid": docid, "title": title, "text": text if text is not None else f"passage {docid}"}


def build_corpus(d: Path) -> None:
    a: List[Any] = [row(f"a{i}") for i in range(30)]
    a[5] = b'{"docid": "bad-utf8", "title": "T", "text": "caf\xe9"}'  # line 6
    a[8] = '{"docid": "broken", "title": "T", "text": "unterminated'  # line 9
    a[11] = row("a-empty", "   ")  # line 12
    a[14] = row("tab\tid")  # line 15: tab in docid (JSON escape)
    a[17] = row("nl\nid")  # line 18: newline in docid (JSON escape)
    a[20] = row("a-int-text", 123)  # line 21: text is not a string
    a[23] = row("a3", "dup within file")  # line 24
    a[26] = ""  # line 27: blank
    a[27] = b'{"docid": "late-bad", "text": "x\xff", "title": "T"}'  # line 28, middle of a later chunk
    a[29] = row("a1", "dup again")  # line 30
    raw_a = b"\xef\xbb\xbf" + b"".join(
        (x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode()) + (b"\r\n" if i % 3 else b"\n")
        for i, x in enumerate(a))
    (d / "a.jsonl").write_bytes(raw_a)
    b = [row(f"b{i}") for i in range(12)] + [row("a2", "cross-file dup"), row("b3", "dup in gz"), "[1]"]
    (d / "b.jsonl.gz").write_bytes(gzip.compress(b"".join(json.dumps(x).encode() + b"\n" if isinstance(x, dict) else x.encode() + b"\n" for x in b)))
    c = [b"id\ttext\ttitle"] + [f"c{i}\tpassage c{i}\tTitle {i}".encode() for i in range(25)]
    c[4] = b"c-short\tonly two"  # line 5
    c[9] = b'c-quoted\t"a ""quoted"" text"\tQ'  # line 10
    c[14] = b"a4\tcross-file dup from tsv\tT"  # line 15
    c[18] = b"c-sp ace\ttext\tT"  # line 19: space in docid
    c[22] = b"c5\tdup in later chunk\tT"  # line 23
    write_lines(d / "c.tsv", c, eol=b"\r\n")
    e = [b"docid\ttitle\ttext"] + [f"e{i}\tT\tpassage e{i}".encode() for i in range(8)] + [b"e1\tT\tdup", b"e-ctl\x01\tT\tx"]
    (d / "d.tsv.gz").write_bytes(gzip.compress(b"\n".join(e) + b"\n"))
    ids = [f"p{i}" for i in range(20)] + ["c7", "p3"]
    texts = [f"passage p{i}".encode() for i in range(20)] + [b"dup of tsv", b"dup in later row group"]
    texts[9] = b"bad \xff utf8"
    texts[12] = b"  "
    t = pa.table({"docid": ids, "title": ["T"] * len(ids), "text": string_array_unchecked(texts)})
    pq.write_table(t, d / "e.parquet", row_group_size=5)


def ingest(root: Path, d: Path, **kw: Any) -> Dict[str, Any]:
    kw.setdefault("num_partitions", P)
    kw.setdefault("chunk_bytes", CHUNK)
    kw.setdefault("num_cpus", 1.0)  # fewer worker processes to start on a small test machine
    return ingest_corpus(kw.pop("storage_cfg", CFG), str(root), str(d), **kw)


def parts_table(root: Path, m: Dict[str, Any]) -> pa.Table:
    return pa.concat_tables([pq.read_table(root / r["file"]) for r in m["partitions"]]).sort_by("id")


def quarantine_rows(root: Path, m: Dict[str, Any], files: List[str]) -> List[tuple]:
    q = pa.concat_tables([pq.read_table(root / r["file"]) for r in m["quarantine"]])
    assert q.schema.equals(QUARANTINE_SCHEMA)
    rows = [(r["source"], r["line"], r["docid"], r["reason"], r["raw"]) for r in q.to_pylist()]
    return sorted(rows, key=lambda r: (files.index(r[0]), r[1]))


@pytest.fixture(scope="module")
def base(tmp_path_factory, ray_local):
    d = tmp_path_factory.mktemp("corpus")
    build_corpus(d)
    root = tmp_path_factory.mktemp("out")
    return d, root, ingest(root, d)


def test_distributed_equals_single_process(base) -> None:
    d, root, m = base
    local = read_corpus(S, str(d))
    assert parts_table(root, m).equals(local.clean.sort_by("id"))
    q = local.quarantine.to_pylist()
    assert quarantine_rows(root, m, local.files) == [(r["source"], r["line"], r["docid"], r["reason"], r["raw"]) for r in q]
    assert m["rows"] == {"read": local.rows_read, "kept": local.clean.num_rows, "quarantined": len(q),
                         "blank_lines": local.blank_lines, "limited_out": 0}
    assert m["rows"]["read"] == m["rows"]["kept"] + m["rows"]["quarantined"]
    assert (m["rows"]["kept"], m["rows"]["quarantined"], m["rows"]["blank_lines"]) == (79, 22, 1)
    assert m["changes"] == {"added": 79, "changed": 0, "removed": 0, "unchanged": 0}
    assert m["parent"] is None and read_sealed(S, str(root), f"corpus/snapshots/{m['snapshot']}.json") == m
    assert not (root / "corpus" / "staging").exists()


def test_exact_lines_and_reasons(base) -> None:
    d, root, m = base
    files = [str(d / f) for f in ("a.jsonl", "b.jsonl.gz", "c.tsv", "d.tsv.gz", "e.parquet")]
    got = {(r[0], r[1]): (r[2], r[3]) for r in quarantine_rows(root, m, files)}
    a, c, e = files[0], files[2], files[4]
    assert got[(a, 15)] == ("tab\tid", "docid contains whitespace or control characters")
    assert got[(a, 18)] == ("nl\nid", "docid contains whitespace or control characters")
    assert got[(a, 21)] == ("a-int-text", "text is not a string (int)")
    assert got[(a, 24)] == ("a3", f"duplicate docid (first at {a}:4)")
    # line 28 starts in a late chunk: its number and its file offset must be exact
    raw_a = (d / "a.jsonl").read_bytes()
    start = sum(len(x) + 1 for x in raw_a.split(b"\n")[:27])
    k = b'{"docid": "late-bad", "text": "x\xff'.index(b"\xff")
    assert got[(a, 28)] == (None, f"invalid UTF-8 at byte {k} of the line (file offset {start + k}): invalid start byte")
    assert got[(a, 30)] == ("a1", f"duplicate docid (first at {a}:2)")
    assert got[(files[1], 13)] == ("a2", f"duplicate docid (first at {a}:3)")
    assert got[(c, 19)] == ("c-sp ace", "docid contains whitespace or control characters")
    assert got[(c, 23)] == ("c5", f"duplicate docid (first at {c}:7)")
    assert got[(files[3], 11)] == ("e-ctl\x01", "docid contains whitespace or control characters")
    assert got[(e, 21)] == ("c7", f"duplicate docid (first at {c}:9)")
    assert got[(e, 22)] == ("p3", f"duplicate docid (first at {e}:4)")


def test_partition_files(base) -> None:
    _, root, m = base
    assert [r["partition"] for r in m["partitions"]] == list(range(P))
    h = hashlib.sha256()
    for r in m["partitions"]:
        data = (root / r["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"] and len(data) == r["bytes"]
        t = pq.read_table(root / r["file"])
        assert t.schema.equals(CLEAN_SCHEMA) and t.num_rows == r["rows"]
        ids = t.column("id").to_pylist()
        assert ids == sorted(ids) and all(i % P == r["partition"] for i in ids)
        digest = hashlib.sha256("".join(f"{i}:{c}\n" for i, c in zip(ids, t.column("content_hash").to_pylist())).encode()).hexdigest()
        assert digest == r["digest"] and r["file"] == f"corpus/parts/p-{r['partition']:05d}-{digest[:16]}.parquet"
        h.update(f"{r['partition']}:{digest}\n".encode())
    assert m["corpus_hash"] == h.hexdigest()
    ident = [m["corpus_hash"], None, [q["sha256"] for q in m["quarantine"]], m["sources"], m["rows"], m["limit"]]
    assert m["snapshot"] == hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_incremental_update(base, tmp_path: Path) -> None:
    d, root0, m0 = base
    root = tmp_path / "out"
    shutil.copytree(root0, root)
    d2 = tmp_path / "corpus"
    shutil.copytree(d, d2)
    lines = (d2 / "a.jsonl").read_bytes().split(b"\n")
    # edit a0 and a2, delete a6 a7 a9 (all in a.jsonl, all clean before)
    for i, docid in ((0, "a0"), (2, "a2")):
        assert docid.encode() in lines[i]
        lines[i] = (b"\xef\xbb\xbf" if i == 0 else b"") + json.dumps(row(docid, "edited text")).encode() + lines[i][-1:].replace(b"}", b"")
    for i in (9, 7, 6):
        del lines[i]
    (d2 / "a.jsonl").write_bytes(b"\n".join(lines))
    write_lines(d2 / "f.jsonl", [row("f-new-1"), row("f-new-2"), row("a10", "dup of a10")])
    m = ingest(root, d2, parent=m0)
    assert m["changes"] == {"added": 2, "changed": 2, "removed": 3, "unchanged": 74}
    assert m["parent"] == m0["snapshot"] and m["snapshot"] != m0["snapshot"]
    assert parts_table(root, m).equals(read_corpus(S, str(d2)).clean.sort_by("id"))
    touched = {passage_id(x) % P for x in ("a0", "a2", "a6", "a7", "a9", "f-new-1", "f-new-2")}
    for r0, r in zip(m0["partitions"], m["partitions"]):
        assert (r == r0) == (r["partition"] not in touched)
    # the same input again with the new snapshot as parent: nothing changed, every record reused
    again = ingest(root, d2, parent=m)
    assert again["changes"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": 78}
    assert again["partitions"] == m["partitions"] and again["parent"] == m["snapshot"]


def test_corrupted_parent_partition(base, tmp_path: Path) -> None:
    d, root0, m0 = base
    root = tmp_path / "out"
    shutil.copytree(root0, root)
    rec = m0["partitions"][2]
    path = root / rec["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{path}.*does not match its sha256 in corpus snapshot {m0['snapshot']}"):
        ingest(root, d, parent=m0)


def test_empty_and_all_quarantined(ray_local, tmp_path: Path) -> None:
    d = tmp_path / "empty"
    write_lines(d / "x.jsonl", ["", "  "])
    with pytest.raises(CorpusError, match=r"^the corpus is empty: 0 rows read from 1 file\(s\) \(2 blank line\(s\)\)"):
        ingest(tmp_path / "o1", d)
    bad = tmp_path / "bad"
    write_lines(bad / "x.jsonl", [row("a", ""), row("b c"), b'{"docid": "x", "title": "t", "text": "\xff"}'])
    with pytest.raises(CorpusError) as e:
        ingest(tmp_path / "o2", bad)
    msg = str(e.value)
    assert msg.startswith(f"no usable passages: 3 row(s) read, 3 quarantined (see {tmp_path / 'o2' / 'corpus/quarantine'}: ")
    assert "\n" not in msg
    assert not (tmp_path / "o2" / "corpus" / "snapshots").exists()


def test_keep_spec_matches_plain_rule(base, tmp_path: Path) -> None:
    d, _, _ = base
    clean = read_corpus(S, str(d)).clean
    docids = clean.column("docid").to_pylist()
    golds = ["c4", "p0", "b7", "not-in-corpus"]
    keep = KeepSpec(golds=golds, limit=20, seed=13)
    m = ingest(tmp_path / "out", d, keep=keep)
    rest = sorted((seed_for(13, x), x) for x in docids if x not in golds)[: 20 - len(golds)]
    expected = {x for x in docids if x in golds} | {x for _, x in rest}
    got = parts_table(tmp_path / "out", m).column("docid").to_pylist()
    assert sorted(got) == sorted(expected) and len(got) == 19
    assert m["limit"] == {"requested": 20, "golds": 4, "golds_found": 3, "exceeded_by_golds": False}
    assert m["rows"]["limited_out"] == len(docids) - 19
    assert m["rows"]["read"] == m["rows"]["kept"] + m["rows"]["quarantined"] + m["rows"]["limited_out"]


def test_fingerprint_sources(base) -> None:
    d, _, _ = base
    files = [str(d / "c.tsv"), str(d / "b.jsonl.gz"), str(d / "a.jsonl")]
    got = fingerprint_sources(CFG, files)
    expected = [{"uri": f, "bytes": Path(f).stat().st_size, "sha256": hashlib.sha256(Path(f).read_bytes()).hexdigest()}
                for f in files]
    assert got == expected
    # The same records, in input order, when the (stated) sizes put each file in a task of its own.
    from xqg_ray.ingest.snapshot import HASH_GROUP_BYTES

    assert fingerprint_sources(CFG, files, sizes=[HASH_GROUP_BYTES, 1, HASH_GROUP_BYTES]) == expected


def test_small_files_share_a_hashing_task_large_ones_get_their_own() -> None:
    from xqg_ray.ingest.snapshot import hash_groups

    files = ["a", "b", "c", "big", "d", "e", "huge", "f"]
    sizes = [10, 20, 30, 95, 50, 50, 300, 1]
    assert hash_groups(files, sizes, group_bytes=100) == [["a", "b", "c"], ["big"], ["d", "e"], ["huge"], ["f"]]
    assert hash_groups(files, sizes, group_bytes=1000) == [files]
    assert hash_groups([], [], group_bytes=100) == []


def test_s3_inputs_and_root(base, s3_endpoint) -> None:
    d, _, m_local = base
    cfg = StorageConfig(s3_endpoint=s3_endpoint, access_key="testing", secret_key="testing")
    s3 = Storage(cfg)
    client = pytest.importorskip("boto3").client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    for f in sorted(d.iterdir()):
        # boto3, not Storage.write_bytes: pyarrow's output stream would gzip a ".gz" name a second time
        client.put_object(Bucket="xqg-ingest", Key=f"corpus/{f.name}", Body=f.read_bytes())
    root = "s3://xqg-ingest/runs/r1"
    m = ingest(root, "s3://xqg-ingest/corpus", storage_cfg=cfg)
    assert [r["digest"] for r in m["partitions"]] == [r["digest"] for r in m_local["partitions"]]
    assert m["corpus_hash"] == m_local["corpus_hash"] and m["rows"] == m_local["rows"]
    assert all(not r["file"].startswith("s3://") for r in m["partitions"] + m["quarantine"])
    assert read_sealed(s3, root, f"corpus/snapshots/{m['snapshot']}.json") == m
    assert pq.read_table(pa.BufferReader(s3.read_bytes(f"{root}/{m['partitions'][0]['file']}"))).num_rows == m["partitions"][0]["rows"]
    assert not s3.list_files(f"{root}/corpus/staging")


def test_worker_error_reaches_caller_as_one_line(ray_local, tmp_path: Path) -> None:
    """A .gz JSONL file is parsed whole in a Ray Data worker, which finds the missing column."""
    d = tmp_path / "c"
    d.mkdir()
    (d / "x.jsonl.gz").write_bytes(gzip.compress(b'{"docid": "a", "title": "t", "body": "x"}\n'))
    with pytest.raises(CorpusError) as e:
        ingest(tmp_path / "out", d)
    assert type(e.value) is CorpusError
    assert str(e.value) == f"{d / 'x.jsonl.gz'}: missing required column(s) text; columns found: ['docid', 'title', 'body']"


def test_truncated_gz_reaches_caller_as_one_line(ray_local, tmp_path: Path) -> None:
    """A cut .gz file is read whole in a Ray Data worker: one CorpusError naming the file, no Ray traceback."""
    d = tmp_path / "c"
    d.mkdir()
    (d / "a.jsonl").write_text(json.dumps(row("a1")) + "\n")
    body = b"".join(json.dumps(row(f"g{i}")).encode() + b"\n" for i in range(500))
    data = gzip.compress(body)
    (d / "b.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusError) as e:
        ingest(tmp_path / "out", d)
    assert type(e.value) is CorpusError
    assert str(e.value) == (f"{d / 'b.jsonl.gz'}: the .gz file is truncated or corrupt (Truncated compressed stream); "
                            "download or compress it again (gzip -t FILE checks a copy)")
    with pytest.raises(CorpusError) as single:  # the single-process reader says the same
        read_corpus(S, str(d))
    assert str(single.value) == str(e.value)


def test_max_passage_chars_in_the_distributed_ingest(ray_local, tmp_path: Path) -> None:
    d = tmp_path / "c"
    write_lines(d / "x.jsonl", [row("a", "x" * 40), row("b", "y" * 41), row("c", "short")])
    m = ingest(tmp_path / "out", d, max_passage_chars=40)
    assert sorted(parts_table(tmp_path / "out", m).column("docid").to_pylist()) == ["a", "c"]
    assert [(r[1], r[2], r[3]) for r in quarantine_rows(tmp_path / "out", m, [str(d / "x.jsonl")])] == [
        (2, "b", "text too long (41 characters > corpus.max_passage_chars=40)")]
    assert m["rows"]["read"] == 3 == m["rows"]["kept"] + m["rows"]["quarantined"]
    with pytest.raises(CorpusError, match=r"^corpus.max_passage_chars=0: must be an integer >= 1 \(default 100000\)$"):
        ingest(tmp_path / "out2", d, max_passage_chars=0)
    assert not (tmp_path / "out2").exists()
