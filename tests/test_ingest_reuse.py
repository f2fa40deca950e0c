"""An update ingest reads only the input files whose fingerprint changed, and equals a full rebuild.

Five input files (JSONL, TSV, Parquet, JSONL.gz; a cross-file duplicate and a
quarantined row planted) are ingested with their sha256 fingerprints
(``fingerprint_sources_cached``, as the benchmark stage does), then changed one
way at a time and ingested again with the first snapshot as parent.  The
manifest's ``inputs`` section says which files were parsed and which reused,
and which partitions were not reduced; every update is compared with a
from-scratch ingest of the same files (rows, partition records and shas,
quarantine, per-file records), locally and on S3 (moto, ETag stamps).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xqg_ray.benchmark.corpus import read_corpus
from xqg_ray.config import StorageConfig
from xqg_ray.ids import passage_id
from xqg_ray.ingest import CorpusError, ingest_corpus
from xqg_ray.ingest.snapshot import fingerprint_sources_cached
from xqg_ray.ingest.sources import list_corpus_files
from xqg_ray.store.integrity import IntegrityError
from xqg_ray.store.storage import Storage

P = 8
CFG = StorageConfig()
S = Storage()
NAMES = ["f0.jsonl", "f1.tsv", "f2.jsonl", "f3.parquet", "f4.jsonl.gz"]


def jl(docid: str, text: str = "") -> bytes:
    return json.dumps({"docid": docid, "title": "T", "text": text or f"passage {docid}"}).encode()


def build(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    f0 = [jl(f"a{i}") for i in range(12)] + [jl("dup", "first copy"), jl("bad", "  ")]  # "bad": empty text, quarantined
    (d / "f0.jsonl").write_bytes(b"\n".join(f0) + b"\n")
    f1 = [b"docid\ttitle\ttext"] + [f"b{i}\tT\tpassage b{i}".encode() for i in range(10)] + [b"dup\tT\tsecond copy"]
    (d / "f1.tsv").write_bytes(b"\n".join(f1) + b"\n")
    (d / "f2.jsonl").write_bytes(jl("c0") + b"\n" + jl("c1") + b"\n")  # two rows: at most two partitions
    pq.write_table(pa.table({"docid": [f"d{i}" for i in range(9)], "title": ["T"] * 9, "text": [f"passage d{i}" for i in range(9)]}),
                   d / "f3.parquet", row_group_size=4)
    (d / "f4.jsonl.gz").write_bytes(gzip.compress(b"\n".join(jl(f"e{i}") for i in range(7)) + b"\n"))


def files_of(d: Path) -> List[str]:
    return sorted(str(p) for p in d.iterdir())


def ingest(root: Any, d: Any, cache: Dict[str, Any], parent: Any = None, storage_cfg: StorageConfig = CFG,
           **kw: Any) -> Tuple[Dict[str, Any], Dict[str, Any], List[str]]:
    """(manifest, the new fingerprint cache, the files that were hashed) of one fingerprinted ingest."""
    files = [str(d)] if isinstance(d, str) else files_of(d)
    listed = list_corpus_files(Storage(storage_cfg), files)
    fp = fingerprint_sources_cached(storage_cfg, listed, cache)
    kw.setdefault("chunk_bytes", 64 << 20)
    m = ingest_corpus(storage_cfg, str(root), listed, num_partitions=P, parent=parent, sources=fp.sources, num_cpus=1.0, **kw)
    return m, fp.cache, fp.hashed


def content(m: Dict[str, Any]) -> Dict[str, Any]:
    """What must not depend on whether the snapshot was updated or built from scratch."""
    return {"partitions": m["partitions"], "quarantine": m["quarantine"], "rows": m["rows"], "corpus_hash": m["corpus_hash"],
            "sources": m["sources"], "files": m["inputs"]["files"], "partition_inputs": m["inputs"]["partitions"]}


def rows(root: Path, m: Dict[str, Any]) -> pa.Table:
    return pa.concat_tables([pq.read_table(root / r["file"]) for r in m["partitions"]]).sort_by("id")


def check_rebuild(tmp: Path, d: Path, m: Dict[str, Any], root: Path) -> None:
    """``m`` equals a from-scratch ingest of ``d`` and the single-process reader's rows."""
    scratch, _, _ = ingest(tmp / "scratch", d, {})
    assert content(m) == content(scratch)
    assert rows(root, m).equals(read_corpus(S, files_of(d)).clean.sort_by("id"))


