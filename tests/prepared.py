"""The benchmark stage on its own (``xqg_ray.pipeline.prepare``) and its outputs read back as tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from xqg_ray.config import BenchmarkConfig, CorpusConfig, EncoderConfig, RunConfig, SystemConfig
from xqg_ray.pipeline import prepare


def prepare_tables(bcfg: BenchmarkConfig, out: Path, num_partitions: int = 4) -> Tuple[Dict[str, Any], Dict[str, pa.Table]]:
    """(benchmark manifest, {corpus, queries, quarantine[, provided]}); corpus sorted by docid.

    ``quarantine`` holds the benchmark's own rows (questions, XQuAD passages) and
    the corpus ingest's, as a user would read them together.  Needs Ray running.
    """
    cfg = RunConfig(output_dir=str(out), benchmark=bcfg, corpus=CorpusConfig(num_partitions=num_partitions),
                    encoder=EncoderConfig(model="tiny:tiny-bert"), systems=[SystemConfig(name="baseline")])
    m = prepare(cfg)
    snap = json.loads((out / m["snapshot_file"]).read_text())
    corpus = pa.concat_tables([pq.read_table(out / p["file"]) for p in snap["partitions"]]).sort_by("docid")
    quarantine = [pq.read_table(out / m["files"]["quarantine"]["file"])] + [pq.read_table(out / q["file"]) for q in snap["quarantine"]]
    tables = {"corpus": corpus, "queries": pq.read_table(out / m["files"]["queries"]["file"]), "quarantine": pa.concat_tables(quarantine)}
    if "provided" in m["files"]:
        tables["provided"] = pq.read_table(out / m["files"]["provided"]["file"])
    return m, tables
