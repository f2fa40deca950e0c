"""Merging per-shard top-k results into one deterministic ranking, vectorised.

Order: score descending (ascending for L2), then passage id ascending, so a
rerun, another shard count or another machine gives the same ranking.  FAISS
pads missing results with id -1; those sort last and stay -1 in the output.
No Python loop over queries or candidates: one ``lexsort`` over the
``[n_queries, shards * k]`` candidate matrix.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def merge_topk(
    scores: Sequence[np.ndarray], ids: Sequence[np.ndarray], k: int, higher_is_better: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """Merge shard results (each ``[n_queries, k_s]``) into ``(D, I)`` of shape ``[n_queries, k]``.

    Missing results are id -1 with score -inf (+inf for L2).
    """
    if len(scores) != len(ids) or not scores:
        raise ValueError("need one (scores, ids) pair per shard, at least one shard")
    d = np.concatenate([np.asarray(s, dtype=np.float32) for s in scores], axis=1)
    i = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids], axis=1)
    pad = np.float32(-np.inf if higher_is_better else np.inf)
    d = np.where(i >= 0, d, pad)
    primary = -d if higher_is_better else d
    # Invalid ids sort after every valid one whatever their score.
    order = np.lexsort((np.where(i >= 0, i, np.iinfo(np.int64).max), primary, i < 0), axis=1)[:, :k]
    d_out, i_out = np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)
    if d_out.shape[1] < k:  # fewer candidates than k in all shards together
        extra = k - d_out.shape[1]
        d_out = np.pad(d_out, ((0, 0), (0, extra)), constant_values=pad)
        i_out = np.pad(i_out, ((0, 0), (0, extra)), constant_values=-1)
    return d_out, i_out


def exact_topk(queries: np.ndarray, vectors: np.ndarray, vector_ids: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Reference: exhaustive inner-product top-k with the same ordering rules."""
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(vector_ids, dtype=np.int64))
    d, i = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(vector_ids)))
    return merge_topk([d], [i], k)


def ranked(d: np.ndarray, i: np.ndarray) -> list:
    """Per query, the ``[(id, score)]`` of its valid results (for run files and tests)."""
    return [[(int(p), float(s)) for s, p in zip(row_d, row_i) if p >= 0] for row_d, row_i in zip(d, i)]
