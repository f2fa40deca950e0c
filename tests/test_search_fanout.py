"""The search fan-out (shard actors + merge) equals one exact index over the same vectors."""

from __future__ import annotations

import numpy as np
import pytest

from xqg_ray.config import Pool, StorageConfig
from xqg_ray.ids import shard_of
from xqg_ray.retrieval.index import build_index, index_to_bytes
from xqg_ray.store.integrity import write_committed
from xqg_ray.stages.search import search_shards, searcher_actors, shard_k, start_searchers, stop_searchers
from xqg_ray.store.storage import Storage
from xqg_ray.retrieval.topk import exact_topk, merge_topk

POOL = Pool(num_cpus=0.5, num_gpus=0.0, min_actors=1, max_actors=1, torch_threads=1)


def _shards(root, systems: dict, ids: np.ndarray, num_shards: int) -> dict:
    """Index shard files for each system as the index stage writes them; manifests naming them."""
    storage, sh = Storage(), shard_of(ids, num_shards)
    manifests = {}
    for name, x in systems.items():
        recs = []
        for s in range(num_shards):
            m = sh == s
            index = build_index(x[m], ids[m], x.shape[1])
            recs.append(write_committed(storage, str(root), f"index/{name}/s-{s}.faiss", index_to_bytes(index)))
        manifests[name] = {"shards": recs}
    return manifests


def _fan_out(tmp_path, systems, ids, q, k, num_shards, batch_size=7, max_actors=None):
    searchers = start_searchers(str(tmp_path), StorageConfig(), _shards(tmp_path, systems, ids, num_shards), num_shards, POOL, max_actors)
    try:
        return search_shards(searchers, list(systems), q, k, batch_size)
    finally:
        stop_searchers(searchers)


@pytest.mark.parametrize("num_shards,k", [(1, 10), (2, 40), (3, 40), (3, 70)])
def test_fan_out_equals_one_exact_index(tmp_path, ray_local, num_shards, k):
    """Normal vectors: ids equal at every rank but where two scores tie within 1e-5; scores within 1e-5.

    60 passages: k=40 is more than a shard holds, k=70 more than all (-1 padding).
    """
    rng = np.random.default_rng(num_shards)
    ids = rng.choice(10**12, size=60, replace=False).astype(np.int64)
    systems = {"a": rng.normal(size=(60, 8)).astype(np.float32), "b": rng.normal(size=(60, 8)).astype(np.float32)}
    q = rng.normal(size=(23, 8)).astype(np.float32)
    got = _fan_out(tmp_path, systems, ids, q, k, num_shards)
    assert list(got) == ["a", "b"]
    for name, x in systems.items():
        _assert_as_exact(got[name], q, x, ids, k)


def _assert_as_exact(got, q, x, ids, k):
    """Scores within 1e-5 of one exact index; ids equal at every rank but where two scores tie within 1e-5."""
    d, i = got
    n, nq = len(ids), len(q)
    ed, ei = exact_topk(q, x, ids, k)
    assert d.shape == i.shape == (nq, k) and i.dtype == np.int64
    np.testing.assert_allclose(d, ed, atol=1e-5)  # -inf padding compares equal
    assert np.array_equal(i < 0, ei < 0) and int((i < 0).sum()) == nq * max(0, k - n)
    row_of = dict(zip(ids.tolist(), range(n)))
    for r, c in zip(*np.nonzero(i != ei)):  # only a tie may swap two passages
        assert abs(float(q[r] @ x[row_of[int(i[r, c])]]) - float(ed[r, c])) <= 1e-5
    valid = i[i >= 0].reshape(nq, min(k, n))  # every passage once per query
    assert all(len(set(row)) == len(row) for row in valid.tolist())


def test_skewed_shard_is_asked_again(tmp_path, ray_local):
    """Each shard is first asked for fewer than k (24 of 40 with 3 shards); when one shard holds
    most of a query's top k, those queries are asked again with k: still exact."""
    assert (shard_k(40, 3), shard_k(100, 4), shard_k(20, 2), shard_k(7, 1)) == (24, 39, 18, 7)
    rng = np.random.default_rng(11)
    ids = rng.choice(10**12, size=600, replace=False).astype(np.int64)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    x[shard_of(ids, 3) == 0] *= 10  # shard 0 wins almost every query's top 40
    q = rng.normal(size=(50, 8)).astype(np.float32)
    _assert_as_exact(_fan_out(tmp_path, {"s": x}, ids, q, 40, 3, batch_size=16)["s"], q, x, ids, 40)


def test_fewer_actors_than_shards_give_the_same_results(tmp_path, ray_local):
    """ray.search.max_actors: 5 shards on 2 actors (shards 0, 2, 4 and 1, 3) or on 1 give the same (D, I),
    bit for bit, as one actor per shard, from exactly that many actors."""
    rng = np.random.default_rng(3)
    ids = rng.choice(10**12, size=300, replace=False).astype(np.int64)
    systems = {"a": rng.normal(size=(300, 8)).astype(np.float32), "b": rng.normal(size=(300, 8)).astype(np.float32)}
    q = rng.normal(size=(40, 8)).astype(np.float32)
    manifests = _shards(tmp_path, systems, ids, 5)
    got = {}
    for max_actors in (None, 2, 1):
        searchers = start_searchers(str(tmp_path), StorageConfig(), manifests, 5, POOL, max_actors)
        try:
            actors = [id(a) for a in searcher_actors(searchers)]
            assert [s for _, s in searchers] == [0, 1, 2, 3, 4]
            assert [actors.index(id(a)) for a, _ in searchers] == [i % (max_actors or 5) for i in range(5)]
            got[max_actors] = search_shards(searchers, list(systems), q, 30, 7)
        finally:
            stop_searchers(searchers)
    for max_actors in (2, 1):
        for name in systems:
            assert np.array_equal(got[max_actors][name][0], got[None][name][0]), (max_actors, name)
            assert np.array_equal(got[max_actors][name][1], got[None][name][1]), (max_actors, name)
    _assert_as_exact(got[1]["a"], q, systems["a"], ids, 30)


