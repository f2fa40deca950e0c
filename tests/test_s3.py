"""Object storage is a configuration change: the storage layer and a whole run on S3.

An S3-compatible moto server runs on 127.0.0.1 for this module and is stopped after.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from xqg_ray.config import StorageConfig, load_config
from xqg_ray.storage import Storage

REPO = Path(__file__).resolve().parents[1]
BUCKET = "xqg-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


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


def test_whole_run_on_s3(s3_endpoint, storage, ray_local, shared_datasets, tiny_models):
    """conf/smoke.yaml with output_dir on S3: same artifacts, readable, and a rerun resumes."""
    import faiss

    from xqg_ray.pipeline import run

    out = f"s3://{BUCKET}/runs/smoke"
    overrides = [
        f"output_dir={out}",
        f"benchmark.source={shared_datasets}",
        f"storage.s3_endpoint={s3_endpoint}",
        "storage.access_key=testing",
        "storage.secret_key=testing",
        "benchmark.max_queries_per_language=6",
        "benchmark.corpus_limit=24",
    ]
    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), overrides)
    cfg.systems = [s for s in cfg.systems if s.name in ("baseline", "xqg")]
    metrics = run(cfg)
    assert set(metrics["systems"]) == {"baseline", "xqg"}
    for rel in ("config.yaml", "metrics.json", "report.md", "runs/xqg.trec", "runs/xqg.xor.json", "per_query/xqg.parquet", "queries/encoded.parquet"):
        assert storage.exists(f"{out}/{rel}"), rel
    assert "testing" not in storage.read_text(f"{out}/config.yaml")  # secrets redacted
    m = storage.read_json(f"{out}/index/xqg/manifest.json")
    total = 0
    for sh in m["shards"]:
        data = storage.read_bytes(f"{out}/index/xqg/{sh['file']}")
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        total += index.ntotal
    assert total == 24
    again = run(cfg)
    assert again["stages"]["embeddings"]["reused"] and again["stages"]["index"]["reused"]
    assert again["systems"] == metrics["systems"]
