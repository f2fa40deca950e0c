"""Index shards held once: built from files without serialising, searched memory-mapped, updated as rebuilt."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from xqg_ray.arrow_utils import vectors_to_arrow
from xqg_ray.config import StorageConfig
from xqg_ray.retrieval import index as rindex
from xqg_ray.retrieval.augment import augment
from xqg_ray.retrieval.index import build_index, index_to_bytes, read_index_file, rows_to_add, system_vectors, update_index, write_index_file
from xqg_ray.schemas import PASSAGE, embeddings_schema, gen_kind
from xqg_ray.stages.index import build_shard
from xqg_ray.stages.records import ShardJob, ShardSystem
from xqg_ray.stages.reuse import diff_versions
from xqg_ray.stages.search import ShardSearcher
from xqg_ray.store.integrity import IntegrityError, sha256_bytes, staging_path, verified_local_file, write_file_committed, write_table_committed
from xqg_ray.store.storage import Storage

DIM = 8


def mapped(path: str) -> bool:
    """Whether ``path`` is memory-mapped into this process (Linux: /proc/self/maps names every mapped file)."""
    with open("/proc/self/maps") as f:
        return any(line.rstrip("\n").endswith(" " + os.path.realpath(path)) for line in f)


def _committed_index(tmp_path, n=500, factory="Flat"):
    rng = np.random.default_rng(1)
    x, ids = rng.normal(size=(n, DIM)).astype(np.float32), rng.choice(10**12, n, replace=False).astype(np.int64)
    index = build_index(x, ids, DIM, factory)
    storage, root = Storage(), str(tmp_path)
    local = staging_path(storage, root, "index/a/s-0.faiss")
    write_index_file(index, local)
    return index, write_file_committed(storage, root, "index/a/s-0.faiss", local), x


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_search_actor_maps_its_shard_file(tmp_path, factory):
    """The searcher's index is the committed file memory-mapped (named in /proc/self/maps: FAISS
    reads a non-mapped index into its own buffers and closes the file), and answers as the built one.

    A mapping is the robust check: RSS would count the file's pages once touched, and the
    page cache is shared, so 'RSS did not grow' says little on a loaded machine."""
    index, rec, x = _committed_index(tmp_path, factory=factory)
    path = os.path.join(str(tmp_path), rec["file"])
    assert not mapped(path)
    s = ShardSearcher()
    s.load(str(tmp_path), StorageConfig(), {0: {"a": rec}})
    assert mapped(path)
    got = s.search("a", 0, x[:20], 0, 20, 5)
    want = index.search(x[:20], 5)
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0])
    assert not hasattr(s, "data") and set(vars(s)) == {"indexes", "load_seconds", "work_seconds"}  # no bytes kept
    # Released after its search stage (the local cluster keeps the actor for the next run), it maps nothing.
    s.release()
    assert not mapped(path) and s.indexes == {}
    del s
    # Read without mmap (an update's read), the file is not kept mapped.
    read_index_file(path)
    assert rec["bytes"] == os.path.getsize(path) and rec["sha256"] == sha256_bytes(index_to_bytes(index))


def test_committed_file_is_verified_by_streaming(tmp_path):
    """write_file_committed: the record of the file's bytes, the staging file gone; a changed
    file is an IntegrityError line naming it, a missing one too."""
    storage, root = Storage(), str(tmp_path)
    local = staging_path(storage, root, "x/f.bin")
    with open(local, "wb") as f:
        f.write(b"abc" * 1000)
    rec = write_file_committed(storage, root, "x/f.bin", local)
    assert rec == {"file": "x/f.bin", "sha256": sha256_bytes(b"abc" * 1000), "bytes": 3000}
    assert not os.path.exists(local) and os.listdir(tmp_path / "x") == ["f.bin"]
    assert verified_local_file(storage, root, rec, str(tmp_path / "cache")) == str(tmp_path / "x" / "f.bin")
    (tmp_path / "x" / "f.bin").write_bytes(b"abd" * 1000)
    with pytest.raises(IntegrityError, match=r"f\.bin does not match its sha256 in the m manifest: .* delete it and rerun"):
        verified_local_file(storage, root, rec, str(tmp_path / "cache"), where="the m manifest")
    os.remove(tmp_path / "x" / "f.bin")
    with pytest.raises(IntegrityError, match=r"f\.bin is missing but named by its commit record"):
        verified_local_file(storage, root, rec, str(tmp_path / "cache"))


def _emb_files(storage, root, tag, ids, hashes, pv, gv, parts=3):
    recs = []
    for p in range(parts):
        m = ids % parts == p
        k, h = int(m.sum()), [x for x, keep in zip(hashes, m) if keep]
        t = pa.table({"kind": [PASSAGE] * k + [gen_kind("g")] * k, "src": [""] * k + ["g"] * k,
                      "id": np.concatenate([ids[m], ids[m]]), "content_hash": h + h,
                      "vector": vectors_to_arrow(np.concatenate([pv[m], gv[m]])),
                      "count": np.r_[np.zeros(k, np.int32), (ids[m] % 4).astype(np.int32)],
                      "slots": pa.nulls(2 * k, pa.list_(pa.list_(pa.float32(), DIM))), "slot_counts": pa.nulls(2 * k, pa.list_(pa.int32()))},
                     schema=embeddings_schema(DIM))
        recs.append(write_table_committed(storage, root, f"emb/{tag}/p-{p}.parquet", t))
    return recs


def _job(root, recs, tag, prior=None):
    systems = [ShardSystem(name=name, generator=gen, alpha=0.3, aggregation="mean", n=0, stage=f"index/{name}", label="s-00000", key=tag,
                           out=f"index/{name}/{tag}.faiss", ids_out=f"index/{name}/{tag}.ids.parquet", prior=(prior or {}).get(name))
               for name, gen in (("baseline", ""), ("xqg", "g"))]
    return ShardJob(root=root, shard=0, emb_files=recs, partitions=list(range(len(recs))), num_partitions=len(recs), systems=systems,
                    dim=DIM, factory="Flat", metric="ip", threads=1).to_json()


@pytest.mark.parametrize("read_batch_bytes", [None, 256])
def test_build_and_update_never_serialise(tmp_path, monkeypatch, read_batch_bytes):
    """The build task writes index files with faiss.write_index: serialize_index and index_to_bytes are
    never called (they would copy the whole shard twice in memory); the files hold the same bytes
    they would give, and a 1% update's shard equals a rebuild of the same version.  Also with the
    embeddings files read a few rows at a time (256 bytes: a passage's query rows then come in
    another batch than its E(p) row)."""
    import faiss

    from xqg_ray.stages import index as stage_index

    if read_batch_bytes is not None:
        monkeypatch.setattr(stage_index, "READ_BATCH_BYTES", read_batch_bytes)
        real, sizes = stage_index.live_batches, []

        def recorded(*a, **k):
            for t in real(*a, **k):
                sizes.append(t.num_rows)
                yield t
        monkeypatch.setattr(stage_index, "live_batches", recorded)

    def refuse(*a, **k):
        raise AssertionError("the index stage serialised an index in memory")

    storage, root = Storage(), str(tmp_path)
    rng = np.random.default_rng(5)
    ids = rng.choice(10**12, 300, replace=False).astype(np.int64)
    hashes = [f"h{i}" for i in ids]
    pv, gv = rng.normal(size=(300, DIM)).astype(np.float32), rng.normal(size=(300, DIM)).astype(np.float32)
    monkeypatch.setattr(faiss, "serialize_index", refuse)
    monkeypatch.setattr(rindex, "index_to_bytes", refuse)
    v1 = build_shard(_job(root, _emb_files(storage, root, "v1", ids, hashes, pv, gv), "v1"), StorageConfig())
    assert [(r["system"], r["mode"], r["ntotal"]) for r in v1] == [("baseline", "built", 300), ("xqg", "built", 300)]
    # v2: 3 removed, 3 changed, 4 added
    keep = np.ones(300, bool)
    keep[:3] = False
    ids2 = np.r_[ids[keep], rng.choice(10**12, 4).astype(np.int64) + 10**12]
    hashes2 = [h + ("'" if j < 3 else "") for j, h in enumerate(hashes[3:])] + [f"n{i}" for i in ids2[-4:]]
    pv2 = np.r_[pv[keep], rng.normal(size=(4, DIM)).astype(np.float32)]
    gv2 = np.r_[gv[keep], rng.normal(size=(4, DIM)).astype(np.float32)]
    pv2[:3] += 1.0
    recs2 = _emb_files(storage, root, "v2", ids2, hashes2, pv2, gv2)
    prior = {r["system"]: {"index": {k: r[k] for k in ("file", "sha256", "bytes")}, "ids": r["ids"]} for r in v1}
    v2 = build_shard(_job(root, recs2, "v2", prior), StorageConfig())
    assert [(r["mode"], r["added"], r["removed"], r["ntotal"]) for r in v2] == [("updated", 7, 6, 301)] * 2
    rebuilt = build_shard(_job(root, recs2, "v3"), StorageConfig())
    if read_batch_bytes is not None:
        assert max(sizes) <= 4 and len(sizes) > 100, (max(sizes), len(sizes))
    monkeypatch.undo()
    q = rng.normal(size=(30, DIM)).astype(np.float32)
    for upd, reb in zip(v2, rebuilt):
        assert upd["ids"]["sha256"] == reb["ids"]["sha256"]  # the same sidecar bytes
        a, b = (read_index_file(os.path.join(root, r["file"])) for r in (upd, reb))
        (da, ia), (db, ib) = a.search(q, 301), b.search(q, 301)
        assert np.array_equal(ia, ib) and np.array_equal(da, db)
        assert reb["sha256"] == sha256_bytes(index_to_bytes(b))


def test_system_vectors_from_parts_equal_one_sorted_augment(monkeypatch):
    """Parts in any order, placed by id, augmented a few rows at a time: the same bits as augmenting
    the sorted whole at once; query rows for an id without a passage are refused."""
    rng = np.random.default_rng(2)
    ids = rng.permutation(40).astype(np.int64) * 11
    pv, gv = rng.normal(size=(40, DIM)).astype(np.float32), rng.normal(size=(40, DIM)).astype(np.float32)
    counts = (ids % 3).astype(np.int32)

    def ptab(s):
        return pa.table({"id": ids[s], "content_hash": [f"h{i}" for i in ids[s]], "vector": vectors_to_arrow(pv[s])})

    def gtab(s):
        return pa.table({"id": ids[s], "vector": vectors_to_arrow(gv[s]), "count": counts[s]})

    monkeypatch.setattr(rindex, "AUGMENT_CHUNK_BYTES", 3 * 8 * DIM)  # 3 rows at a time
    system = {"generator": "g", "alpha": 0.3, "aggregation": "mean", "n": 0}
    got_ids, got_h, got = system_vectors([ptab(slice(0, 17)), ptab(slice(17, 40))], [gtab(slice(30, 40)), gtab(slice(0, 30))], system, DIM)
    o = np.argsort(ids)
    assert got_ids.tolist() == sorted(ids.tolist()) and got_h.to_pylist() == [f"h{i}" for i in ids[o]]
    assert np.array_equal(got, augment(pv[o], gv[o], counts[o], 0.3, "mean"))
    base = system_vectors([ptab(slice(0, 40))], [], {"generator": ""}, DIM)[2]
    assert np.array_equal(base, pv[o])
    none = ptab(slice(0, 40)).filter(pa.array(np.zeros(40, bool)))  # a file with no rows to add: no chunks
    e_ids, e_h, e = system_vectors([none, none], [gtab(slice(0, 0))], system, DIM)
    assert (e_ids.tolist(), e_h.to_pylist(), e.shape) == ([], [], (0, DIM))
    with pytest.raises(ValueError, match="generator g: 1 query rows have ids not in the passage embeddings"):
        system_vectors([ptab(slice(1, 40))], [gtab(slice(0, 40))], system, DIM)


def test_update_chain_equals_rebuild():
    """add, change, remove, then all three at once: after each step the updated index answers exactly
    as one built from scratch on that version, and rows_to_add splits as diff_versions does."""
    rng = np.random.default_rng(9)
    ids = np.sort(rng.choice(10**9, 200, replace=False)).astype(np.int64)
    vecs = {int(i): rng.integers(-3, 4, DIM).astype(np.float32) for i in ids}  # small integers: exact scores
    hashes = {int(i): "v0" for i in ids}
    index = build_index(np.stack([vecs[int(i)] for i in ids]), ids, DIM)
    q = rng.integers(-3, 4, (25, DIM)).astype(np.float32)
    fresh = iter(range(10**9 + 1, 10**9 + 1000))
    steps = [
        ("add", [], [], 5),
        ("change", [], list(ids[10:14]), 0),
        ("remove", list(ids[20:27]), [], 0),
        ("all", list(ids[30:33]), list(ids[40:42]), 3),
    ]
    for what, gone, changed, n_new in steps:
        old_ids = np.array(sorted(hashes), np.int64)
        old_h = pa.array([hashes[i] for i in old_ids.tolist()], pa.string())
        for i in gone:
            del hashes[int(i)], vecs[int(i)]
        for i in changed:
            hashes[int(i)] = hashes[int(i)] + "'"
            vecs[int(i)] = rng.integers(-3, 4, DIM).astype(np.float32)
        for _ in range(n_new):
            i = next(fresh)
            hashes[i], vecs[i] = "v0", rng.integers(-3, 4, DIM).astype(np.float32)
        new_ids = np.array(sorted(hashes), np.int64)
        new_h = pa.array([hashes[i] for i in new_ids.tolist()], pa.string())
        add = rows_to_add(old_ids, old_h, new_ids, new_h)
        remove = old_ids[rows_to_add(new_ids, new_h, old_ids, old_h)]
        d_remove, d_add = diff_versions(pa.table({"id": old_ids, "content_hash": old_h}), pa.table({"id": new_ids, "content_hash": new_h}))
        assert np.array_equal(np.sort(d_remove), remove) and np.array_equal(d_add, add), what
        assert (len(remove), int(add.sum())) == (len(gone) + len(changed), len(changed) + n_new), what
        x = np.stack([vecs[i] for i in new_ids.tolist()])
        assert update_index(index, remove, x[add], new_ids[add])
        rebuilt = build_index(x, new_ids, DIM)
        assert index.ntotal == rebuilt.ntotal == len(new_ids)
        (d1, i1), (d2, i2) = index.search(q, len(new_ids)), rebuilt.search(q, len(new_ids))
        assert np.array_equal(d1, d2), what
        for r in range(len(q)):  # ties may come in another order: the same ids at each score
            for s in np.unique(d1[r]):
                assert sorted(i1[r][d1[r] == s].tolist()) == sorted(i2[r][d2[r] == s].tolist()), what
