"""What an incremental update costs against the full build, on one synthetic corpus, in one run.

    .venv/bin/python bench/incremental.py --n 20000 --languages de,zh

Builds the whole job on N passages (tiny models, one generator), then adds
0.1%, 1% and 10% of N as new files and reruns the same command after each.
For every run it prints the seconds of generation + encoding and of the index
stage from metrics.json, and the ratio to the full build: the update should
cost in proportion to the change (goal for 1%: <= 5% of the full build's
generate + encode), and the index shards are updated (an IVF quantizer is
reused), not rebuilt.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--factory", default="IVF16,Flat")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--steps", default="0.001,0.01,0.1")
    ap.add_argument("--languages", default="de,zh", help="generated languages (2 queries each, 6 new tokens)")
    ap.add_argument("--max-actors", type=int, default=2, help="ray.max_actors: the model hosts that generate and encode at once")
    a = ap.parse_args()
    from synth import write_corpus, write_queries

    from xqg_ray.config import load_config
    from xqg_ray.pipeline import run

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        files = write_corpus(work / "corpus", a.n)
        queries = write_queries(work / "queries.parquet", files)
        cfg = load_config(str(REPO / "conf" / "smoke.yaml"), [
            f"output_dir={work / 'out'}", "benchmark.kind=files", f"benchmark.corpus={work / 'corpus'}", f"benchmark.queries={queries}",
            "benchmark.corpus_limit=0", "benchmark.max_queries_per_language=0", "benchmark.languages=[]",
            f"corpus.num_partitions={a.partitions}", f"index.factory={a.factory}", "ray.progress=false", f"ray.max_actors={a.max_actors}",
            f"generators.t5.languages=[{a.languages}]", "generators.t5.n_per_language=2", "generators.t5.max_new_tokens=6",
        ])
        cfg.systems = [s for s in cfg.systems if s.name in ("baseline", "xqg")]
        cfg.generators = {"t5": cfg.generators["t5"]}

        def cost(m: dict) -> tuple:
            st = m["stages"]
            return st["generated/t5"]["seconds"] + st["embeddings"]["seconds"], st["index"]["seconds"]

        full = run(cfg)
        gen_enc0, index0 = cost(full)
        print(json.dumps({"run": "full build", "passages": a.n, "generate+encode_s": round(gen_enc0, 2), "index_s": round(index0, 2)}), flush=True)
        total = a.n
        for i, frac in enumerate(float(x) for x in a.steps.split(",")):
            k = max(1, int(round(a.n * frac)))
            write_corpus(work / "corpus", k, files=1, seed=100 + i, start=total, prefix=f"added-{i}")
            total += k
            m = run(cfg)
            gen_enc, index = cost(m)
            modes = json.loads((work / "out" / "index" / "xqg" / "current.json").read_text())
            man = json.loads((work / "out" / modes["manifest"]).read_text())
            print(json.dumps({"run": f"+{frac:.1%} ({k} passages)", "generate+encode_s": round(gen_enc, 2), "ratio_to_full": round(gen_enc / gen_enc0, 3),
                              "index_s": round(index, 2), "index_ratio_to_full": round(index / index0, 3), "index_modes": man["modes"],
                              "added": man["changes"]["added"]}), flush=True)


if __name__ == "__main__":
    main()
