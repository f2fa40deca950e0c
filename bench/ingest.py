"""Ingest rows/s: the project's Ray Data ingest against a single-process read of the same files, in one run.

    .venv/bin/python bench/ingest.py --n 200000 --files 4 --partitions 16 --chunk-mb 16

The single-process arm is ``xqg_ray.benchmark.corpus.read_corpus`` (the same row rules,
one process, the table in memory); the project's arm is
``xqg_ray.ingest.ingest_corpus`` on a local Ray cluster, writing partitions.
Prints both rates and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--chunk-mb", type=int, default=16)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="logical CPUs of the local Ray cluster")
    a = ap.parse_args()
    import ray

    from synth import write_corpus

    from xqg_ray.config import StorageConfig
    from xqg_ray.benchmark.corpus import read_corpus
    from xqg_ray.ingest import ingest_corpus
    from xqg_ray.store.storage import Storage

    with tempfile.TemporaryDirectory() as d:
        write_corpus(Path(d) / "in", a.n, files=a.files)
        t = time.perf_counter()
        r = read_corpus(Storage(), str(Path(d) / "in"))
        t_local = time.perf_counter() - t
        del r
        ray.init(num_cpus=a.num_cpus, include_dashboard=False, logging_level=40)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ingest_corpus(StorageConfig(), str(Path(d) / "warm"), str(Path(d) / "in" / "part-000.jsonl"), num_partitions=2)  # workers up
        t = time.perf_counter()
        m = ingest_corpus(StorageConfig(), str(Path(d) / "out"), str(Path(d) / "in"), num_partitions=a.partitions, chunk_bytes=a.chunk_mb << 20, num_cpus=1)
        t_ray = time.perf_counter() - t
    n = m["rows"]["read"]
    print(f"rows {n}: single-process read_corpus {n / t_local:,.0f} rows/s ({t_local:.1f} s); "
          f"Ray Data ingest_corpus {n / t_ray:,.0f} rows/s ({t_ray:.1f} s, {a.partitions} partitions, {a.num_cpus} logical CPUs); "
          f"ratio {t_local / t_ray:.2f}x")


if __name__ == "__main__":
    main()
