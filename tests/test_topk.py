"""Sharded search equals one exact IndexFlatIP over all vectors."""

import numpy as np
import pytest

from xqg_ray.ids import passage_ids, shard_of
from xqg_ray.retrieval.index import build_index, index_from_bytes, index_to_bytes
from xqg_ray.retrieval.topk import exact_topk, merge_topk, ranked


def _data(n=500, d=16, nq=40, seed=0):
    rng = np.random.default_rng(seed)
    docids = [f"doc-{i}" for i in range(n)]
    ids = passage_ids(docids)
    return rng.normal(size=(n, d)).astype(np.float32), ids, rng.normal(size=(nq, d)).astype(np.float32), dict(zip(ids.tolist(), docids))


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7])
def test_sharded_equals_exact(num_shards):
    x, ids, q, _ = _data()
    k = 20
    sh = shard_of(ids, num_shards)
    ds, is_ = [], []
    for s in range(num_shards):
        m = sh == s
        # through bytes, as shards are stored
        index = index_from_bytes(index_to_bytes(build_index(x[m], ids[m], x.shape[1])))
        d, i = index.search(q, k)
        ds.append(d)
        is_.append(i)
    md, mi = merge_topk(ds, is_, k)
    ed, ei = exact_topk(q, x, ids, k)
    np.testing.assert_array_equal(mi, ei)
    np.testing.assert_allclose(md, ed, rtol=1e-5)
    # and against a plain numpy ranking: score descending, then id ascending
    scores = q @ x.T
    for row in range(len(q)):
        order = sorted(range(len(ids)), key=lambda j: (-scores[row, j], ids[j]))[:k]
        assert mi[row].tolist() == [int(ids[j]) for j in order]


def test_ties_break_by_id_and_padding_sorts_last():
    d = [np.array([[1.0, 0.5, -3.4e38]]), np.array([[1.0, 0.9, -3.4e38]])]
    i = [np.array([[11, 12, -1]]), np.array([[10, 13, -1]])]
    md, mi = merge_topk(d, i, 5)
    assert mi.tolist() == [[10, 11, 13, 12, -1]]  # tie at 1.0: id 10 before 11; -1 padding last
    assert md[0, :4].tolist() == [1.0, 1.0, np.float32(0.9), 0.5] and md[0, 4] == -np.inf
    assert ranked(md, mi) == [[(10, 1.0), (11, 1.0), (13, float(np.float32(0.9))), (12, 0.5)]]


def test_fewer_candidates_than_k_are_padded():
    md, mi = merge_topk([np.array([[0.3]])], [np.array([[7]])], 3)
    assert mi.tolist() == [[7, -1, -1]] and md[0, 0] == np.float32(0.3)


def test_l2_orders_ascending():
    _, mi = merge_topk([np.array([[0.5, 0.1]])], [np.array([[1, 2]])], 2, higher_is_better=False)
    assert mi.tolist() == [[2, 1]]


def test_factory_index_keeps_ids():
    x, ids, q, docid_of = _data(n=300)
    for factory in ("Flat", "HNSW16", "IVF4,Flat"):
        index = build_index(x, ids, x.shape[1], factory)
        _, i = index.search(x[:5], 1)
        assert set(i[:, 0].tolist()) <= set(ids.tolist())


def test_tie_across_the_cut_keeps_the_smaller_id():
    # Scores 3 (id 5), then 1 twice (ids 9 and 2): the second place is a tie that the
    # cut at k=2 crosses; the smaller id must win whichever shard order the heap saw.
    for d, i in (([np.array([[3.0, 1.0]]), np.array([[1.0, 0.0]])], [np.array([[5, 9]]), np.array([[2, 8]])]),
                 ([np.array([[1.0, 0.0]]), np.array([[3.0, 1.0]])], [np.array([[2, 8]]), np.array([[5, 9]])])):
        md, mi = merge_topk(d, i, 2)
        assert mi.tolist() == [[5, 2]] and md.tolist() == [[3.0, 1.0]]
    # The same rows many times over, mixed with rows that have no tie: only the tie rows change.
    n = 500
    d = [np.tile([[3.0, 1.0]], (n, 1)), np.tile([[1.0, 0.0]], (n, 1))]
    i = [np.tile([[5, 9]], (n, 1)), np.tile([[2, 8]], (n, 1))]
    d[1][::2] = [[0.5, 0.0]]  # even rows: id 2 scores 0.5, so 9 is second
    _, mi = merge_topk(d, i, 2)
    assert mi[::2].tolist() == [[5, 9]] * (n // 2) and mi[1::2].tolist() == [[5, 2]] * (n // 2)
