"""Search stage: the test questions fanned out over one actor per shard, top-k merged per system.

One actor per shard position (holding that shard of every system) keeps actor
start-up, the expensive part on small runs, at ``num_shards`` per run, or at
``ray.search.max_actors`` where that is set (each actor then holds every
n-th shard position); the local cluster's actors serve every run of the
process, each loading that run's shards.  Each actor checks every shard file
against its manifest's sha256 before use.

The fan-out costs little beyond the search itself: the questions go into the
object store once; every (system, query batch) call to every actor is in
flight before the first result is awaited, so actors never wait on the driver;
results come back zero-copy; the driver merges one batch while the actors
search the next (``merge_topk``'s heap merge, not a sort, on one FAISS thread);
and the queries a shard must be asked again about are sent without waiting.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import Pool, StorageConfig
from ..errors import reraise_user_error
from ..store.integrity import verified_local_file
from ..store.storage import Storage
from ..retrieval.topk import faiss_threads, merge_topk
from ..runtime.capacity import require, search_actors, search_demand
from ..runtime.cluster import current
from ..runtime.remote import remote_class
from .context import Context


RESERVOIR_MIN_K = 32  # per-shard k from which FAISS selects with a reservoir (see ShardSearcher)


class ShardSearcher:
    """A Ray actor holding one or more shards of several systems, each memory-mapped from its file where the index
    type allows: loaded by :meth:`load` for one search stage, dropped by :meth:`release` after it.  On the local
    cluster the same actors serve every run of the process (see :func:`start_searchers`)."""

    def __init__(self) -> None:
        self.indexes: Dict[Tuple[str, int], Any] = {}
        self.load_seconds = 0.0
        self.work_seconds = 0.0

    def load(self, root: str, storage_cfg: StorageConfig, shards: Dict[int, Dict[str, Dict[str, Any]]], threads: int = 1) -> None:
        """Hold ``shards`` (shard number -> system -> that shard's record in the system's index manifest), each
        file checked against its sha256; a damaged or missing one is a :class:`~xqg_ray.errors.UserError`, which
        reaches the driver with its message (raised in a constructor it would arrive as ActorDiedError without it)."""
        t0 = time.perf_counter()
        import faiss

        from ..retrieval.index import read_index_file
        from .index import index_cache_dir

        self.release()
        # As many FAISS threads as the actor has CPUs: more would oversubscribe the node.
        faiss.omp_set_num_threads(max(1, threads))
        # FAISS keeps each query's top k in a heap below k=100 and in a reservoir from
        # there.  A shard is asked for about k/S + 3 sd (e.g. 66 of 100 with 2 shards),
        # where the reservoir is faster: measured one thread, 11,900 queries, 1,034 vectors,
        # k=71: 0.26 s heap, 0.21 s reservoir; at k <= 20 the heap wins by 5-10%.
        faiss.cvar.distance_compute_min_k_reservoir = RESERVOIR_MIN_K
        storage = Storage(storage_cfg)
        # One copy of each shard, memory-mapped from the committed file (a local copy of an
        # s3:// one): the page cache holds the vectors, shared by every actor on the node.
        self.indexes = {(name, shard): read_index_file(verified_local_file(storage, root, rec, index_cache_dir(),
                                                                           where=f"the index/{name} manifest"), mmap=True)
                        for shard, recs in shards.items() for name, rec in recs.items()}
        self.load_seconds = time.perf_counter() - t0
        self.work_seconds = 0.0

    def release(self) -> None:
        """Drop the shards (their files are unmapped) until the next :meth:`load`."""
        self.indexes = {}

    def search(self, system: str, shard: int, queries: np.ndarray, start: int, stop: int, k: int,
               rows: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-k of ``queries[start:stop]`` (or of ``queries[rows]``) in shard ``shard`` of ``system``.

        ``queries`` arrives zero-copy from the object store; a row slice of it stays contiguous.
        """
        t0 = time.perf_counter()
        q = queries[start:stop] if rows is None else queries[rows]
        out = self.indexes[(system, shard)].search(np.ascontiguousarray(q, dtype=np.float32), k)
        self.work_seconds += time.perf_counter() - t0
        return out

    def timings(self) -> Tuple[float, float]:
        """(seconds loading the shards, seconds searching) of this actor since its last :meth:`load`."""
        return self.load_seconds, self.work_seconds

    def cpu_seconds(self) -> float:
        """CPU time of this actor's process so far (every thread): for benchmarks on a shared machine."""
        return time.process_time()


