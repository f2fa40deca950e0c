"""Index update cost against the change size, on the project's shard-update path, in one run.

    .venv/bin/python bench/index_update.py --n 200000 --dim 64 --factory IVF256,Flat

Builds one shard of N vectors from scratch (train + add, as a first build does),
then for changes of 0.1%, 1% and 10% of N (half added, a quarter changed, a
quarter removed) applies them the way the index stage does: ``diff_versions``
on the (id, content_hash) sidecars, then ``update_index`` (remove + add, the
trained quantizer kept).  Prints seconds per update against the rebuild of the
same new version, and checks that the updated index returns what the rebuilt
one with the same quantizer returns.
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
    a = ap.parse_args()
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


if __name__ == "__main__":
    main()
