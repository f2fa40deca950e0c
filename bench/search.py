"""Search queries/s: the project's fan-out over shard actors + merge against one bare exact index, in one run.

    .venv/bin/python bench/search.py --shards 4 --num-cpus 4 --k 100
    .venv/bin/python bench/search.py --cases xquad --shards 2     # quicker

Two cases, both dim 384, unit-length Gaussian vectors (FAISS Flat cost does not
depend on the values): ``xquad`` is the benchmark's size, 2,067 passages x
11,900 questions; ``synth`` is 200,000 passages x 11,900 queries.  The bare arm
is ``faiss.IndexFlatIP.search`` over all vectors in this process (FAISS's
default threads); the project's arm writes the shards as the index stage does
(``build_index`` + committed files), starts ``start_searchers`` on a local Ray
cluster like the pipeline's and runs ``search_shards`` (fan-out + ``merge_topk``),
first with actor start-up (loading and verifying shard files) and then again
on the warm actors.  Prints each rate and the ratio project/bare, and the CPU
seconds of both (FAISS threads of the bare arm; the shard actors' processes and
the driver for the fan-out): on a shared machine wall-time ratios favour the
arm with more processes, the CPU ratio does not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = {"xquad": 2_067, "synth": 200_000}


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_shards(root: str, x: np.ndarray, ids: np.ndarray, num_shards: int) -> dict:
    """The shard files and the manifest entries the index stage would write for one system."""
    from xqg_ray.ids import shard_of
    from xqg_ray.index import build_index, index_to_bytes
    from xqg_ray.integrity import write_committed
    from xqg_ray.storage import Storage

    sh, storage = shard_of(ids, num_shards), Storage()
    recs = []
    for s in range(num_shards):
        m = sh == s
        recs.append(write_committed(storage, root, f"index/baseline/data/s-{s:05d}.faiss", index_to_bytes(build_index(x[m], ids[m], x.shape[1]))))
    return {"baseline": {"shards": recs}}


def run_case(name: str, n: int, a: argparse.Namespace) -> None:
    import faiss
    import ray

    from xqg_ray.config import RayConfig, StorageConfig, stage_pool
    from xqg_ray.stages.search import search_shards, start_searchers

    rng = np.random.default_rng(0)
    x, q = unit_vectors(rng, n, a.dim), unit_vectors(rng, a.queries, a.dim)
    ids = rng.choice(2**62, size=n, replace=False).astype(np.int64)
    bare = faiss.IndexFlatIP(a.dim)
    bare.add(x)
    t, c = time.perf_counter(), time.process_time()
    bd, bi = bare.search(q, a.k)
    t_bare, c_bare = time.perf_counter() - t, time.process_time() - c
    del bare
    pool = stage_pool(RayConfig(num_cpus=a.num_cpus, actor_num_cpus=a.actor_cpus), "search")
    with tempfile.TemporaryDirectory() as d:
        manifests = write_shards(d, x, ids, a.shards)
        t = time.perf_counter()
        actors = start_searchers(d, StorageConfig(), manifests, a.shards, pool)
        search_shards(actors, ["baseline"], q, a.k, a.batch_size)
        t_cold = time.perf_counter() - t
        cpu0 = sum(ray.get([actor.cpu_seconds.remote() for actor in actors]))
        t, c = time.perf_counter(), time.process_time()
        md, mi = search_shards(actors, ["baseline"], q, a.k, a.batch_size)["baseline"]
        t_warm, c_warm = time.perf_counter() - t, time.process_time() - c
        c_warm += sum(ray.get([actor.cpu_seconds.remote() for actor in actors])) - cpu0
        for actor in actors:
            ray.kill(actor)
    same = float(np.mean(ids[bi] == mi))  # ids differ only where scores tie within rounding
    qn = len(q)
    print(f"{name}: {n:,} passages x {qn:,} queries, k={a.k}, dim {a.dim}: "
          f"one IndexFlatIP {qn / t_bare:,.0f} q/s ({t_bare:.2f} s); "
          f"{a.shards} shard actors + merge {qn / t_warm:,.0f} q/s ({t_warm:.2f} s) -> ratio {t_bare / t_warm:.2f}x; "
          f"with actor start-up {qn / t_cold:,.0f} q/s ({t_cold:.2f} s) -> ratio {t_bare / t_cold:.2f}x; "
          f"same id at {100 * same:.3f}% of ranks, max |score diff| {float(np.max(np.abs(md - bd))):.2e}; "
          f"CPU seconds (all threads and processes, warm): one index {c_bare:.2f}, fan-out + merge {c_warm:.2f} -> ratio {c_bare / c_warm:.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["xquad", "synth"])
    ap.add_argument("--queries", type=int, default=11_900)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4096, help="search.query_batch_size")
    ap.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray cluster (conf/demo.yaml: 4)")
    ap.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs (and FAISS threads) per shard actor")
    a = ap.parse_args()
    from xqg_ray.config import RayConfig
    from xqg_ray.raytools import init_ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    init_ray(RayConfig(num_cpus=a.num_cpus, progress=False))
    print(f"{os.cpu_count()} cores; FAISS threads in this process: ", end="")
    import faiss

    print(faiss.omp_get_max_threads(), flush=True)
    for name in a.cases:
        run_case(name, CASES[name], a)


if __name__ == "__main__":
    main()
