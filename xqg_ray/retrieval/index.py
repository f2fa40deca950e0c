"""FAISS helpers: build an index with explicit int64 ids, update it in place, write and read
(memory-mapped) index files, and the vectors of one system from a shard's embedding rows.

Each shard is a self-contained FAISS index carrying the int64 passage ids;
``faiss.read_index`` opens it.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Tuple

import numpy as np
import pyarrow as pa

from ..arrow_utils import arrow_to_vectors, slots_to_dense
from .augment import augment, first_slots


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


def write_index_file(index, path: str) -> None:
    """``index`` written by FAISS straight to ``path``: the same bytes as :func:`index_to_bytes`, no copy in memory."""
    import faiss

    faiss.write_index(index, path)


def read_index_file(path: str, mmap: bool = False):
    """The index in ``path``; with ``mmap``, its vectors stay in the file, memory-mapped read-only.

    ``IO_FLAG_MMAP_IFC`` (FAISS >= 1.10) maps the codes of Flat indexes (also under
    ``IndexIDMap2`` and HNSW's storage) and the inverted lists of IVF ones, checked on
    faiss-cpu 1.15.  The legacy ``IO_FLAG_MMAP`` maps only IVF lists, not Flat codes.
    An index type whose reader cannot map is read into memory instead.  A mapped
    index is for searching: an update reads the file with ``mmap=False``.
    """
    import faiss

    if mmap and hasattr(faiss, "IO_FLAG_MMAP_IFC"):
        try:
            return faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            pass  # this index type's reader does not support mapping: read it normally below
    return faiss.read_index(path)


def index_to_bytes(index) -> bytes:
    """An index as bytes: for small indexes in tests and benchmarks; the index stage writes files."""
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


# Rows are augmented a chunk at a time: its float64 temporaries (about six arrays of
# rows x dim x 8 bytes) stay near 100 MB whatever the shard size, with the same bits as one call.
AUGMENT_CHUNK_BYTES = 1 << 24


def system_vectors(passages: Iterable[pa.Table], queries: Iterable[pa.Table], system: Mapping,
                   dim: int) -> Tuple[np.ndarray, pa.Array, np.ndarray]:
    """(ids, content hashes, vectors) of one system from one shard's embedding rows, sorted by id.

    ``passages``: tables of E(p) rows (``id``, ``content_hash``, ``vector``), e.g. one
    per embeddings file; ``queries`` (read only for a system with a generator, after
    ``passages``): tables of that generator's rows (``id``, ``vector``, ``count``, and
    ``slots``/``slot_counts`` when the system uses ``n`` > 0 queries per language).
    Each part is copied into its place in the sorted output and dropped, so the shard's
    vectors are held once plus one part (two while the passage parts are placed), and
    the augmentation runs :data:`AUGMENT_CHUNK_BYTES` of float64 rows at a time.
    """
    parts = list(passages)
    ids = np.concatenate([t["id"].to_numpy() for t in parts]) if parts else np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")
    rank = np.empty(len(ids), np.int64)
    rank[order] = np.arange(len(ids))
    hashes = pa.chunked_array([c for t in parts for c in t["content_hash"].chunks], pa.string()).combine_chunks().take(pa.array(order))
    p_vecs, o = np.empty((len(ids), dim), np.float32), 0
    while parts:
        t = parts.pop(0)
        p_vecs[rank[o:o + t.num_rows]] = arrow_to_vectors(t["vector"], dim)
        o += t.num_rows
        del t
    p_ids = ids[order]
    gen = system.get("generator") or ""
    if not gen:
        return p_ids, hashes, p_vecs
    # A passage without queries keeps a zero sum (float32, as the per-slot sums are rounded to it too).
    sums, counts, n = np.zeros_like(p_vecs), np.zeros(len(p_ids), np.int64), int(system.get("n") or 0)
    for g in queries:
        g_ids = g["id"].to_numpy()
        if n > 0:
            g_vecs, g_counts = first_slots(*slots_to_dense(g["slots"], g["slot_counts"], dim), n)
        else:
            g_vecs, g_counts = arrow_to_vectors(g["vector"], dim), g["count"].to_numpy()
        pos = np.searchsorted(p_ids, g_ids)
        ok = (pos < len(p_ids)) & (p_ids[np.minimum(pos, len(p_ids) - 1)] == g_ids) if len(p_ids) else np.zeros(len(g_ids), bool)
        if not ok.all():
            raise ValueError(f"generator {gen}: {int((~ok).sum())} query rows have ids not in the passage embeddings")
        sums[pos] = g_vecs
        counts[pos] = g_counts
    out = p_vecs  # augmented in place, chunk by chunk: each chunk's inputs are read before it is written
    rows = max(1, AUGMENT_CHUNK_BYTES // (8 * max(1, dim)))
    for a in range(0, len(p_ids), rows):
        b = a + rows
        out[a:b] = augment(p_vecs[a:b], sums[a:b], counts[a:b], float(system["alpha"]), system["aggregation"])
    return p_ids, hashes, out


def rows_to_add(old_ids: np.ndarray, old_hashes: pa.Array, ids: np.ndarray, hashes: pa.Array) -> np.ndarray:
    """Mask of the rows (``ids``, ``hashes``) that an index holding the passage versions
    (``old_ids``, ``old_hashes``; ids sorted, unique) does not hold: new or changed passages.

    The per-part form of :func:`~xqg_ray.stages.reuse.diff_versions`'s add mask (a
    version is (id, content_hash)), by binary search on int64 ids, so each embeddings
    file can drop its unchanged rows as it is read.
    """
    ids = np.asarray(ids, np.int64)
    if len(old_ids) == 0 or len(ids) == 0:
        return np.ones(len(ids), bool)
    pos = np.minimum(np.searchsorted(old_ids, ids), len(old_ids) - 1)
    same_id = old_ids[pos] == ids
    same = np.zeros(len(ids), bool)
    if same_id.any():
        import pyarrow.compute as pc

        at = np.flatnonzero(same_id)
        same[at] = pc.equal(old_hashes.take(pa.array(pos[at])), hashes.take(pa.array(at))).to_numpy(zero_copy_only=False)
    return ~same
