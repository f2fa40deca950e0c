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
from .ids import shard_of
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


PASSAGE = "passage"


def gen_kind(generator: str) -> str:
    return f"gen:{generator}"


def system_vectors(group: pa.Table, system: Mapping, dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of one system from one shard's rows.

    ``group`` has rows of kind "passage" (id, vector = E(p)) and "gen:NAME"
    (id, vector = sum E(q), count).  The join on id happens here, in memory,
    one shard at a time.
    """
    kinds = group["kind"].to_numpy(zero_copy_only=False)
    ids = group["id"].to_numpy()
    vecs = arrow_to_vectors(group["vector"], dim)
    p_mask = kinds == PASSAGE
    p_ids, p_vecs = ids[p_mask], vecs[p_mask]
    order = np.argsort(p_ids, kind="stable")
    p_ids, p_vecs = p_ids[order], p_vecs[order]
    gen = system.get("generator") or ""
    if not gen:
        return p_ids, np.ascontiguousarray(p_vecs, dtype=np.float32)
    g_mask = kinds == gen_kind(gen)
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


def split_file(storage_cfg: StorageConfig, uri: str, kinds: Sequence[str], num_shards: int) -> List[pa.Table]:
    """Map side of the shard shuffle: one embeddings file -> one table per shard (id % S)."""
    import pyarrow.compute as pc

    t = Storage(storage_cfg).read_table(uri, columns=["kind", "id", "vector", "count"])
    t = t.filter(pc.is_in(t["kind"], pa.array(list(kinds), pa.string())))
    shard = shard_of(np.asarray(t["id"]), num_shards)
    return [t.filter(pa.array(shard == s)) for s in range(num_shards)]


def build_shard(
    shard: int,
    systems: List[Dict],
    index_dir: str,
    dim: int,
    factory: str,
    metric: str,
    storage_cfg: StorageConfig,
    threads: int,
    *pieces: pa.Table,
) -> List[Dict]:
    """Reduce side: all rows of one shard -> one FAISS file per system; returns their descriptions."""
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    storage = Storage(storage_cfg)
    group = pa.concat_tables(pieces) if pieces else None
    out = []
    for system in systems:
        if group is None or group.num_rows == 0:
            ids, vecs = np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        else:
            ids, vecs = system_vectors(group, system, dim)
        data = index_to_bytes(build_index(vecs, ids, dim, factory, metric))
        uri = shard_uri(index_dir, system["name"], shard)
        storage.write_bytes(uri, data)
        out.append({"system": system["name"], "shard": shard, "file": uri.rsplit("/", 1)[-1], "sha256": sha256_bytes(data), "ntotal": int(len(ids))})
    return out


def build_shards(
    files: Sequence[str], systems: List[Dict], index_dir: str, dim: int, factory: str, metric: str, num_shards: int, storage_cfg: StorageConfig, threads: int, num_cpus: float
) -> List[Dict]:
    """Shuffle embeddings files into shards with Ray tasks and build every system's shards.

    Each file is read once (map: split by id % S, pieces stay in the object
    store); each shard is built by one task from its pieces (reduce).
    """
    import ray

    kinds = sorted({PASSAGE} | {gen_kind(s["generator"]) for s in systems if s.get("generator")})
    split = ray.remote(num_cpus=num_cpus, num_returns=num_shards)(split_file)
    build = ray.remote(num_cpus=num_cpus)(build_shard)
    parts = [split.remote(storage_cfg, f, kinds, num_shards) for f in files]
    if num_shards == 1:
        parts = [[p] for p in parts]
    refs = [build.remote(s, systems, index_dir, dim, factory, metric, storage_cfg, threads, *[p[s] for p in parts]) for s in range(num_shards)]
    return [row for rows in ray.get(refs) for row in rows]


def shard_uri(index_dir: str, system: str, shard: int) -> str:
    from .storage import join

    return join(index_dir, system, f"shard-{shard:05d}.faiss")


class ShardSearcher:
    """A Ray actor holding shard ``s`` of several systems in memory.

    One actor per shard position (not per system and shard) keeps actor
    start-up, the expensive part on small runs, at S per search stage.
    """

    def __init__(self, shards: Dict[str, Tuple[str, str]], storage_cfg: StorageConfig, threads: int = 1):
        import faiss

        faiss.omp_set_num_threads(max(1, threads))
        storage = Storage(storage_cfg)
        self.indexes = {}
        for system, (uri, sha256) in shards.items():
            data = storage.read_bytes(uri)
            if sha256_bytes(data) != sha256:
                raise ValueError(f"shard {uri} does not match its manifest sha256: rebuild the index")
            self.indexes[system] = index_from_bytes(data)

    def search(self, system: str, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.indexes[system].search(np.ascontiguousarray(queries, dtype=np.float32), k)


def search_shards(searchers: Sequence, system: str, queries: np.ndarray, k: int, batch_size: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Fan every query batch out to every shard actor; gather per-shard (D, I)."""
    import ray

    per_shard_d: List[List[np.ndarray]] = [[] for _ in searchers]
    per_shard_i: List[List[np.ndarray]] = [[] for _ in searchers]
    for start in range(0, len(queries), batch_size):
        qref = ray.put(queries[start : start + batch_size])
        results = ray.get([s.search.remote(system, qref, k) for s in searchers])
        for j, (d, i) in enumerate(results):
            per_shard_d[j].append(d)
            per_shard_i[j].append(i)
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros((0, k), dt)  # noqa: E731
    return [cat(p, np.float32) for p in per_shard_d], [cat(p, np.int64) for p in per_shard_i]
