"""Search stage: the test questions fanned out over one actor per shard, top-k merged per system.

One actor per shard position (holding that shard of every system) keeps actor
start-up, the expensive part on small runs, at ``num_shards`` per run.  Each
actor checks every shard file against its manifest's sha256 before use.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..config import StorageConfig
from ..errors import UserError, reraise_user_error
from ..integrity import read_verified
from ..storage import Storage
from ..topk import merge_topk
from .context import Context


class ShardSearcher:
    """A Ray actor holding shard ``s`` of several systems in memory."""

    def __init__(self, root: str, storage_cfg: StorageConfig, shards: Dict[str, Dict[str, Any]], threads: int = 1):
        import faiss

        from ..index import index_from_bytes

        faiss.omp_set_num_threads(max(1, threads))
        storage = Storage(storage_cfg)
        self.error: UserError | None = None
        try:
            self.indexes = {name: index_from_bytes(read_verified(storage, root, rec, where=f"the index/{name} manifest")) for name, rec in shards.items()}
        except UserError as e:
            # An error in an actor's constructor reaches the driver as ActorDiedError,
            # without the message; raised from a method call it arrives intact.
            self.error = e

    def search(self, system: str, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        if self.error is not None:
            raise self.error
        return self.indexes[system].search(np.ascontiguousarray(queries, dtype=np.float32), k)


def search_shards(searchers: Sequence, system: str, queries: np.ndarray, k: int, batch_size: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Fan every query batch out to every shard actor; gather per-shard (D, I)."""
    import ray

    per_d: List[List[np.ndarray]] = [[] for _ in searchers]
    per_i: List[List[np.ndarray]] = [[] for _ in searchers]
    for start in range(0, len(queries), batch_size):
        qref = ray.put(queries[start : start + batch_size])
        for j, (d, i) in enumerate(ray.get([s.search.remote(system, qref, k) for s in searchers])):
            per_d[j].append(d)
            per_i[j].append(i)

    def cat(parts: List[np.ndarray], dt) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, k), dt)

    return [cat(p, np.float32) for p in per_d], [cat(p, np.int64) for p in per_i]


def run_search(ctx: Context, manifests: Dict[str, Dict[str, Any]], qvecs: np.ndarray) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Per system, the merged ``(D, I)`` top-k of every test question."""
    import ray

    pool = ctx.pool("search")
    cls = ray.remote(num_cpus=pool.num_cpus, num_gpus=pool.num_gpus)(ShardSearcher)
    S, k = ctx.cfg.index.num_shards, ctx.cfg.search.top_k
    actors = [cls.remote(ctx.root, ctx.cfg.storage, {name: m["shards"][s] for name, m in manifests.items()}, pool.torch_threads) for s in range(S)]
    try:
        out = {}
        for name in manifests:
            d, i = search_shards(actors, name, qvecs, k, ctx.cfg.search.query_batch_size)
            out[name] = merge_topk(d, i, k, higher_is_better=ctx.cfg.index.metric == "ip")
        return out
    except Exception as e:
        reraise_user_error(e)
        raise
    finally:
        for a in actors:
            ray.kill(a)
