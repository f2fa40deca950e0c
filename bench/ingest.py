"""Ingest rows/s: the project's Ray Data ingest against a single-process read of the same files, in one run.

    .venv/bin/python bench/ingest.py --n 200000 --files 4 --partitions 16 --chunk-mb 16
    .venv/bin/python bench/ingest.py --n 200000 --files 20 --partitions 16 --update 0.01

The single-process arm is ``xqg_ray.benchmark.corpus.read_corpus`` (the same row rules,
one process, the table in memory); the project's arm is
``xqg_ray.ingest.ingest_corpus`` on a local Ray cluster, writing partitions.
Prints both rates and their ratio.

Then the update (``--update``, the fraction of all rows, 0 to skip): what the
benchmark stage does for a corpus snapshot -- fingerprint the input files
(``fingerprint_sources_cached``) and ingest them with those fingerprints -- in
full, then again after that many rows of the first file got a new text, with
the first snapshot as parent.  Prints the CPU-seconds of each (the whole
process tree: driver, Ray's daemons and workers) and their ratio.
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
    ap.add_argument("--update", type=float, default=0.01, help="fraction of the rows changed, all in the first file (0: no update)")
    a = ap.parse_args()
    import ray

    from synth import write_corpus

    from xqg_ray.config import RayConfig, StorageConfig
    from xqg_ray.benchmark.corpus import read_corpus
    from xqg_ray.runtime.cluster import init_ray
    from xqg_ray.ingest import ingest_corpus
    from xqg_ray.store.storage import Storage

    with tempfile.TemporaryDirectory() as d:
        write_corpus(Path(d) / "in", a.n, files=a.files)
        t = time.perf_counter()
        r = read_corpus(Storage(), str(Path(d) / "in"))
        t_local = time.perf_counter() - t
        del r
        # The pipeline's local cluster, started after the single-process arm; a no-op where this process runs
        # one already (tests/test_bench_scripts.py runs this script after others in one process).
        init_ray(RayConfig(num_cpus=a.num_cpus, progress=False))
        cpus = int(ray.cluster_resources().get("CPU", 0))
        ingest_corpus(StorageConfig(), str(Path(d) / "warm"), str(Path(d) / "in" / "part-000.jsonl"), num_partitions=2)  # workers up
        t = time.perf_counter()
        m = ingest_corpus(StorageConfig(), str(Path(d) / "out"), str(Path(d) / "in"), num_partitions=a.partitions, chunk_bytes=a.chunk_mb << 20, num_cpus=1)
        t_ray = time.perf_counter() - t
        n = m["rows"]["read"]
        print(f"rows {n}: single-process read_corpus {n / t_local:,.0f} rows/s ({t_local:.1f} s); "
              f"Ray Data ingest_corpus {n / t_ray:,.0f} rows/s ({t_ray:.1f} s, {a.partitions} partitions, {cpus} logical CPUs); "
              f"ratio {t_local / t_ray:.2f}x", flush=True)
        if a.update > 0:
            update(Path(d), a)


def update(d: Path, a: argparse.Namespace) -> None:
    """CPU-seconds of the benchmark stage's corpus work: a full ingest, then one after ``a.update`` of the rows changed in one file."""
    import json

    from scale import Sampler

    from xqg_ray.config import StorageConfig
    from xqg_ray.ingest import ingest_corpus
    from xqg_ray.ingest.snapshot import fingerprint_sources_cached

    files = sorted(str(p) for p in (d / "in").iterdir())
    sampler = Sampler()
    sampler.start()

    def stage(cache: dict, parent: dict = None) -> tuple:
        c0, t0 = sampler.cpu_seconds(), time.perf_counter()
        fp = fingerprint_sources_cached(StorageConfig(), files, cache)
        m = ingest_corpus(StorageConfig(), str(d / "upd"), files, num_partitions=a.partitions, chunk_bytes=a.chunk_mb << 20,
                          num_cpus=1, parent=parent, sources=fp.sources)
        return m, fp.cache, sampler.cpu_seconds() - c0, time.perf_counter() - t0

    full, cache, full_cpu, full_s = stage({})
    k = max(1, int(round(full["rows"]["read"] * a.update)))
    lines = Path(files[0]).read_text().splitlines()
    if k > len(lines):
        raise SystemExit(f"--update {a.update}: {k} rows but the first file has {len(lines)}; use more rows or fewer files")
    for i in range(k):
        row = json.loads(lines[i])
        row["text"] = "updated " + row["text"]
        lines[i] = json.dumps(row)
    Path(files[0]).write_text("\n".join(lines) + "\n")
    upd, _, upd_cpu, upd_s = stage(cache, parent=full)
    sampler.stop.set()
    inputs = upd.get("inputs") or {}
    print(f"update: {k} of {full['rows']['read']} rows changed in 1 of {len(files)} files: {upd_cpu:.2f} CPU-s ({upd_s:.1f} s) "
          f"against the full build's {full_cpu:.2f} CPU-s ({full_s:.1f} s); ratio {upd_cpu / full_cpu:.3f}; changes {upd['changes']}; "
          f"files parsed {len(inputs.get('parsed', files))}, partitions reduced {a.partitions - len(inputs.get('partitions_reused', []))}",
          flush=True)


if __name__ == "__main__":
    main()
