"""Bad input through the job's benchmark stage: a clear error, or a quarantine file with reasons.

No row may disappear unreported: clean + quarantined == lines read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from xqg_ray.benchmark import BenchmarkError
from xqg_ray.config import load_config
from xqg_ray.corpus import CorpusError
from xqg_ray.pipeline import Job

REPO = Path(__file__).resolve().parents[1]


def _queries(path: Path, gold: str) -> str:
    path.write_text(json.dumps({"qid": "q1", "lang": "de", "text": "Wer?", "answers": ["Ada"], "gold_docid": gold}) + "\n")
    return str(path)


def _job(tmp_path: Path, corpus: Path, queries: str) -> Job:
    cfg = load_config(
        str(REPO / "conf" / "smoke.yaml"),
        [f"output_dir={tmp_path / 'out'}", "benchmark.kind=files", f"benchmark.corpus={corpus}", f"benchmark.queries={queries}", "benchmark.corpus_limit=0", "benchmark.max_queries_per_language=0", "benchmark.languages=[]"],
    )
    return Job(cfg)


def test_bad_rows_are_quarantined_with_reasons(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    good = [{"docid": "a", "title": "A", "text": "Ada wrote the first program."}, {"docid": "b", "title": "B", "text": "Bees make honey."}]
    lines = [json.dumps(r).encode() for r in good]
    lines.append(json.dumps({"docid": "c", "title": "C", "text": "   "}).encode())  # empty text
    lines.append(json.dumps({"docid": "a", "title": "A2", "text": "again"}).encode())  # duplicated docid
    lines.append(b'{"docid": "d", "title": "D", "text": "bad \xff\xfe bytes"}')  # invalid UTF-8
    lines.append(b'{"docid": "e", "title": "E", "text": ')  # not JSON
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    job = _job(tmp_path, corpus, _queries(tmp_path / "q.jsonl", "a"))
    job.benchmark()
    out = tmp_path / "out" / "benchmark"
    clean = pq.read_table(out / "corpus.parquet")
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert clean["docid"].to_pylist() == ["a", "b"]
    reasons = {r["line"]: r["reason"] for r in quarantine}
    assert reasons[3] == "empty text"
    assert reasons[4].startswith("duplicate docid (first at") and ":1)" in reasons[4]
    assert reasons[5].startswith("invalid UTF-8")
    assert reasons[6].startswith("invalid JSON")
    assert clean.num_rows + len(quarantine) == len(lines)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["quarantined"] == 4


def test_missing_column_is_a_clear_error(tmp_path):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("id\ttext\nx1\tsome text\n")  # no title column
    job = _job(tmp_path, corpus, _queries(tmp_path / "q.jsonl", "x1"))
    with pytest.raises(CorpusError, match="title"):
        job.benchmark()


def test_gold_docid_missing_from_corpus_is_an_error(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"docid": "a", "title": "A", "text": "t"}) + "\n")
    job = _job(tmp_path, corpus, _queries(tmp_path / "q.jsonl", "zzz"))
    with pytest.raises(BenchmarkError, match="zzz"):
        job.benchmark()