def start_searchers(root: str, storage_cfg: StorageConfig, manifests: Dict[str, Dict[str, Any]], num_shards: int, pool: Pool,
                    max_actors: Optional[int] = None) -> List[Tuple[Any, int]]:
    """Per shard position, (the :class:`ShardSearcher` actor holding it, its number): one actor per shard, or
    ``max_actors`` of them each holding every ``max_actors``-th shard of every system; returns once every
    actor has loaded its shards.

    Fewer actors than shards trade an actor's start (about 1.2 CPU-s: a Ray worker, its imports,
    each shard file hashed; most of a small search) for shards searched one after another in it.
    All must run at once: refused (one line) where the cluster cannot hold them, rather than waiting forever.
    On the local cluster (CPU pools) the actors are the cluster's own and serve the next run of this
    process too (a sweep run from a notebook, a test session): a Ray worker's start and imports, about
    0.9 CPU-s an actor, once per process instead of once per run.
    """
    n = search_actors(num_shards, max_actors)
    require([search_demand(num_shards, pool, max_actors)])
    cluster = current()
    if cluster.serves_on_hosts(pool.num_gpus):
        actors, _ = cluster.kept_actors(ShardSearcher, n)
    else:
        cls = remote_class(ShardSearcher, num_cpus=pool.num_cpus, num_gpus=pool.num_gpus)
        actors = [cls.remote() for _ in range(n)]
    searchers = [(actors[s % n], s) for s in range(num_shards)]
    try:
        cluster.get([a.load.remote(root, storage_cfg, {s: {name: m["shards"][s] for name, m in manifests.items()} for s in range(i, num_shards, n)},
                                   pool.torch_threads) for i, a in enumerate(actors)], f"{n} search actors to load their shards")
    except BaseException:
        stop_searchers(searchers)
        raise
    return searchers


def searcher_actors(searchers: Sequence[Tuple[Any, int]]) -> List[Any]:
    """The distinct actors of :func:`start_searchers`' result, in the order of their first shard."""
    return list({id(a): a for a, _ in searchers}.values())


def stop_searchers(searchers: Sequence[Tuple[Any, int]]) -> None:
    """The actors of :func:`start_searchers` drop their shards (the local cluster's own, kept for its next run) or are killed."""
    import ray

    kept = {id(a) for a in current().kept.get(ShardSearcher, [])}
    for a in searcher_actors(searchers):
        if id(a) in kept:
            a.release.remote()  # not awaited: the actor's next call queues behind it
        else:
            ray.kill(a)


SHARD_K_SD = 3.0  # binomial standard deviations above k/S asked of each shard (see shard_k)


def shard_k(k: int, num_shards: int) -> int:
    """Results asked of each shard: a shard holds about k/S of a query's top k (passages are
    spread by id hash), so k/S plus three binomial standard deviations, not k, and
    :func:`search_shards` asks again, with k, for the rare query where that was not enough
    (with 2 shards and k=100, 66 per shard: about 2 queries in 1,000 are asked again).
    Selecting fewer per shard is most of the fan-out's saving on small shards, where
    FAISS spends more on keeping the top k than on the inner products."""
    if num_shards <= 1:
        return k
    p = 1.0 / num_shards
    return min(k, int(np.ceil(k * p + SHARD_K_SD * np.sqrt(k * p * (1.0 - p)))) + 1)


def _incomplete(per_shard: Sequence[Tuple[np.ndarray, np.ndarray]], md: np.ndarray, mi: np.ndarray, k1: int,
                higher_is_better: bool) -> np.ndarray:
    """Rows where some shard returned its k1 results and its last could still tie or beat the
    merged k-th (or the merged row is short): that shard may hold more of the top k."""
    kth, row_full = md[:, -1], mi[:, -1] >= 0
    need = np.zeros(len(md), bool)
    for d, i in per_shard:
        if d.shape[1] < k1:
            continue
        last = d[:, k1 - 1]
        beaten = last < kth if higher_is_better else last > kth
        need |= (i[:, k1 - 1] >= 0) & ~(row_full & beaten)
    return np.flatnonzero(need)