@pytest.fixture(scope="module")
def base(tmp_path_factory, ray_local):
    d = tmp_path_factory.mktemp("reuse") / "in"
    build(d)
    root = tmp_path_factory.mktemp("reuse-out")
    m0, cache, hashed = ingest(root, d, {})
    assert hashed == files_of(d) and m0["inputs"]["parsed"] == files_of(d) and m0["inputs"]["reused"] == []
    return d, root, m0, cache


def copy(base: tuple, tmp: Path) -> Tuple[Path, Path]:
    d0, root0, _, _ = base
    d, root = tmp / "in", tmp / "out"
    shutil.copytree(d0, d)
    shutil.copytree(root0, root)
    for a, b in zip(files_of(d0), files_of(d)):  # same stamps as the originals: the fingerprint cache holds
        st = os.stat(a)
        os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    return d, root


def rebase(cache: Dict[str, Any], d0: Path, d: Path) -> Dict[str, Any]:
    """The fingerprint cache of ``d0``'s files, keyed for the same names under ``d``."""
    import hashlib

    return {hashlib.sha256(str(d / Path(f).name).encode()).hexdigest(): cache[hashlib.sha256(f.encode()).hexdigest()]
            for f in files_of(d0)}


def test_one_changed_file_of_five_is_the_only_one_parsed(base, tmp_path: Path) -> None:
    d0, _, m0, cache0 = base
    d, root = copy(base, tmp_path)
    cache = rebase(cache0, d0, d)
    parent, cache, hashed = ingest(root, d, cache)  # the copy's first snapshot: no parent, every file parsed
    assert parent["inputs"]["parsed"] == files_of(d) and hashed == []  # the stamps were kept: nothing hashed
    (d / "f2.jsonl").write_bytes(jl("c0", "edited") + b"\n" + jl("c1") + b"\n")
    m, _, hashed = ingest(root, d, cache, parent=parent)
    assert hashed == [str(d / "f2.jsonl")]
    assert m["inputs"]["parsed"] == [str(d / "f2.jsonl")]
    assert m["inputs"]["reused"] == [str(d / n) for n in ("f0.jsonl", "f1.tsv", "f3.parquet", "f4.jsonl.gz")]
    touched = {passage_id("c0") % P, passage_id("c1") % P}
    assert m["inputs"]["partitions_reused"] == [p for p in range(P) if p not in touched]
    assert m["changes"] == {"added": 0, "changed": 1, "removed": 0, "unchanged": 40}
    for r0, r in zip(parent["partitions"], m["partitions"]):
        assert (r == r0) == (r["partition"] != passage_id("c0") % P)
    check_rebuild(tmp_path, d, m, root)


