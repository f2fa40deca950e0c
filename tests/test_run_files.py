"""Run files other tools read: a TREC tool re-sorting ``runs/SYSTEM.trec`` gets the project's ranks exactly.

The project ranks by score descending, then passage id ascending; trec_eval and
pytrec_eval sort by score descending, then docno descending (as strings).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from xqg_ray.stages.evaluate import strictly_decreasing, write_runs
from xqg_ray.store.storage import Storage

# Passage ids and docids chosen so that docno-descending order is the reverse of id-ascending order.
DOCS = {3: ("doc-a", "alpha text"), 5: ("doc-b", "beta text"), 9: ("doc-c", "gamma text"), 12: ("doc-d", "delta text")}


def _write(tmp_path, d, i):
    ctx = SimpleNamespace(cfg=SimpleNamespace(eval=SimpleNamespace(kt=[2])), storage=Storage(), root=str(tmp_path))
    queries = pa.table({"qid": ["q1"], "lang": ["de"]})
    ranks = write_runs(ctx, "sys", queries, np.asarray(d, np.float32), np.asarray(i, np.int64), DOCS)
    rows = [line.split() for line in (tmp_path / "runs" / "sys.trec").read_text().splitlines()]
    xor = json.loads((tmp_path / "runs" / "sys.xor.json").read_text())
    return ranks, rows, xor


def trec_eval_order(rows):
    """How trec_eval orders one query's run lines: score descending, then docno descending."""
    return [r[2] for r in sorted(rows, key=lambda r: (float(r[4]), r[2]), reverse=True)]


def test_exact_ties_keep_the_project_order_in_every_file(tmp_path):
    tie = np.float32(0.5)
    # Three exact ties (given out of order) and a score one ulp above 0.25, which %.6f would have merged with 0.25.
    low = np.nextafter(np.float32(0.25), np.float32(1))
    ranks, rows, xor = _write(tmp_path, [[tie, tie, tie, low, 0.0]], [[5, 9, 3, 12, -1]])
    assert ranks == {"q1": ["doc-a", "doc-b", "doc-c", "doc-d"]}
    assert [r[2] for r in rows] == ["doc-a", "doc-b", "doc-c", "doc-d"]
    assert [r[3] for r in rows] == ["1", "2", "3", "4"]
    assert trec_eval_order(rows) == ["doc-a", "doc-b", "doc-c", "doc-d"]
    assert xor[0]["ctxs"] == ["alpha text", "beta text", "gamma text", "delta text"]
    ulp = np.float32(0.5) - np.nextafter(np.float32(0.5), np.float32(0))
    assert [np.float32(r[4]) for r in rows] == [tie, tie - ulp, tie - 2 * ulp, low]
    assert [r[4] for r in rows] == ["0.5", "0.49999997", "0.49999994", "0.25000003"]


def test_scores_are_written_at_float32_round_trip_precision(tmp_path):
    s = np.array([0.123456789, 0.123456785, -1.5e-7], np.float32)
    _, rows, _ = _write(tmp_path, [s], [[12, 3, 5]])
    assert [np.float32(r[4]) for r in rows] == list(s)
    assert [r[2] for r in rows] == ["doc-d", "doc-a", "doc-b"]


def test_strictly_decreasing_steps_each_tie_down_one_ulp():
    one = np.float32(1.0)
    below = np.nextafter(one, np.float32(0))
    got = strictly_decreasing(np.array([1.0, 1.0, 1.0, 0.5], np.float32))
    assert got.tolist() == [1.0, float(below), float(np.nextafter(below, np.float32(0))), 0.5]
