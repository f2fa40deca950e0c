"""Driver peak memory (RSS) of the whole job at corpus size N and 10 N (tiny models), in one run.

Each size runs in its own process (a fresh driver); the driver reports its own
peak RSS (``ru_maxrss``), which covers ingest, generation, encoding, indexing,
search and evaluation.  The claim it checks: the driver holds plans, not data,
so 10x the passages raises the driver's peak by at most 20%.

    .venv/bin/python bench/driver_memory.py --n 2000 --factor 10
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def one(n: int, work: Path, partitions: int = 16) -> dict:
    from synth import write_corpus, write_queries

    from xqg_ray.config import load_config
    from xqg_ray.pipeline import run

    files = write_corpus(work / "corpus", n)
    queries = write_queries(work / "queries.parquet", files)
    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), [
        f"output_dir={work / 'out'}", "benchmark.kind=files", f"benchmark.corpus={work / 'corpus'}", f"benchmark.queries={queries}",
        "benchmark.corpus_limit=0", "benchmark.max_queries_per_language=0", "benchmark.languages=[]", f"corpus.num_partitions={partitions}",
        "generators.t5.languages=[de]", "generators.t5.n_per_language=1", "generators.t5.max_new_tokens=4", "ray.progress=false",
    ])
    cfg.systems = [s for s in cfg.systems if s.name in ("baseline", "xqg")]
    cfg.generators = {"t5": cfg.generators["t5"]}
    t0 = time.perf_counter()
    run(cfg)
    return {"passages": n, "seconds": round(time.perf_counter() - t0, 1), "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=16, help="corpus partitions (fewer: a quicker run, as in tests/test_bench_scripts.py)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(a.one, Path(a.work), a.partitions)), flush=True)
        return
    rows = []
    for n in (a.n, a.n * a.factor):
        with tempfile.TemporaryDirectory() as d:
            env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
            out = subprocess.run([sys.executable, __file__, "--one", str(n), "--work", d, "--partitions", str(a.partitions)], env=env, capture_output=True, text=True, cwd=REPO)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            rows.append(json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:]))
            print(json.dumps(rows[-1]), flush=True)
    ratio = rows[1]["driver_peak_rss_mb"] / rows[0]["driver_peak_rss_mb"]
    print(f"driver peak RSS: {rows[0]['driver_peak_rss_mb']} MB at {rows[0]['passages']} passages, "
          f"{rows[1]['driver_peak_rss_mb']} MB at {rows[1]['passages']} ({a.factor}x): ratio {ratio:.3f} (goal <= 1.20)")


if __name__ == "__main__":
    main()