def test_reused_file_is_not_read(base, tmp_path: Path) -> None:
    """A file whose stamp is unchanged is neither hashed nor parsed: garbage of the same size and mtime goes unseen."""
    d0, _, m0, cache = base
    _, root = copy(base, tmp_path)  # the parent's partition files, in a root of this test's own
    f3 = d0 / "f3.parquet"
    st, original = os.stat(f3), f3.read_bytes()
    try:
        f3.write_bytes(b"\0" * len(original))
        os.utime(f3, ns=(st.st_atime_ns, st.st_mtime_ns))
        m, _, hashed = ingest(root, d0, cache, parent=m0)
    finally:
        f3.write_bytes(original)
        os.utime(f3, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert hashed == [] and m["inputs"]["parsed"] == [] and m["inputs"]["reused"] == files_of(d0)
    assert m["inputs"]["partitions_reused"] == list(range(P))
    assert content(m) == content(m0)


def test_touched_unchanged_file_is_reused_by_its_content_hash(base, tmp_path: Path) -> None:
    d0, _, _, cache0 = base
    d, root = copy(base, tmp_path)
    parent, cache, _ = ingest(root, d, rebase(cache0, d0, d))
    f1 = d / "f1.tsv"
    os.utime(f1, ns=(os.stat(f1).st_atime_ns, os.stat(f1).st_mtime_ns + 10**9))  # touched: the stamp changes
    m, _, hashed = ingest(root, d, cache, parent=parent)
    assert hashed == [str(f1)]  # hashed again (stamp changed) ...
    assert m["inputs"]["parsed"] == [] and m["inputs"]["reused"] == files_of(d)  # ... and its sha256 is the same
    assert m["inputs"]["partitions_reused"] == list(range(P))
    assert m["changes"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": 41}
    assert content(m) == content(parent)


def test_removed_file_and_the_duplicate_it_hid(base, tmp_path: Path) -> None:
    """Removing f0 drops its ids; f1's copy of "dup" (quarantined as a duplicate before) becomes the clean row."""
    d0, _, _, cache0 = base
    d, root = copy(base, tmp_path)
    parent, cache, _ = ingest(root, d, rebase(cache0, d0, d))
    before = rows(root, parent)
    assert before.filter(pa.compute.equal(before["docid"], "dup"))["text"].to_pylist() == ["first copy"]
    (d / "f0.jsonl").unlink()
    m, _, hashed = ingest(root, d, cache, parent=parent)
    assert hashed == [] and m["inputs"]["parsed"] == [] and m["inputs"]["reused"] == files_of(d)
    after = rows(root, m)
    assert not set(after["docid"].to_pylist()) & {f"a{i}" for i in range(12)}
    assert after.filter(pa.compute.equal(after["docid"], "dup"))["text"].to_pylist() == ["second copy"]
    assert m["changes"] == {"added": 0, "changed": 1, "removed": 12, "unchanged": 28}
    assert m["rows"] == {"read": 29, "kept": 29, "quarantined": 0, "blank_lines": 0, "limited_out": 0}
    check_rebuild(tmp_path, d, m, root)


def test_chain_with_small_chunks_equals_rebuild(base, tmp_path: Path) -> None:
    """Many chunks per file; a file added before others (chunk numbers shift), one edited, one removed."""
    d0, _, _, _ = base
    d, root = copy(base, tmp_path)
    parent, cache, _ = ingest(root, d, {}, chunk_bytes=64)
    (d / "f0a.jsonl").write_bytes(jl("new1") + b"\n" + jl("dup", "third copy") + b"\n" + jl("bad2", "") + b"\n")
    (d / "f1.tsv").write_bytes((d / "f1.tsv").read_bytes() + b"b99\tT\tadded row\n")
    (d / "f3.parquet").unlink()
    m, cache, _ = ingest(root, d, cache, parent=parent, chunk_bytes=64)
    assert m["inputs"]["parsed"] == [str(d / "f0a.jsonl"), str(d / "f1.tsv")]
    assert m["inputs"]["reused"] == [str(d / n) for n in ("f0.jsonl", "f2.jsonl", "f4.jsonl.gz")]
    scratch, _, _ = ingest(tmp_path / "scratch", d, {}, chunk_bytes=64)
    assert content(m) == content(scratch)
    assert rows(root, m).equals(read_corpus(S, files_of(d)).clean.sort_by("id"))
    again, _, _ = ingest(root, d, cache, parent=m, chunk_bytes=64)  # nothing changed: nothing read, nothing reduced
    assert again["inputs"]["parsed"] == [] and again["inputs"]["partitions_reused"] == list(range(P))
    assert content(again) == content(m)


def test_corrupted_parent_partition_of_a_reused_partition(base, tmp_path: Path) -> None:
    d0, _, _, cache0 = base
    d, root = copy(base, tmp_path)
    parent, cache, _ = ingest(root, d, rebase(cache0, d0, d))
    path = root / parent["partitions"][3]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{path}.*does not match its sha256 in corpus snapshot {parent['snapshot']}"):
        ingest(root, d, cache, parent=parent)


def test_file_changed_after_fingerprint_or_while_read(base, tmp_path: Path, monkeypatch) -> None:
    d, root = copy(base, tmp_path)
    listed = files_of(d)
    fp = fingerprint_sources_cached(CFG, listed, {})
    (d / "f2.jsonl").write_bytes(jl("c0", "longer edited text") + b"\n")
    with pytest.raises(CorpusError, match=rf"^{d / 'f2.jsonl'} changed after its sha256 was taken \(\d+ bytes then, \d+ now\): rerun"):
        ingest_corpus(CFG, str(root), listed, num_partitions=P, sources=fp.sources, num_cpus=1.0)
    fp = fingerprint_sources_cached(CFG, listed, {})
    from xqg_ray.ingest import snapshot

    calls: Dict[str, int] = {}
    real = snapshot.file_stamp

    def stamp(storage: Storage, uri: str, client: Any = None) -> List[Any]:
        calls[uri] = calls.get(uri, 0) + 1
        got = real(storage, uri, client)
        return got + ["written meanwhile"] if uri.endswith("f4.jsonl.gz") and calls[uri] == 2 else got

    monkeypatch.setattr(snapshot, "file_stamp", stamp)
    with pytest.raises(CorpusError, match=rf"^{d / 'f4.jsonl.gz'} changed while the ingest read it: rerun once"):
        ingest_corpus(CFG, str(root), listed, num_partitions=P, sources=fp.sources, num_cpus=1.0)


def test_s3_update_reads_only_the_changed_object(s3_endpoint, ray_local, tmp_path: Path) -> None:
    import boto3

    cfg = StorageConfig(s3_endpoint=s3_endpoint, access_key="testing", secret_key="testing")
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    local = tmp_path / "in"
    build(local)
    prefix = "s3://xqg-ingest/reuse/in"
    for name in NAMES:
        client.put_object(Bucket="xqg-ingest", Key=f"reuse/in/{name}", Body=(local / name).read_bytes())
    root = "s3://xqg-ingest/reuse/out"
    parent, cache, _ = ingest(root, prefix, {}, storage_cfg=cfg)
    client.put_object(Bucket="xqg-ingest", Key="reuse/in/f2.jsonl", Body=jl("c0", "edited") + b"\n" + jl("c1") + b"\n")
    # f1 rewritten with the same bytes as a multipart upload: another ETag ("<md5 of md5s>-1"), so hashed, and reused
    up = client.create_multipart_upload(Bucket="xqg-ingest", Key="reuse/in/f1.tsv")
    part = client.upload_part(Bucket="xqg-ingest", Key="reuse/in/f1.tsv", UploadId=up["UploadId"], PartNumber=1,
                              Body=(local / "f1.tsv").read_bytes())
    client.complete_multipart_upload(Bucket="xqg-ingest", Key="reuse/in/f1.tsv", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    m, _, hashed = ingest(root, prefix, cache, parent=parent, storage_cfg=cfg)
    assert hashed == [f"{prefix}/f1.tsv", f"{prefix}/f2.jsonl"]
    assert m["inputs"]["parsed"] == [f"{prefix}/f2.jsonl"]
    assert m["inputs"]["reused"] == [f"{prefix}/{n}" for n in ("f0.jsonl", "f1.tsv", "f3.parquet", "f4.jsonl.gz")]
    touched = {passage_id("c0") % P, passage_id("c1") % P}
    assert m["inputs"]["partitions_reused"] == [p for p in range(P) if p not in touched]
    scratch, _, _ = ingest("s3://xqg-ingest/reuse/scratch", prefix, {}, storage_cfg=cfg)
    assert content(m) == content(scratch)


def test_quarantine_moves_with_the_chunk_numbers(base, tmp_path: Path) -> None:
    """A new first file with only a bad row: f0's quarantine goes from reducer 0 to 1 (chunk c -> c % P),
    so partitions 0 and 1 are reduced again although none of their clean rows changed."""
    d0, _, _, cache0 = base
    d, root = copy(base, tmp_path)
    parent, cache, _ = ingest(root, d, rebase(cache0, d0, d))
    assert [(r["partition"], (r["quarantine"] or {}).get("rows")) for r in parent["inputs"]["partitions"][:2]] == [(0, 1), (1, None)]
    (d / "a.jsonl").write_bytes(jl("only-bad", " ") + b"\n")
    m, _, _ = ingest(root, d, cache, parent=parent)
    assert m["inputs"]["parsed"] == [str(d / "a.jsonl")]
    assert m["inputs"]["partitions_reused"] == list(range(2, P))
    assert [(r["partition"], (r["quarantine"] or {}).get("rows")) for r in m["inputs"]["partitions"][:2]] == [(0, 1), (1, 1)]
    check_rebuild(tmp_path, d, m, root)
