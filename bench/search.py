"""Search queries/s: the project's fan-out over shard actors + merge against one bare exact index, in one run.

    .venv/bin/python bench/search.py                      # shards 2 (conf/demo.yaml) and 4, both cases
    .venv/bin/python bench/search.py --cases xquad --shards 2 --repeat 3     # quicker

Two cases, both dim 384, unit-length Gaussian vectors (FAISS Flat cost does not
depend on the values): ``xquad`` is the benchmark's size, 2,067 passages x
11,900 questions; ``synth`` is 200,000 passages x 11,900 queries.  The bare arm
is ``faiss.IndexFlatIP.search`` over all vectors in this process (FAISS's
default threads); the project's arm writes the shards as the index stage does
(``build_index`` + committed files), starts ``start_searchers`` on a local Ray
cluster like the pipeline's and runs ``search_shards`` (fan-out + ``merge_topk``),
first with actor start-up (loading and verifying shard files), then
``--repeat`` times on the warm actors, each time right after the bare arm (the
two arms alternate, so a busy moment of the machine hits both).  Prints the
median rate of each arm and the ratio of the medians (the goal: >= 0.8), the
best ratio, and the CPU seconds of both (FAISS threads of the bare arm; the
shard actors' processes and the driver for the fan-out): on a shared machine
wall-time ratios favour the arm with more processes, the CPU ratio does not.
The local cluster's model hosts finish warming before anything is timed.
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

CASES = {"xquad": 2_067, "synth": 200_000, "tiny": 300}  # tiny: tests/test_bench_scripts.py


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_shards(root: str, x: np.ndarray, ids: np.ndarray, num_shards: int) -> dict:
    """The shard files and the manifest entries the index stage would write for one system."""
    from xqg_ray.ids import shard_of
    from xqg_ray.retrieval.index import build_index, index_to_bytes
    from xqg_ray.store.integrity import write_committed
    from xqg_ray.store.storage import Storage

    sh, storage = shard_of(ids, num_shards), Storage()
    recs = []
    for s in range(num_shards):
        m = sh == s
        recs.append(write_committed(storage, root, f"index/baseline/data/s-{s:05d}.faiss", index_to_bytes(build_index(x[m], ids[m], x.shape[1]))))
    return {"baseline": {"shards": recs}}


def run_case(name: str, n: int, shards: int, a: argparse.Namespace) -> None:
    import faiss
    import ray

    from xqg_ray.config import RayConfig, StorageConfig, stage_pool
    from xqg_ray.stages.search import search_shards, searcher_actors, start_searchers, stop_searchers

    rng = np.random.default_rng(0)
    x, q = unit_vectors(rng, n, a.dim), unit_vectors(rng, a.queries, a.dim)
    ids = rng.choice(2**62, size=n, replace=False).astype(np.int64)
    bare = faiss.IndexFlatIP(a.dim)
    bare.add(x)
    pool = stage_pool(RayConfig(num_cpus=a.num_cpus, actor_num_cpus=a.actor_cpus), "search")
    t_bare, t_fan, c_bare, c_fan = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        manifests = write_shards(d, x, ids, shards)
        t = time.perf_counter()
        searchers = start_searchers(d, StorageConfig(), manifests, shards, pool)
        actors = searcher_actors(searchers)
        search_shards(searchers, ["baseline"], q, a.k, a.batch_size)
        t_cold = time.perf_counter() - t
        for _ in range(a.repeat):
            t, c = time.perf_counter(), time.process_time()
            bd, bi = bare.search(q, a.k)
            t_bare.append(time.perf_counter() - t)
            c_bare.append(time.process_time() - c)
            cpu0 = sum(ray.get([actor.cpu_seconds.remote() for actor in actors]))
            t, c = time.perf_counter(), time.process_time()
            md, mi = search_shards(searchers, ["baseline"], q, a.k, a.batch_size)["baseline"]
            t_fan.append(time.perf_counter() - t)
            c_fan.append(time.process_time() - c + sum(ray.get([actor.cpu_seconds.remote() for actor in actors])) - cpu0)
        stop_searchers(searchers)
    same = float(np.mean(ids[bi] == mi))  # ids differ only where scores tie within rounding
    qn, tb, tf = len(q), float(np.median(t_bare)), float(np.median(t_fan))
    print(f"{name}: {n:,} passages x {qn:,} queries, k={a.k}, dim {a.dim}, median of {a.repeat}: "
          f"one IndexFlatIP {qn / tb:,.0f} q/s ({tb:.3f} s); "
          f"{shards} shard actors + merge {qn / tf:,.0f} q/s ({tf:.3f} s) -> ratio {tb / tf:.2f}x "
          f"(best {max(b / f for b, f in zip(t_bare, t_fan)):.2f}x, worst {min(b / f for b, f in zip(t_bare, t_fan)):.2f}x); "
          f"with actor start-up {qn / t_cold:,.0f} q/s ({t_cold:.2f} s) -> ratio {tb / t_cold:.2f}x; "
          f"same id at {100 * same:.3f}% of ranks, max |score diff| {float(np.max(np.abs(md - bd))):.2e}; "
          f"CPU seconds (all threads and processes, median): one index {np.median(c_bare):.2f}, "
          f"fan-out + merge {np.median(c_fan):.2f} -> ratio {np.median(c_bare) / np.median(c_fan):.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["xquad", "synth"])
    ap.add_argument("--queries", type=int, default=11_900)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--shards", type=int, nargs="+", default=[2, 4], help="shard counts (conf/demo.yaml: 2)")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs of each arm (medians are reported)")
    ap.add_argument("--batch-size", type=int, default=4096, help="search.query_batch_size")
    ap.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray cluster (conf/demo.yaml: 4)")
    ap.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs (and FAISS threads) per shard actor")
    a = ap.parse_args()
    from xqg_ray.config import RayConfig
    from xqg_ray.runtime.cluster import init_ray, wait_for_hosts

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    init_ray(RayConfig(num_cpus=a.num_cpus, progress=False))
    wait_for_hosts()
    print(f"{os.cpu_count()} cores; FAISS threads in this process: ", end="")
    import faiss

    print(faiss.omp_get_max_threads(), flush=True)
    for name in a.cases:
        for shards in a.shards:
            run_case(name, CASES[name], shards, a)


if __name__ == "__main__":
    main()
