"""Incremental updates equal a rebuild (a run killed with SIGKILL, mid-stage included: tests/test_kill_points.py).

The corpus versions come from ``corpus_versions``: version 2 adds 3 passages,
changes 2 and removes 2.  Every count below is exact: a stage that recomputed
one passage too many, or encoded the test questions again, fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corpus_versions import ADDED, CHANGED, REMOVED, assert_same_runs, current, files_overrides, read_trec
from xqg_ray.config import load_config
from xqg_ray.pipeline import run
from xqg_ray.store.ledger import file_records

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
SYSTEMS = ["baseline", "xqg", "xqg-a0.3", "causal-mean"]


@pytest.fixture(scope="module")
def data(versions):
    return versions


def _cfg(data, version: str, out: Path, *extra: str):
    return load_config(SMOKE, files_overrides(data[version], data["queries"], out) + list(extra))


def test_update_equals_rebuild(data, ref_v1, scratch_v2, tmp_path):
    ref, _ = ref_v1
    inc = tmp_path / "inc"
    shutil.copytree(ref, inc)
    updated = run(_cfg(data, "v2", inc))
    scratch, rebuilt = scratch_v2
    for s in SYSTEMS:
        assert_same_runs(inc / "runs" / f"{s}.trec", scratch / "runs" / f"{s}.trec")
        assert pq.read_table(inc / "per_query" / f"{s}.parquet").equals(pq.read_table(scratch / "per_query" / f"{s}.parquet"))
        retrieved = {d for hits in read_trec(inc / "runs" / f"{s}.trec").values() for d, _ in hits}
        assert not retrieved & set(REMOVED), s
    assert updated["systems"] == rebuilt["systems"]
    # what was recomputed: exactly the added and changed passages, and no test question
    changes = {"added": len(ADDED), "changed": len(CHANGED), "removed": len(REMOVED), "unchanged": 60 - len(REMOVED) - len(CHANGED)}
    assert current(inc, "benchmark")["changes"] == changes
    assert current(inc, "benchmark")["parent_snapshot"] == current(ref, "benchmark")["snapshot"]
    delta = len(ADDED) + len(CHANGED)
    for gen in ("t5", "gpt2"):
        m = current(inc, f"generated/{gen}")
        assert m["rows"] == {"total": 61, "computed": delta, "reused": 61 - delta, "resumed": 0}, gen
        assert m["passages"] == changes
    emb = current(inc, "embeddings")
    assert emb["computed_by_kind"] == {"passage": delta, "gen:t5": delta, "gen:gpt2": delta}
    assert updated["stages"]["queries"] == {**updated["stages"]["queries"], "rows": 0, "reused": True}
    assert rebuilt["stages"]["queries"]["rows"] == pq.read_table(data["queries"]).num_rows == 46
    assert not rebuilt["stages"]["queries"]["reused"]
    for s in SYSTEMS:
        m = current(inc, f"index/{s}")
        assert m["modes"] == ["updated"] and m["changes"] == {"added": delta, "removed": len(REMOVED) + len(CHANGED)}, s
        assert m["ntotal"] == 61
    # nothing left behind that no manifest names (a partition kept as delta segments names each, and its tombstones)
    units = current(inc, "generated/t5")["units"]
    assert any(u.get("segments") for u in units)
    named = {r["file"] for u in units for r in file_records(u) if "/data/" in r["file"]} | {u["commit"] for u in units}
    on_disk = {str(p.relative_to(inc)) for p in (inc / "generated" / "t5").rglob("*") if p.is_file() and p.parent.name in ("data", "commits")}
    assert on_disk == named
