"""The xQG augmentation formula on hand-made vectors."""

import numpy as np
import pytest

from xqg_ray.retrieval.augment import augment, check_counts


def test_sum_formula_by_hand():
    p = np.array([[1.0, 0.0], [0.0, 2.0]])
    s = np.array([[3.0, 4.0], [0.0, 0.0]])
    c = np.array([2, 0])
    got = augment(p, s, c, alpha=0.25, aggregation="sum")
    # (1 - .25) * [1, 0] + .25 * [3, 4] = [1.5, 1.0]; no queries: .75 * [0, 2]
    np.testing.assert_allclose(got, [[1.5, 1.0], [0.0, 1.5]])
    assert got.dtype == np.float32


def test_zero_queries_sum_scales_but_mean_keeps_the_passage():
    p = np.array([[2.0, 0.0], [0.0, 2.0]])
    s = np.array([[4.0, 4.0], [0.0, 0.0]])
    c = np.array([2, 0])
    np.testing.assert_allclose(augment(p, s, c, 0.5, "sum"), [[3.0, 2.0], [0.0, 1.0]])
    np.testing.assert_allclose(augment(p, s, c, 0.5, "mean"), [[2.0, 1.0], [0.0, 2.0]])


def test_mean_formula_by_hand_and_no_renormalisation():
    p = np.array([[1.0, 0.0]])
    s = np.array([[3.0, 4.0]])
    got = augment(p, s, np.array([2]), alpha=0.5, aggregation="mean")
    np.testing.assert_allclose(got, [[0.5 + 0.75, 1.0]])
    assert not np.isclose(np.linalg.norm(got), 1.0)


def test_alpha_zero_is_the_baseline_and_one_is_the_queries():
    rng = np.random.default_rng(0)
    p, s = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    c = np.full(5, 3)
    np.testing.assert_allclose(augment(p, s, c, 0.0), p.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(augment(p, s, c, 1.0, "sum"), s.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(augment(p, s, c, 1.0, "mean"), (s / 3).astype(np.float32), rtol=1e-6)


def test_sweep_from_stored_sums_equals_direct_computation():
    """Any alpha from (E(p), sum E(q), count) equals the formula on the query vectors."""
    rng = np.random.default_rng(1)
    p = rng.normal(size=(3, 8))
    queries = [rng.normal(size=(n, 8)) for n in (35, 35, 35)]
    sums = np.stack([q.sum(0) for q in queries])
    counts = np.array([len(q) for q in queries])
    for alpha in (0.0, 0.01, 0.1, 0.5):
        direct = np.stack([(1 - alpha) * p[i] + alpha * sum(queries[i]) for i in range(3)])
        np.testing.assert_allclose(augment(p, sums, counts, alpha), direct, rtol=1e-5, atol=1e-6)


def test_shape_and_aggregation_errors():
    with pytest.raises(ValueError, match="shape"):
        augment(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2), 0.1)
    with pytest.raises(ValueError, match="aggregation"):
        augment(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2), 0.1, "max")


def test_counts_summary():
    assert check_counts(np.array([5, 5, 0])) == {"min": 0, "max": 5, "zero": 1, "passages": 3}


def test_slot_positions_count_queries_per_language():
    from xqg_ray.retrieval.augment import slot_positions

    group, slot = slot_positions([["de", "zh", "de", "zh", "de"], [], ["zh"]])
    assert group.tolist() == [0, 0, 0, 0, 0, 2]
    assert slot.tolist() == [0, 0, 1, 1, 2, 0]


def test_slot_sums_and_first_slots_match_a_hand_computation():
    from xqg_ray.retrieval.augment import first_slots, slot_sums

    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [5.0, 5.0]])
    group = np.array([0, 0, 0, 0, 1])
    slot = np.array([0, 0, 1, 1, 0])
    sums, counts = slot_sums(vecs, group, slot, 3)
    assert sums.shape == (3, 2, 2) and counts.tolist() == [[2, 2], [1, 0], [0, 0]]
    assert sums[0].tolist() == [[1.0, 1.0], [2.0, 3.0]] and sums[1].tolist() == [[5.0, 5.0], [0.0, 0.0]]
    s1, c1 = first_slots(sums, counts, 1)
    assert s1.tolist() == [[1.0, 1.0], [5.0, 5.0], [0.0, 0.0]] and c1.tolist() == [2, 1, 0]
    s_all, c_all = first_slots(sums, counts, 0)
    assert s_all.tolist() == [[3.0, 4.0], [5.0, 5.0], [0.0, 0.0]] and c_all.tolist() == [4, 1, 0]
    assert first_slots(sums, counts, 9)[1].tolist() == [4, 1, 0]  # n beyond the slots = all


def test_slots_round_trip_through_arrow_with_ragged_rows():
    import pyarrow as pa

    from xqg_ray.arrow_utils import slots_to_dense, vectors_to_arrow

    flat = vectors_to_arrow(np.arange(6, dtype=np.float32).reshape(3, 2))
    slots = pa.ListArray.from_arrays(pa.array([0, 2, 2, 3], pa.int32()), flat)  # rows with 2, 0, 1 slots
    counts = pa.ListArray.from_arrays(pa.array([0, 2, 2, 3], pa.int32()), pa.array([3, 1, 2], pa.int32()))
    sums, cnt = slots_to_dense(pa.chunked_array([slots]), pa.chunked_array([counts]), 2)
    assert sums.tolist() == [[[0, 1], [2, 3]], [[0, 0], [0, 0]], [[4, 5], [0, 0]]]
    assert cnt.tolist() == [[3, 1], [0, 0], [2, 0]]
