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
