"""Vectors as plain Arrow ``fixed_size_list<float32>`` columns.

Plain Arrow types (not Ray's tensor extension) keep every Parquet file
readable by pyarrow, pandas or DuckDB without Ray installed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vectors_to_arrow(vecs: np.ndarray) -> pa.FixedSizeListArray:
    v = np.ascontiguousarray(vecs, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"expected a 2-d array, got shape {v.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), type=pa.float32()), v.shape[1])


def arrow_to_vectors(col: pa.Array | pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """A fixed- or variable-size list column back to a ``[n, dim]`` float32 array."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], type=pa.list_(pa.float32()))
    n = len(col)
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1)


def slots_to_dense(slots: pa.Array | pa.ChunkedArray, counts: pa.Array | pa.ChunkedArray, dim: int) -> tuple:
    """``list<list<float32, dim>>`` per-slot sums and ``list<int32>`` counts -> ``[n, S, dim]`` float64
    and ``[n, S]`` int64, zero-padded to the longest row (rows may hold different numbers of slots)."""
    if isinstance(slots, pa.ChunkedArray):
        slots = slots.combine_chunks() if slots.num_chunks else pa.array([], type=pa.list_(pa.list_(pa.float32(), dim)))
    if isinstance(counts, pa.ChunkedArray):
        counts = counts.combine_chunks() if counts.num_chunks else pa.array([], type=pa.list_(pa.int32()))
    n = len(slots)
    lengths = slots.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) if n else np.zeros(0, np.int64)
    k = int(lengths.max()) if n else 0
    sums = np.zeros((n, k, dim), np.float64)
    cnt = np.zeros((n, k), np.int64)
    if k:
        row = np.repeat(np.arange(n), lengths)
        col = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        sums[row, col] = arrow_to_vectors(slots.flatten(), dim)
        cnt[row, col] = counts.flatten().to_numpy(zero_copy_only=False)
    return sums, cnt
