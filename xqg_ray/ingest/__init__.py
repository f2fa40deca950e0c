"""Corpus ingest: shared row rules, a metadata-only read plan and the partitioned Ray Data ingest.

``ingest_corpus`` reads passage files (JSONL, TSV, Parquet; ``.gz`` for the
line formats) in parallel into ``num_partitions`` files partitioned by
``id % P`` and a sealed snapshot manifest; an update reads only the input
files whose fingerprint changed (:mod:`.reuse`); :mod:`xqg_ray.benchmark.corpus` is the
single-process reader over the same row rules (:mod:`.readers`).
"""

from .snapshot import KeepSpec, fingerprint_sources, ingest_corpus
from .sources import CorpusError

__all__ = ["CorpusError", "KeepSpec", "fingerprint_sources", "ingest_corpus"]
