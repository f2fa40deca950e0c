"""Index update cost against the change size, on the project's shard-update path, in one run.

    .venv/bin/python bench/index_update.py --n 200000 --dim 64 --factory IVF256,Flat

Builds one shard of N vectors from scratch (train + add, as a first build does),
then for changes of 0.1%, 1% and 10% of N (half added, a quarter changed, a
quarter removed) applies them the way the index stage does: ``diff_versions``
on the (id, content_hash) sidecars, then ``update_index`` (remove + add, the
trained quantizer kept).  Prints seconds per update against the rebuild of the
same new version, and checks that the updated index returns what the rebuilt
one with the same quantizer returns.

Then, on the index stage's own shard path (``build_system_shard``: embeddings
files -> one system's shard file, as a Ray build task runs it, here in-process),
for each of ``--sizes`` (default 10k and 100k passages, ``--shard-dim`` 16, an xQG
system with a generator): CPU-seconds of a full build, of updating it with 1%
removed + 1% added (+ 1% changed), and of rebuilding that new version from
scratch; the ratio update / rebuild should be below 1 at every size, and the
updated shard must answer as the rebuilt one does (Flat: exactly).

    .venv/bin/python bench/index_update.py --shard-only --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--factory", default="IVF256,Flat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default=None, help="passages per shard for the shard-path figures (default 10000,100000; "
                                                  "only --n when --n is below 100000, as in a quick check)")
    ap.add_argument("--shard-dim", type=int, default=16)
    ap.add_argument("--shard-factory", default="Flat")
    ap.add_argument("--repeats", type=int, default=3, help="shard-path runs per figure; the least CPU time is kept")
    ap.add_argument("--shard-only", action="store_true", help="only the shard-path figures")
    a = ap.parse_args()
    if not a.shard_only:
        faiss_level(a)
    sizes = a.sizes or ("10000,100000" if a.n >= 100_000 else str(a.n))
    for n in (int(x) for x in sizes.split(",")):
        shard_path(n, a.shard_dim, a.shard_factory, a.repeats)


def faiss_level(a: argparse.Namespace) -> None:
    """update_index against a rebuild, on in-memory indexes."""
    import faiss

    from xqg_ray.retrieval.index import build_index, index_from_bytes, index_to_bytes, update_index
    from xqg_ray.stages.reuse import diff_versions

    faiss.omp_set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    ids = np.arange(a.n, dtype=np.int64) * 7 + 3
    x = rng.normal(size=(a.n, a.dim)).astype(np.float32)
    hashes = pa.array([f"h{i}" for i in ids], pa.string())
    t = time.perf_counter()
    base = build_index(x, ids, a.dim, a.factory)
    t_build = time.perf_counter() - t
    data = index_to_bytes(base)
    print(f"full build of {a.n} vectors ({a.factory}, dim {a.dim}): {t_build:.2f} s")
    q = rng.normal(size=(200, a.dim)).astype(np.float32)
    for frac in (0.001, 0.01, 0.1):
        k = max(4, int(a.n * frac))
        removed, changed = ids[: k // 4], ids[k // 4 : k // 2]
        added = np.arange(a.n, a.n + k // 2, dtype=np.int64) * 7 + 3
        keep = ~np.isin(ids, removed)
        new_ids = np.concatenate([ids[keep], added])
        new_x = np.concatenate([x[keep], rng.normal(size=(len(added), a.dim)).astype(np.float32)])
        new_h = [f"h{i}" + ("'" if i in set(changed.tolist()) else "") for i in ids[keep]] + [f"h{i}" for i in added]
        ch = np.isin(new_ids, changed)
        new_x[ch] = rng.normal(size=(int(ch.sum()), a.dim)).astype(np.float32)
        old_t = pa.table({"id": pa.array(ids), "content_hash": hashes})
        new_t = pa.table({"id": pa.array(new_ids), "content_hash": pa.array(new_h, pa.string())})
        index = index_from_bytes(data)
        t = time.perf_counter()
        remove, add = diff_versions(old_t, new_t)
        assert update_index(index, remove, new_x[add], new_ids[add])
        t_upd = time.perf_counter() - t
        t = time.perf_counter()
        rebuilt = build_index(new_x, new_ids, a.dim, a.factory)
        t_reb = time.perf_counter() - t
        # the same answers as a from-scratch add with the *same* trained quantizer
        same_q = index_from_bytes(data)
        same_q.reset()
        same_q.add_with_ids(new_x, new_ids)
        if hasattr(index, "nprobe"):
            index.nprobe = same_q.nprobe = 16
        d1, i1 = index.search(q, 10)
        d2, i2 = same_q.search(q, 10)
        agree = float((np.sort(i1, 1) == np.sort(i2, 1)).mean())
        print(f"change {frac:.1%} ({len(remove)} removed incl. changed, {int(add.sum())} added): update {t_upd:.3f} s "
              f"= {t_upd / t_reb:.3f}x a rebuild of the new version ({t_reb:.2f} s, retrains); ids equal to a same-quantizer rebuild: {agree:.3f}; "
              f"rebuilt ntotal {rebuilt.ntotal} == updated {index.ntotal}")


def shard_path(n: int, dim: int, factory: str, repeats: int) -> None:
    """Full build, 1% update and rebuild of one xQG system's shard through ``build_system_shard``; CPU-seconds."""
    import tempfile

    import faiss

    from xqg_ray.arrow_utils import vectors_to_arrow
    from xqg_ray.retrieval.index import read_index_file
    from xqg_ray.schemas import PASSAGE, embeddings_schema, gen_kind
    from xqg_ray.stages.index import build_system_shard
    from xqg_ray.stages.records import ShardJob, ShardSystem
    from xqg_ray.store.integrity import write_table_committed
    from xqg_ray.store.storage import Storage

    faiss.omp_set_num_threads(1)
    storage, rng, parts = Storage(), np.random.default_rng(n), 4
    with tempfile.TemporaryDirectory() as root:
        def files(ids: np.ndarray, hashes: list, pv: np.ndarray, gv: np.ndarray, tag: str) -> list:
            recs = []
            for p in range(parts):
                m = ids % parts == p
                k, h = int(m.sum()), [x for x, keep in zip(hashes, m) if keep]
                t = pa.table({"kind": [PASSAGE] * k + [gen_kind("g")] * k, "src": [""] * k + ["g"] * k,
                              "id": np.concatenate([ids[m], ids[m]]), "content_hash": h + h,
                              "vector": vectors_to_arrow(np.concatenate([pv[m], gv[m]])),
                              "count": np.r_[np.zeros(k, np.int32), np.full(k, 10, np.int32)],
                              "slots": pa.nulls(2 * k, pa.list_(pa.list_(pa.float32(), dim))), "slot_counts": pa.nulls(2 * k, pa.list_(pa.int32()))},
                             schema=embeddings_schema(dim))
                recs.append(write_table_committed(storage, root, f"emb/{tag}/p-{p:05d}.parquet", t))
            return recs

        def run(recs: list, tag: str, prior) -> tuple:
            best, rec = float("inf"), None
            for r in range(repeats):
                system = ShardSystem(name="xqg", generator="g", alpha=0.3, aggregation="mean", n=0, stage="index/xqg", label="s-00000",
                                     key=f"{tag}{r}", out=f"index/{tag}{r}.faiss", ids_out=f"index/{tag}{r}.ids.parquet", prior=prior)
                job = ShardJob(root=root, shard=0, emb_files=recs, partitions=list(range(parts)), num_partitions=parts, systems=[system],
                               dim=dim, factory=factory, metric="ip", threads=1)
                t = time.process_time()
                rec = build_system_shard(storage, job, system)
                best = min(best, time.process_time() - t)
            return best, rec

        ids = np.arange(n, dtype=np.int64) * 7 + 3
        hashes = [f"h{i}" for i in ids]
        pv, gv = rng.normal(size=(n, dim)).astype(np.float32), rng.normal(size=(n, dim)).astype(np.float32)
        t_build, first = run(files(ids, hashes, pv, gv, "v1"), "v1-", None)
        k = max(1, n // 100)
        keep = np.ones(n, bool)
        keep[rng.choice(n, k, replace=False)] = False
        changed = set(rng.choice(np.flatnonzero(keep), k, replace=False).tolist())
        new_ids = np.r_[ids[keep], (n + np.arange(k, dtype=np.int64)) * 7 + 3]
        new_h = [h + ("'" if j in changed else "") for j, h in zip(np.flatnonzero(keep).tolist(), (hashes[j] for j in np.flatnonzero(keep)))]
        new_h += [f"h{i}" for i in new_ids[-k:]]
        pv2, gv2 = np.r_[pv[keep], rng.normal(size=(k, dim)).astype(np.float32)], np.r_[gv[keep], rng.normal(size=(k, dim)).astype(np.float32)]
        ch = np.isin(np.arange(len(new_ids)), [i for i, j in enumerate(np.flatnonzero(keep).tolist()) if j in changed])
        pv2[ch] = rng.normal(size=(int(ch.sum()), dim)).astype(np.float32)
        recs2 = files(new_ids, new_h, pv2, gv2, "v2")
        prior = {"index": {k2: first[k2] for k2 in ("file", "sha256", "bytes")}, "ids": first["ids"]}
        t_upd, upd = run(recs2, "v2-", prior)
        t_reb, reb = run(recs2, "v3-", None)
        assert upd["mode"] == "updated" and upd["added"] == 2 * k and upd["removed"] == 2 * k, upd
        q = rng.normal(size=(100, dim)).astype(np.float32)
        a_idx, b_idx = (read_index_file(f"{root}/{r['file']}") for r in (upd, reb))
        (da, ia), (db, ib) = a_idx.search(q, 10), b_idx.search(q, 10)
        same = bool(np.array_equal(ia, ib) and np.allclose(da, db))
        print(f"shard path, {n} passages (dim {dim}, {factory}, xQG mean): full build {t_build:.3f} CPU-s; 1% update "
              f"({2 * k} added incl. changed, {2 * k} removed) {t_upd:.3f} CPU-s; rebuild of the new version {t_reb:.3f} CPU-s; "
              f"update/rebuild {t_upd / t_reb:.2f}; updated answers == rebuilt: {same}", flush=True)


if __name__ == "__main__":
    main()
