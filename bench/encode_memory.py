"""Peak RSS of the encode stage's model host for one partition of N and of factor x N passages (tiny encoder).

    .venv/bin/python bench/encode_memory.py --n 20000 --factor 10
    .venv/bin/python bench/encode_memory.py --n 20000 --factor 10 --window-rows 1000000000   # one window: the old whole-partition encoder

The inputs are committed synthetic files: a corpus partition (passages of
``--words`` words) and one generator's table (``--queries`` questions per
passage, in two languages), written by this process.  Each size is then
encoded in a fresh process that loads ``EncodePartition`` (tiny-bert, one
torch thread) and runs the partition's unit exactly as an actor would: read
and verify the inputs, encode passages and questions, write and commit the
embeddings.  That process reports its peak RSS (``ru_maxrss``) and its RSS
once the model is loaded, so the table shows what the partition itself adds.
The claim it checks: with windows of ``encoder.window_rows`` texts the peak
does not grow with the partition (goal: peak at factor x N <= 1.5 x peak at N).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("river city king war science music football university church empire language island bridge "
         "museum railway emperor treaty planet ocean mountain desert festival harbour castle garden").split()


def write_inputs(root: str, n: int, queries: int, words: int, seed: int = 0) -> Dict[str, Any]:
    """A committed corpus partition of ``n`` passages and one generator's table; the unit plan of their partition."""
    import numpy as np
    import pyarrow as pa

    from xqg_ray.ids import content_hash
    from xqg_ray.schemas import GENERATED_SCHEMA
    from xqg_ray.stages.records import EncodePartitionUnit
    from xqg_ray.store.integrity import write_table_committed
    from xqg_ray.store.storage import Storage

    rng = np.random.default_rng(seed)
    vocab = np.array([w + str(i) for w in WORDS for i in range(40)])
    texts = [" ".join(row) for row in vocab[rng.integers(0, len(vocab), size=(n, words))]]
    hashes = [content_hash("T", t) for t in texts]
    ids = pa.array(np.arange(1, n + 1, dtype=np.int64))
    storage = Storage()
    corpus = write_table_committed(storage, root, "in/corpus.parquet",
                                   pa.table({"id": ids, "title": ["T"] * n, "text": texts, "content_hash": hashes}))
    q = vocab[rng.integers(0, len(vocab), size=(n * queries, 6))]
    flat = pa.StructArray.from_arrays([pa.array(["de", "zh"] * (n * queries // 2) + ["de"] * (n * queries % 2)),
                                       pa.array([" ".join(r) for r in q])], names=["lang", "text"])
    lists = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * queries), flat)
    gen = write_table_committed(storage, root, "in/gen.parquet", pa.table(
        {"id": ids, "content_hash": hashes, "queries": lists, "failed": pa.array(np.zeros(n, np.int32))}, schema=GENERATED_SCHEMA))
    return EncodePartitionUnit(stage="embeddings", partition=0, unit="p-00000", key="bench", corpus=corpus,
                               gens={"g": {"src": "bench", "key": "bench", **gen}}, prior=None,
                               out="embeddings/data/p-00000-bench.parquet").to_json()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def encode_one(root: str, window_rows: int, threads: int) -> Dict[str, Any]:
    """In this (fresh) process: load the actor, run the unit; peak and loaded RSS in MB."""
    from xqg_ray.config import EncoderConfig, StorageConfig
    from xqg_ray.models.loading import resolve_model
    from xqg_ray.stages.encode_actor import EncodePartition

    unit = json.loads(Path(root, "unit.json").read_text())
    cfg = EncoderConfig(model=resolve_model("tiny:tiny-bert").path, pooling="cls", max_passage_length=128, window_rows=window_rows)
    actor = EncodePartition(root, StorageConfig(), cfg, threads)
    loaded = rss_mb()
    t = time.perf_counter()
    rec = actor.run_unit(unit)
    seconds = time.perf_counter() - t
    return {"rows": rec["rows"], "bytes": rec["bytes"], "seconds": round(seconds, 1), "loaded_mb": round(loaded, 1),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="passages at the small size")
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--queries", type=int, default=4, help="generated questions per passage")
    ap.add_argument("--words", type=int, default=60, help="words per passage")
    ap.add_argument("--window-rows", type=int, default=0, help="encoder.window_rows (0: the config's default)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(encode_one(a.child, a.window_rows, a.threads)))
        return
    from xqg_ray.config import EncoderConfig

    window = a.window_rows or EncoderConfig().window_rows
    results = []
    with tempfile.TemporaryDirectory(prefix="xqg-encode-mem-") as tmp:
        for n in (a.n, a.n * a.factor):
            root = os.path.join(tmp, f"n{n}")
            Path(root).mkdir()
            Path(root, "unit.json").write_text(json.dumps(write_inputs(root, n, a.queries, a.words)))
            out = subprocess.run([sys.executable, __file__, "--child", root, "--window-rows", str(window), "--threads", str(a.threads)],
                                 check=True, capture_output=True, text=True).stdout
            r = {"passages": n, "texts": n * (1 + a.queries), **json.loads(out.strip().splitlines()[-1])}
            r["added_mb"] = round(r["peak_mb"] - r["loaded_mb"], 1)
            results.append(r)
            print(json.dumps(r), flush=True)
    small, big = results
    print(f"\nencoder.window_rows={window}, {a.queries} questions per passage, tiny-bert, {a.threads} thread(s)")
    print("| passages | texts | seconds | texts/s | RSS with model loaded (MB) | peak RSS (MB) | peak - loaded (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['passages']:,} | {r['texts']:,} | {r['seconds']} | {r['texts'] / max(r['seconds'], 1e-9):,.0f} | "
              f"{r['loaded_mb']} | {r['peak_mb']} | {r['added_mb']} |")
    print(f"\npeak RSS at {a.factor}x N / at N: {big['peak_mb'] / small['peak_mb']:.2f}x (goal <= 1.5x); "
          f"added by the partition: {big['added_mb'] / max(small['added_mb'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
