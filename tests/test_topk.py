"""Sharded search equals one exact IndexFlatIP over all vectors."""

import numpy as np
import pytest

from xqg_ray.ids import passage_ids, shard_of
from xqg_ray.index import build_index, index_from_bytes, index_to_bytes
from xqg_ray.topk import exact_topk, merge_topk


def _data(n=500, d=16, nq=40, seed=0):
    rng = np.random.default_rng(seed)
    docids = [f"doc-{i}" for i in range(n)]
    ids = passage_ids(docids)
    return rng.normal(size=(n, d)).astype(np.float32), ids, rng.normal(size=(nq, d)).astype(np.float32), dict(zip(ids.tolist(), docids))


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7])
def test_sharded_equals_exact(num_shards):
    x, ids, q, docid_of = _data()
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
    merged = merge_topk(ds, is_, k, docid_of)
    exact = exact_topk(q, x, ids, k, docid_of)
    assert [[p for p, _ in r] for r in merged] == [[p for p, _ in r] for r in exact]
    np.testing.assert_allclose([[s for _, s in r] for r in merged], [[s for _, s in r] for r in exact], rtol=1e-5)


def test_ties_break_by_docid_and_padding_is_dropped():
    docid_of = {10: "b", 11: "a", 12: "c", 13: "d"}
    d = [np.array([[1.0, 0.5, -3.4e38]]), np.array([[1.0, 0.9, -3.4e38]])]
    i = [np.array([[10, 12, -1]]), np.array([[11, 13, -1]])]
    out = merge_topk(d, i, 3, docid_of)
    assert [p for p, _ in out[0]] == [11, 10, 13]  # tie at 1.0: "a" before "b"; -1 padding dropped


def test_l2_orders_ascending():
    docid_of = {1: "x", 2: "y"}
    out = merge_topk([np.array([[0.5, 0.1]])], [np.array([[1, 2]])], 2, docid_of, higher_is_better=False)
    assert [p for p, _ in out[0]] == [2, 1]


def test_factory_index_keeps_ids():
    x, ids, q, docid_of = _data(n=300)
    for factory in ("Flat", "HNSW16", "IVF4,Flat"):
        index = build_index(x, ids, x.shape[1], factory)
        _, i = index.search(x[:5], 1)
        assert set(i[:, 0].tolist()) <= set(ids.tolist())
