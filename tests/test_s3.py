"""Object storage is a configuration change: the storage layer and a whole run on S3.

An S3-compatible moto server runs on 127.0.0.1 for this module and is stopped after.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xqg_ray.config import StorageConfig, load_config
from xqg_ray.store.storage import Storage

REPO = Path(__file__).resolve().parents[1]
BUCKET = "xqg-test"


@pytest.fixture
def storage(s3_endpoint) -> Storage:
    return Storage(StorageConfig(s3_endpoint=s3_endpoint, access_key="testing", secret_key="testing"))


def test_storage_roundtrip(storage):
    import pyarrow as pa

    base = f"s3://{BUCKET}/unit"
    storage.write_json(f"{base}/a/m.json", {"x": [1, 2]})
    assert storage.read_json(f"{base}/a/m.json") == {"x": [1, 2]}
    t = pa.table({"id": pa.array([1, 2], pa.int64()), "s": ["a", "b"]})
    storage.write_table(f"{base}/a/t.parquet", t)
    assert storage.read_table(f"{base}/a/t.parquet").equals(t)
    assert storage.exists(f"{base}/a/t.parquet") and not storage.exists(f"{base}/nope")
    assert storage.list_files(f"{base}/a", ".parquet") == [f"{base}/a/t.parquet"]
    storage.delete(f"{base}/a")
    assert not storage.exists(f"{base}/a/m.json")


def _s3_overrides(s3_endpoint, out):
    return [f"output_dir={out}", f"storage.s3_endpoint={s3_endpoint}", "storage.access_key=testing", "storage.secret_key=testing", "ray.progress=false"]


def test_whole_run_on_s3(s3_endpoint, storage, ray_local, shared_datasets, tiny_models):
    """conf/smoke.yaml with output_dir on S3: same artifacts, readable, and a rerun resumes."""
    import faiss

    from xqg_ray.store.sealed import read_sealed
    from xqg_ray.pipeline import run

    out = f"s3://{BUCKET}/runs/smoke"
    overrides = _s3_overrides(s3_endpoint, out) + [f"benchmark.source={shared_datasets}", "benchmark.max_queries_per_language=6", "benchmark.corpus_limit=24"]
    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), overrides)
    cfg.systems = [s for s in cfg.systems if s.name in ("baseline", "xqg")]
    metrics = run(cfg)
    assert set(metrics["systems"]) == {"baseline", "xqg"}
    for rel in ("config.yaml", "metrics.json", "report.md", "runs/xqg.trec", "runs/xqg.xor.json", "per_query/xqg.parquet", "queries/current.json"):
        assert storage.exists(f"{out}/{rel}"), rel
    assert "testing" not in storage.read_text(f"{out}/config.yaml")  # secrets redacted
    ptr = read_sealed(storage, out, "index/xqg/current.json")
    m = read_sealed(storage, out, ptr["manifest"])
    total = 0
    for sh in m["shards"]:
        assert not sh["file"].startswith("s3://")  # relative to output_dir
        index = faiss.deserialize_index(np.frombuffer(storage.read_bytes(f"{out}/{sh['file']}"), dtype=np.uint8))
        total += index.ntotal
    assert total == 24
    again = run(cfg)
    assert again["stages"]["embeddings"]["reused"] and again["stages"]["index"]["reused"]
    assert again["systems"] == metrics["systems"]


def test_update_flow_on_s3(s3_endpoint, storage, ray_local, shared_datasets, tiny_models, tmp_path, scratch_v2):
    """Corpus versions in a bucket: an update on S3 computes only the change and equals a rebuild (made locally)."""
    import boto3

    from corpus_versions import ADDED, CHANGED, REMOVED, assert_same_runs, write_queries, write_version
    from xqg_ray.store.sealed import read_sealed
    from xqg_ray.pipeline import run

    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")

    def upload(version: int) -> None:
        local = tmp_path / f"v{version}"
        write_version(shared_datasets, local, version)
        for obj in client.list_objects_v2(Bucket=BUCKET, Prefix="corpus/").get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
        for f in sorted(local.iterdir()):
            client.put_object(Bucket=BUCKET, Key=f"corpus/{f.name}", Body=f.read_bytes())

    queries = write_queries(shared_datasets, tmp_path / "queries.parquet")
    client.put_object(Bucket=BUCKET, Key="queries.parquet", Body=queries.read_bytes())
    files = ["benchmark.kind=files", f"benchmark.corpus=s3://{BUCKET}/corpus", f"benchmark.queries=s3://{BUCKET}/queries.parquet",
             "benchmark.corpus_limit=0", "benchmark.max_queries_per_language=0"]

    def cfg(out):
        c = load_config(str(REPO / "conf" / "smoke.yaml"), _s3_overrides(s3_endpoint, out) + files)
        c.systems = [s for s in c.systems if s.name in ("baseline", "xqg")]
        c.generators = {"t5": c.generators["t5"]}
        return c

    out = f"s3://{BUCKET}/runs/update"
    upload(1)
    run(cfg(out))
    upload(2)
    updated = run(cfg(out))
    scratch, rebuilt = scratch_v2

    def current(root, stage):
        return read_sealed(storage, root, read_sealed(storage, root, f"{stage}/current.json")["manifest"])

    delta = len(ADDED) + len(CHANGED)
    assert current(out, "benchmark")["changes"] == {"added": 3, "changed": 2, "removed": 2, "unchanged": 56}
    # the corpus partitions on S3 too: delta segments of only the added and changed passages
    snap = read_sealed(storage, out, current(out, "benchmark")["snapshot_file"])
    assert sum(r["segments"][-1]["rows"] for r in snap["partitions"] if len(r.get("segments", [])) > 1) == delta
    assert current(out, "generated/t5")["rows"] == {"total": 61, "computed": delta, "reused": 61 - delta, "resumed": 0}
    assert current(out, "embeddings")["computed_by_kind"] == {"passage": delta, "gen:t5": delta}
    assert updated["stages"]["queries"]["reused"] and updated["stages"]["queries"]["rows"] == 0
    assert current(out, "index/xqg")["modes"] == ["updated"]
    for s in ("baseline", "xqg"):
        a = tmp_path / f"{s}-update.trec"
        a.write_bytes(storage.read_bytes(f"{out}/runs/{s}.trec"))
        assert_same_runs(a, scratch / "runs" / f"{s}.trec")
        assert not {line.split()[2] for line in a.read_text().splitlines()} & set(REMOVED)
    assert updated["systems"] == {s: rebuilt["systems"][s] for s in ("baseline", "xqg")}
