"""Merging per-shard top-k results into one deterministic ranking.

Order: score descending, then docid ascending (ties broken by the docid
string, so a rerun, another shard count or another machine gives the same
ranking).  FAISS pads missing results with id -1; those are dropped.
"""

from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple

import numpy as np


def merge_topk(
    scores: Sequence[np.ndarray],
    ids: Sequence[np.ndarray],
    k: int,
    docid_of: Mapping[int, str],
    higher_is_better: bool = True,
) -> List[List[Tuple[int, float]]]:
    """Merge shard results (each ``[n_queries, k_s]``) into per-query ``[(id, score)]``.

    ``higher_is_better=False`` for L2 distances.
    """
    if len(scores) != len(ids) or not scores:
        raise ValueError("need one (scores, ids) pair per shard, at least one shard")
    d = np.concatenate([np.asarray(s, dtype=np.float32) for s in scores], axis=1)
    i = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids], axis=1)
    out: List[List[Tuple[int, float]]] = []
    sign = -1.0 if higher_is_better else 1.0
    for row_d, row_i in zip(d, i):
        valid = row_i >= 0
        cand = [(sign * float(s), docid_of[int(pid)], int(pid)) for s, pid in zip(row_d[valid], row_i[valid])]
        cand.sort()
        out.append([(pid, sign * key) for key, _, pid in cand[:k]])
    return out


def exact_topk(
    queries: np.ndarray, vectors: np.ndarray, vector_ids: np.ndarray, k: int, docid_of: Mapping[int, str]
) -> List[List[Tuple[int, float]]]:
    """Reference: exhaustive inner-product top-k with the same ordering rules."""
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(vector_ids, dtype=np.int64))
    d, i = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(vector_ids)))
    return merge_topk([d], [i], k, docid_of)