def search_shards(searchers: Sequence[Tuple[Any, int]], systems: Sequence[str], queries: np.ndarray, k: int, batch_size: int,
                  higher_is_better: bool = True) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Per system, the merged ``(D, I)`` top-k of ``queries`` over every shard (``searchers``: per shard,
    (its actor, its number), from :func:`start_searchers`), exact."""
    import ray

    n = len(queries)
    if n == 0 or not systems:
        return {name: (np.zeros((n, k), np.float32), np.full((n, k), -1, np.int64)) for name in systems}
    qref = ray.put(np.ascontiguousarray(queries, dtype=np.float32))  # once, for every call
    bounds = [(a, min(a + batch_size, n)) for a in range(0, n, max(1, batch_size))]
    k1 = shard_k(k, len(searchers))
    # The driver merges while the shard actors search on the node's CPUs: one
    # FAISS thread here, as more would contend with them (and spin between merges:
    # measured 0.025 CPU-s more per 11,900 queries with two).
    with faiss_threads(1):
        return _fan_out(searchers, systems, qref, bounds, n, k, k1, higher_is_better)


def _fan_out(searchers: Sequence, systems: Sequence[str], qref: Any, bounds: List[Tuple[int, int]], n: int, k: int, k1: int,
             higher_is_better: bool) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """:func:`search_shards` once the questions are in the object store: submit, merge, ask again."""
    cluster, what = current(), f"search results from {len(searchers)} shard actors"

    def submit(name: str) -> List[List[Any]]:  # [batch][shard]
        return [[actor.search.remote(name, s, qref, a, b, k1) for actor, s in searchers] for a, b in bounds]

    merged: Dict[str, List[Tuple[np.ndarray, np.ndarray]]] = {}
    redos: List[Tuple[str, int, np.ndarray, List[Any]]] = []  # (system, batch, rows, refs)
    pending = submit(systems[0])
    for j, name in enumerate(systems):
        refs, pending = pending, submit(systems[j + 1]) if j + 1 < len(systems) else None
        for b, ((a, _), row) in enumerate(zip(bounds, refs)):
            per_shard = cluster.get(row, what)
            md, mi = merge_topk(*zip(*per_shard), k, higher_is_better=higher_is_better)
            redo = _incomplete(per_shard, md, mi, k1, higher_is_better) if k1 < k else np.zeros(0, np.int64)
            if len(redo):
                # Those queries again, full k from every shard.  Not awaited here: the
                # calls queue behind the batches already sent, and waiting would stall
                # the driver's merging of the next batches until the actors were idle.
                redos.append((name, b, redo, [actor.search.remote(name, s, qref, 0, n, k, rows=redo + a) for actor, s in searchers]))
            merged.setdefault(name, []).append((md, mi))
    for name, b, redo, again_refs in redos:
        md, mi = merged[name][b]
        md[redo], mi[redo] = merge_topk(*zip(*cluster.get(again_refs, what)), k, higher_is_better=higher_is_better)
    return {name: (np.concatenate([d for d, _ in merged[name]]), np.concatenate([i for _, i in merged[name]])) for name in systems}


def run_search(ctx: Context, manifests: Dict[str, Dict[str, Any]],
               jobs: Dict[str, List[Tuple[List[str], np.ndarray]]]) -> Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]:
    """Per query set and system, the merged ``(D, I)`` top-k of its questions.

    ``jobs``: query set -> [(systems, their query vectors)] (one entry per encoder:
    each encoder's systems are searched with that encoder's vectors).  The shard
    actors start once for all of them.
    """
    import ray

    S, k = ctx.cfg.index.num_shards, ctx.cfg.search.top_k
    searchers: List[Tuple[Any, int]] = []
    try:
        searchers = start_searchers(ctx.root, ctx.cfg.storage, manifests, S, ctx.pool("search"), ctx.cfg.ray.search.max_actors)
        actors = searcher_actors(searchers)
        out: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]] = {}
        for qset, parts in jobs.items():
            for systems, qvecs in parts:
                out.setdefault(qset, {}).update(search_shards(searchers, systems, qvecs, k, ctx.cfg.search.query_batch_size,
                                                              higher_is_better=ctx.cfg.index.metric == "ip"))
        for load, work in current().get([a.timings.remote() for a in actors], f"{len(actors)} search actors' timings"):
            ctx.timer.event("search", "unit", load_seconds=round(load, 4), work_seconds=round(work, 4))
        return out
    except Exception as e:
        if isinstance(e, ray.exceptions.RayActorError):
            current().forget(ShardSearcher)  # one died (e.g. out of memory): the next run starts fresh ones
        reraise_user_error(e)
        raise
    finally:
        stop_searchers(searchers)
