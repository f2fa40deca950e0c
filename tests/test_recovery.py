"""Recovery that recovers: a deleted or damaged committed file is recomputed by the next run.

A published manifest is reused, and a committed unit skipped, only while every
file it names exists with its recorded size (storage metadata, no hashing).  A
unit whose file is gone is computed again -- exactly that unit -- and the
outputs equal the first run's.  A file whose bytes changed (same size) stops
the run with one line saying to delete it and rerun; doing so recomputes it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from corpus_versions import current
from xqg_ray.config import load_config
from xqg_ray.pipeline import run
from xqg_ray.store.integrity import IntegrityError

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ["baseline", "xqg", "xqg-a0.3", "causal-mean"]


def cfg_for(out: Path, shared: Path):
    return load_config(str(REPO / "conf" / "smoke.yaml"), [f"output_dir={out}", f"benchmark.source={shared}", "ray.progress=false"])


def outputs(out: Path) -> dict:
    return {s: (out / "runs" / f"{s}.trec").read_bytes() for s in SYSTEMS}


@pytest.fixture(scope="module")
def finished(smoke_run):
    """conf/smoke.yaml as shipped, built once for this file and tests/test_pipeline.py (conftest); copied before use."""
    return smoke_run


def test_deleted_committed_files_are_recomputed_unit_by_unit(finished, shared_datasets, tmp_path):
    first, metrics = finished
    out = tmp_path / "run"
    shutil.copytree(first, out)
    gen, emb, idx = current(out, "generated/t5"), current(out, "embeddings"), current(out, "index/xqg")
    shard = idx["shards"][1]
    for f in (gen["units"][1]["file"], emb["units"][2]["file"], shard["file"]):
        (out / f).unlink()
    again = run(cfg_for(out, shared_datasets))
    P = len(gen["units"])
    t5 = current(out, "generated/t5")
    assert t5["unit_counts"] == {"total": P, "computed": 1, "resumed": P - 1}
    assert t5["rows"]["computed"] == gen["units"][1]["rows"]
    assert [u["file"] for u in t5["units"]] == [u["file"] for u in gen["units"]]
    # generated/gpt2 was untouched: published and reused as is.
    assert again["stages"]["generated/gpt2"]["reused"] is True
    e = current(out, "embeddings")
    assert e["unit_counts"] == {"total": P, "computed": 1, "resumed": P - 1}
    assert [u["sha256"] for u in e["units"]] == [u["sha256"] for u in emb["units"]]
    x = current(out, "index/xqg")
    assert [sh["mode"] for sh in x["shards"]] == ["resumed", "built"]
    assert x["changes"] == {"added": shard["ntotal"], "removed": 0}
    assert [sh["sha256"] for sh in x["shards"]] == [sh["sha256"] for sh in idx["shards"]]
    assert current(out, "index/baseline")["fingerprint"] == current(first, "index/baseline")["fingerprint"]
    assert outputs(out) == outputs(first)
    assert again["systems"] == metrics["systems"]


def test_a_changed_file_stops_the_run_and_deleting_it_leads_out(finished, shared_datasets, tmp_path):
    first, metrics = finished
    out = tmp_path / "run"
    shutil.copytree(first, out)
    rel = current(out, "index/baseline")["shards"][0]["file"]
    data = bytearray((out / rel).read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only the sha256 on read notices
    (out / rel).write_bytes(bytes(data))
    # Committed search results would be reused without reading the shards: drop them so search runs.
    shutil.rmtree(out / "results")
    with pytest.raises(IntegrityError, match=r"does not match its sha256 .* delete it and rerun"):
        run(cfg_for(out, shared_datasets))
    (out / rel).unlink()
    again = run(cfg_for(out, shared_datasets))
    assert [sh["mode"] for sh in current(out, "index/baseline")["shards"]] == ["built", "resumed"]
    assert outputs(out) == outputs(first)
    assert again["systems"] == metrics["systems"]


def test_planner_trusts_only_records_whose_files_are_there(tmp_path):
    """plan_stage on a bare ledger: committed -> resumed, file deleted or resized -> todo, published -> done."""
    from xqg_ray.stages.plan import plan_stage
    from xqg_ray.store.integrity import write_committed
    from xqg_ray.store.ledger import Ledger
    from xqg_ray.store.storage import Storage

    root = str(tmp_path)
    led = Ledger(Storage(), root, "generated/g")
    units = {"p-00000": "k0" * 8, "p-00001": "k1" * 8}
    for label, key in units.items():
        rec = write_committed(led.storage, root, led.data_rel(label, key), label.encode())
        led.commit(label, key, {**rec, "rows": 1})
    plan = plan_stage(led, "fp", units, resume=True)
    assert (plan.published, sorted(plan.resumed), plan.todo) == (None, ["p-00000", "p-00001"], [])
    assert {r["mode"] for r in plan.resumed.values()} == {"resumed"}
    m = led.publish("fp", {"units": [{**plan.resumed[label], "commit": led.commit_rel(label, key)} for label, key in units.items()]})
    assert plan_stage(led, "fp", units, resume=True).published == m
    assert plan_stage(led, "fp", units, resume=False).todo == ["p-00000", "p-00001"]
    (tmp_path / led.data_rel("p-00001", units["p-00001"])).write_bytes(b"longer than before")
    plan = plan_stage(led, "fp", units, resume=True, prior_entries=lambda m: {f"p-0000{i}": u for i, u in enumerate(m["units"])})
    assert (plan.published, sorted(plan.resumed), plan.todo, sorted(plan.prior)) == (None, ["p-00000"], ["p-00001"], ["p-00000"])
    (tmp_path / led.data_rel("p-00000", units["p-00000"])).unlink()
    plan = plan_stage(led, "fp", units, resume=True)
    assert (plan.published, plan.resumed, plan.todo) == (None, {}, ["p-00000", "p-00001"])


def test_a_deleted_corpus_partition_is_ingested_again(finished, shared_datasets, tmp_path):
    first, metrics = finished
    out = tmp_path / "run"
    shutil.copytree(first, out)
    import json

    snap = json.loads((out / current(out, "benchmark")["snapshot_file"]).read_text())
    part = snap["partitions"][1]
    (out / part["file"]).unlink()
    again = run(cfg_for(out, shared_datasets))
    assert again["stages"]["benchmark"]["reused"] is False
    new = json.loads((out / current(out, "benchmark")["snapshot_file"]).read_text())
    assert [(p["file"], p["sha256"]) for p in new["partitions"]] == [(p["file"], p["sha256"]) for p in snap["partitions"]]
    assert new["corpus_hash"] == snap["corpus_hash"]
    # Same corpus: every later stage is reused as published.
    assert [k for k in ("generated/t5", "generated/gpt2", "embeddings", "index") if not again["stages"][k]["reused"]] == []
    assert outputs(out) == outputs(first)
    assert again["systems"] == metrics["systems"]