@pytest.mark.parametrize("num_shards", [1, 2, 3])
def test_exact_ties_rank_by_id_as_one_index(tmp_path, ray_local, num_shards):
    """Small-integer vectors score exactly, with many ties: scores equal one index's at every rank, and
    ids rank by (score desc, id asc).  Only the passages tied at the k-th score may differ (FAISS cuts
    a tie at k by its own storage order, one index as much as a shard), and they are ranked by id too.
    """
    rng = np.random.default_rng(7)
    ids = rng.choice(10**9, size=45, replace=False).astype(np.int64)
    x = rng.integers(-1, 2, size=(45, 4)).astype(np.float32)  # 81 possible vectors: duplicates
    q = rng.integers(-1, 2, size=(30, 4)).astype(np.float32)
    k = 20
    d, i = _fan_out(tmp_path, {"t": x}, ids, q, k, num_shards, batch_size=4096)["t"]
    ed, ei = exact_topk(q, x, ids, k)
    assert np.array_equal(d, ed)
    scores = q @ x.T
    cut_ties = 0
    for r in range(len(q)):
        rule = [int(ids[j]) for j in sorted(range(45), key=lambda j: (-scores[r, j], ids[j]))]
        above = int((d[r] > d[r, -1]).sum())
        assert i[r, :above].tolist() == rule[:above] == ei[r, :above].tolist()
        tied = {int(ids[j]) for j in np.flatnonzero(scores[r] == d[r, -1])}
        assert set(i[r, above:].tolist()) <= tied and i[r, above:].tolist() == sorted(i[r, above:].tolist())
        cut_ties += len(tied) > k - above
    assert cut_ties > 0  # the data does exercise a tie cut at k


def test_merge_heap_path_equals_sort_path():
    """Ranked shard rows (the heap merge) and the same candidates shuffled (the sort) merge alike."""
    rng = np.random.default_rng(3)
    ds, is_ = [], []
    for s in range(4):
        d = rng.integers(0, 5, size=(200, 6)).astype(np.float32)  # ties within and across shards
        i = rng.choice(10**6, size=(200, 6), replace=False).astype(np.int64)
        i[:, 6 - s:] = -1  # shard s returns 6 - s results
        d = np.where(i >= 0, d, np.float32(-3.4e38))
        order = np.lexsort((np.where(i >= 0, i, 2**62), -d), axis=1)
        ds.append(np.take_along_axis(d, order, axis=1))
        is_.append(np.take_along_axis(i, order, axis=1))
    shuffled = [rng.permutation(6) for _ in range(4)]
    for k in (1, 5, 30):
        hd, hi = merge_topk(ds, is_, k)
        sd, si = merge_topk([d[:, p] for d, p in zip(ds, shuffled)], [i[:, p] for i, p in zip(is_, shuffled)], k)
        assert np.array_equal(hi, si) and np.array_equal(hd, sd)
        assert int((hi >= 0).sum()) == 200 * min(k, 18)
    _, mi = merge_topk([np.array([[2.0, 1.0]]), np.array([[2.0, 2.0]])], [np.array([[9, 4]]), np.array([[7, 8]])], 3)
    assert mi.tolist() == [[7, 8, 9]]  # a tie at 2.0 across shards and at the k-th place: id ascending


def test_the_local_clusters_search_actors_serve_the_next_run_with_its_own_shards(tmp_path, ray_local):
    """Two searches of different indexes, one after the other, on the local cluster: the same actor processes
    answer both, each time from the shards it loaded for that search (exact against each index), holding none
    between them."""
    import os

    rng = np.random.default_rng(11)
    ids = rng.choice(10**12, size=80, replace=False).astype(np.int64)
    q = rng.normal(size=(9, 8)).astype(np.float32)
    pids = []
    for run in ("first", "second"):
        x = rng.normal(size=(80, 8)).astype(np.float32)
        root = tmp_path / run
        searchers = start_searchers(str(root), StorageConfig(), _shards(root, {"a": x}, ids, 2), 2, POOL)
        try:
            actors = searcher_actors(searchers)
            pids.append(ray_local.get([a.__ray_call__.remote(lambda self: os.getpid()) for a in actors]))
            _assert_as_exact(search_shards(searchers, ["a"], q, 10, 4)["a"], q, x, ids, 10)
        finally:
            stop_searchers(searchers)
        assert ray_local.get([a.__ray_call__.remote(lambda self: len(self.indexes)) for a in actors]) == [0, 0]
    assert len(set(pids[0])) == 2 and pids[1] == pids[0]
