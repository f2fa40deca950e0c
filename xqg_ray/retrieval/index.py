"""FAISS helpers: build an index with explicit int64 ids, update it in place, (de)serialise it,
and the vectors of one system from a shard's embedding rows.

Each shard is a self-contained FAISS index carrying the int64 passage ids;
``faiss.read_index`` opens it.
"""

from __future__ import annotations

from typing import Mapping, Tuple

import numpy as np
import pyarrow as pa

from ..arrow_utils import arrow_to_vectors, slots_to_dense
from .augment import augment, first_slots
from ..schemas import PASSAGE, gen_kind


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


def update_index(index, remove_ids: np.ndarray, add_vectors: np.ndarray, add_ids: np.ndarray) -> bool:
    """Remove then add in place; False (index untouched) if this index type cannot remove ids.

    A trained quantizer (IVF) stays as it is: updates never retrain.
    """
    import faiss

    if len(remove_ids):
        try:
            removed = index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(remove_ids, dtype=np.int64)))
        except RuntimeError:
            return False  # e.g. HNSW: no removal; the caller rebuilds
        if removed != len(remove_ids):
            raise ValueError(f"index update: removed {removed} of {len(remove_ids)} ids")
    if len(add_ids):
        index.add_with_ids(np.ascontiguousarray(add_vectors, dtype=np.float32), np.ascontiguousarray(add_ids, dtype=np.int64))
    return True


def system_vectors(group: pa.Table, system: Mapping, dim: int) -> Tuple[np.ndarray, pa.Array, np.ndarray]:
    """(ids, content hashes, vectors) of one system from one shard's embedding rows, sorted by id.

    ``group`` has rows of kind "passage" (E(p)) and "gen:NAME" (sum E(q), count, and
    the per-slot sums a system with ``n`` > 0 queries per language uses).  The
    join on id happens here, in memory, one shard at a time.
    """
    import pyarrow.compute as pc

    p = group.filter(pc.equal(group["kind"], PASSAGE)).sort_by("id")
    p_ids, p_vecs = p["id"].to_numpy(), arrow_to_vectors(p["vector"], dim)
    gen = system.get("generator") or ""
    if not gen:
        return p_ids, p["content_hash"], np.ascontiguousarray(p_vecs, dtype=np.float32)
    g = group.filter(pc.equal(group["kind"], gen_kind(gen)))
    g_ids, g_vecs, g_counts = g["id"].to_numpy(), arrow_to_vectors(g["vector"], dim), g["count"].to_numpy()
    if int(system.get("n") or 0) > 0:
        g_vecs, g_counts = first_slots(*slots_to_dense(g["slots"], g["slot_counts"], dim), int(system["n"]))
    sums = np.zeros_like(p_vecs)
    counts = np.zeros(len(p_ids), dtype=np.int64)
    pos = np.searchsorted(p_ids, g_ids)
    ok = (pos < len(p_ids)) & (p_ids[np.minimum(pos, len(p_ids) - 1)] == g_ids) if len(p_ids) else np.zeros(len(g_ids), bool)
    if not ok.all():
        raise ValueError(f"generator {gen}: {int((~ok).sum())} query rows have ids not in the passage embeddings")
    sums[pos] = g_vecs
    counts[pos] = g_counts
    return p_ids, p["content_hash"], augment(p_vecs, sums, counts, float(system["alpha"]), system["aggregation"])
