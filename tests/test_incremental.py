"""Incremental updates equal a rebuild, and a run killed with SIGKILL resumes to identical outputs.

The corpus versions come from ``corpus_versions``: version 2 adds 3 passages,
changes 2 and removes 2.  Every count below is exact: a stage that recomputed
one passage too many, or encoded the test questions again, fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from procs import end_driver
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


def _spawn(cfg_args, ray_tmp: str) -> subprocess.Popen:
    # Its own session and Ray temp dir, so the test can SIGKILL the driver and then
    # every Ray process it started (Ray's workers leave the driver's process group).
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    return subprocess.Popen([sys.executable, "-m", "xqg_ray", "run", SMOKE, *cfg_args], cwd=REPO, start_new_session=True,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(cfg_args, commits: Path, timeout: float = 240.0) -> int:
    """Start a run, SIGKILL its driver once a unit under ``commits`` committed; returns how many had, all processes gone."""
    ray_tmp = tempfile.mkdtemp(prefix="xk", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    proc = _spawn(cfg_args, ray_tmp)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            if commits.is_dir() and any(commits.glob("*.json")):
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before a unit under {commits} committed")
            time.sleep(0.02)
    finally:
        end_driver(proc, ray_tmp)  # SIGKILL the driver, then raylet, GCS and workers
    return len(list(commits.glob("*.json")))


def test_kill_during_generation_and_encoding_then_resume(data, ref_v1, tmp_path):
    ref, _ = ref_v1
    out = tmp_path / "killed"
    args = files_overrides(data["v1"], data["queries"], out) + ["corpus.num_partitions=6", "ray.max_actors=1", "ray.min_actors=1"]
    P = 6
    gen_done = _kill_when(args, out / "generated" / "t5" / "commits")
    assert 1 <= gen_done < P, gen_done
    assert not (out / "generated" / "t5" / "current.json").exists()
    emb_done = _kill_when(args, out / "embeddings" / "commits")
    assert 1 <= emb_done < P, emb_done
    t5 = current(out, "generated/t5")
    assert t5["unit_counts"] == {"total": P, "computed": P - gen_done, "resumed": gen_done}
    assert t5["rows"]["resumed"] + t5["rows"]["computed"] == 60
    final = run(load_config(SMOKE, args))
    emb = current(out, "embeddings")
    assert emb["unit_counts"] == {"total": P, "computed": P - emb_done, "resumed": emb_done}
    # identical to an uninterrupted run of the same command: every metric exactly, every run file byte for byte
    whole = tmp_path / "whole"
    whole_metrics = run(load_config(SMOKE, files_overrides(data["v1"], data["queries"], whole) + args[-3:]))
    assert final["systems"] == whole_metrics["systems"]
    for s in SYSTEMS:
        assert (out / "runs" / f"{s}.trec").read_bytes() == (whole / "runs" / f"{s}.trec").read_bytes(), s
    # and the same rankings as the 4-partition reference, up to float-noise near-ties (batches differ across
    # partition counts, so a vector can differ in its last bits and two scores within 1e-4 can swap)
    for s in SYSTEMS:
        assert_same_runs(out / "runs" / f"{s}.trec", ref / "runs" / f"{s}.trec")
    gen = pq.read_table(str(out / "generated" / "t5" / "data"))
    assert gen.num_rows == 60 and len(set(gen["id"].to_pylist())) == 60
    ref_gen = pq.read_table(str(ref / "generated" / "t5" / "data"))
    assert gen.sort_by("id").equals(ref_gen.sort_by("id"))
