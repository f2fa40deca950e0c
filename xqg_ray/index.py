"""FAISS shards: build (a reduce over passages grouped by shard) and search (fan-out + merge).

Shards are assigned by ``id % num_shards`` so an id's shard never depends on
row order.  Each shard is a self-contained FAISS index carrying the int64
passage ids; ``faiss.read_index`` opens it.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import pyarrow as pa

from .arrow_utils import arrow_to_vectors
from .augment import augment
from .config import StorageConfig
from .storage import Storage, sha256_bytes


def metric_type(metric: str) -> int:
    import faiss

    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def build_index(vectors: np.ndarray, ids: np.ndarray, dim: int, factory: str = "Flat", metric: str = "ip"):
    """An index over ``vectors`` with explicit int64 ``ids`` (trained on them if needed)."""
    import faiss

    index = faiss.index_factory(dim, factory, metric_type(metric))
    x = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
    if not index.is_trained and len(x):
        index.train(x)
    try:
        index.add_with_ids(x, np.asarray(ids, dtype=np.int64))
    except RuntimeError:
        # Flat/HNSW do not store ids themselves: wrap so ids survive search.
        index = faiss.IndexIDMap2(faiss.index_factory(dim, factory, metric_type(metric)))
        if not index.is_trained and len(x):
            index.train(x)
        index.add_with_ids(x, np.asarray(ids, dtype=np.int64))
    return index


def index_to_bytes(index) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def index_from_bytes(data: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def system_vectors(group: pa.Table, system: Mapping, dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of one system from a shard's rows.

    ``group`` has rows with ``source`` "passages" (id, vector) and one per
    generator (id, vector = sum E(q), count).  The join on id is done here, in
    memory, for one shard at a time.
    """
    src = group["source"].to_numpy(zero_copy_only=False)
    ids = group["id"].to_numpy()
    vecs = arrow_to_vectors(group["vector"], dim)
    p_mask = src == "passages"
    p_ids, p_vecs = ids[p_mask], vecs[p_mask]
    order = np.argsort(p_ids, kind="stable")
    p_ids, p_vecs = p_ids[order], p_vecs[order]
    gen = system.get("generator") or ""
    if not gen:
        return p_ids, np.ascontiguousarray(p_vecs, dtype=np.float32)
    g_mask = src == gen
    g_ids, g_vecs = ids[g_mask], vecs[g_mask]
    g_counts = group["count"].to_numpy()[g_mask]
    sums = np.zeros_like(p_vecs)
    counts = np.zeros(len(p_ids), dtype=np.int64)
    pos = np.searchsorted(p_ids, g_ids)
    ok = (pos < len(p_ids)) & (p_ids[np.minimum(pos, len(p_ids) - 1)] == g_ids) if len(p_ids) else np.zeros(len(g_ids), bool)
    if not ok.all():
        raise ValueError(f"generator {gen}: {int((~ok).sum())} query rows have ids not in the passage embeddings")
    sums[pos] = g_vecs
    counts[pos] = g_counts
    return p_ids, augment(p_vecs, sums, counts, float(system["alpha"]), system["aggregation"])


class ShardBuilder:
    """map_groups UDF: one shard's rows -> one FAISS file per system (rows describing them)."""

    def __init__(self, systems: List[Dict], index_dir: str, dim: int, factory: str, metric: str, storage_cfg: StorageConfig, threads: int = 1):
        import faiss

        faiss.omp_set_num_threads(max(1, threads))
        self.systems, self.index_dir, self.dim = systems, index_dir, dim
        self.factory, self.metric = factory, metric
        self.storage = Storage(storage_cfg)

    def __call__(self, group: pa.Table) -> pa.Table:
        shard = int(group["shard"][0].as_py())
        rows = []
        for system in self.systems:
            ids, vecs = system_vectors(group, system, self.dim)
            data = index_to_bytes(build_index(vecs, ids, self.dim, self.factory, self.metric))
            uri = shard_uri(self.index_dir, system["name"], shard)
            self.storage.write_bytes(uri, data)
            rows.append({"system": system["name"], "shard": shard, "file": uri.rsplit("/", 1)[-1], "sha256": sha256_bytes(data), "ntotal": int(len(ids))})
        return pa.Table.from_pylist(rows)


def shard_uri(index_dir: str, system: str, shard: int) -> str:
    from .storage import join

    return join(index_dir, system, f"shard-{shard:05d}.faiss")


class ShardSearcher:
    """A Ray actor holding one shard in memory; searches batches of queries."""

    def __init__(self, uri: str, sha256: str, storage_cfg: StorageConfig, threads: int = 1):
        import faiss

        faiss.omp_set_num_threads(max(1, threads))
        data = Storage(storage_cfg).read_bytes(uri)
        if sha256_bytes(data) != sha256:
            raise ValueError(f"shard {uri} does not match its manifest sha256: rebuild the index")
        self.index = index_from_bytes(data)

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def search_shards(searchers: Sequence, queries: np.ndarray, k: int, batch_size: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Fan every query batch out to every shard actor; gather per-shard (D, I)."""
    import ray

    per_shard_d: List[List[np.ndarray]] = [[] for _ in searchers]
    per_shard_i: List[List[np.ndarray]] = [[] for _ in searchers]
    for start in range(0, len(queries), batch_size):
        qref = ray.put(queries[start : start + batch_size])
        results = ray.get([s.search.remote(qref, k) for s in searchers])
        for j, (d, i) in enumerate(results):
            per_shard_d[j].append(d)
            per_shard_i[j].append(i)
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros((0, k), dt)  # noqa: E731
    return [cat(p, np.float32) for p in per_shard_d], [cat(p, np.int64) for p in per_shard_i]
