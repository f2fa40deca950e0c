"""Bad input found in real use: each gets a one-line error before any work, or a quarantine reason.

No row may disappear unreported: rows read == rows kept + rows quarantined,
for passages and for questions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prepared import prepare_tables
from xqg_ray.benchmark.build import BenchmarkError
from xqg_ray.config import BenchmarkConfig, ConfigError, load_config
from xqg_ray.benchmark.corpus import CorpusError
from xqg_ray.pipeline import run

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")


def _queries(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _q(qid="q1", lang="de", text="Wer?", answers=("Ada",), gold="a"):
    return {"qid": qid, "lang": lang, "text": text, "answers": list(answers) if isinstance(answers, tuple) else answers, "gold_docid": gold}


def _files(corpus: Path, queries: str) -> BenchmarkConfig:
    return BenchmarkConfig(kind="files", corpus=str(corpus), queries=queries)


def test_bad_rows_are_quarantined_with_reasons(tmp_path, ray_local):
    corpus = tmp_path / "corpus.jsonl"
    good = [{"docid": "a", "title": "A", "text": "Ada wrote the first program."}, {"docid": "b", "title": "B", "text": "Bees make honey."}]
    lines = [json.dumps(r).encode() for r in good]
    lines.append(json.dumps({"docid": "c", "title": "C", "text": "   "}).encode())  # 3: empty text
    lines.append(json.dumps({"docid": "a", "title": "A2", "text": "again"}).encode())  # 4: duplicated docid
    lines.append(b'{"docid": "d", "title": "D", "text": "bad \xff\xfe bytes"}')  # 5: invalid UTF-8
    lines.append(b'{"docid": "e", "title": "E", "text": ')  # 6: not JSON
    lines.append(json.dumps({"docid": "f\tg", "title": "F", "text": "a tab in the docid"}).encode())  # 7
    lines.append(json.dumps({"docid": "h\ni", "title": "H", "text": "a newline in the docid"}).encode())  # 8
    lines.append(json.dumps({"docid": "j", "title": "J", "text": ["not", "a", "string"]}).encode())  # 9
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    qs = [_q(), _q("q2", "xx", "Was?"), _q("q3", "ger", "Wie?"), _q("q4", "de", "Wo?", answers=7), _q("q5", "zh", "谁?", answers=["Ada", 3])]
    m, t = prepare_tables(_files(corpus, _queries(tmp_path / "q.jsonl", qs)), tmp_path / "out")
    assert t["corpus"]["docid"].to_pylist() == ["a", "b"]
    reasons = {(r["line"], r["reason"].split(" (")[0]) for r in t["quarantine"].to_pylist() if r["source"] == str(corpus)}
    assert reasons == {(3, "empty text"), (4, "duplicate docid"), (5, "invalid UTF-8 at byte 42 of the line"), (6, "invalid JSON: Expecting value"),
                       (7, "docid contains whitespace or control characters"), (8, "docid contains whitespace or control characters"),
                       (9, "text is not a string")}, reasons
    snap = json.loads((tmp_path / "out" / m["snapshot_file"]).read_text())
    assert snap["rows"]["read"] == len(lines) == snap["rows"]["kept"] + snap["rows"]["quarantined"] == 2 + 7
    q_reasons = [(r["line"], r["reason"]) for r in t["quarantine"].to_pylist() if r["source"].endswith("q.jsonl")]
    assert q_reasons == [
        (2, "unknown language code 'xx' (use ISO 639-1, e.g. de, zh, ar)"),
        (3, "unknown language code 'ger' (use ISO 639-1, e.g. de, zh, ar)"),
        (4, "answers is not a list of strings (int)"),
        (5, "answers is not a list of strings (list)"),
    ]
    assert t["queries"]["qid"].to_pylist() == ["q1"] and len(qs) == t["queries"].num_rows + len(q_reasons)
    assert m["counts"]["quarantined"] == 7 + 4 and m["languages"] == ["de"]


def test_missing_column_is_a_clear_error(tmp_path, ray_local):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("id\ttext\nx1\tsome text\n")  # no title column
    with pytest.raises(CorpusError, match=r"corpus.tsv: missing required column\(s\) title; columns found: \['id', 'text'\]"):
        prepare_tables(_files(corpus, _queries(tmp_path / "q.jsonl", [_q(gold="x1")])), tmp_path / "out")


def test_gold_docid_missing_from_corpus_is_an_error(tmp_path, ray_local):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"docid": "a", "title": "A", "text": "t"}) + "\n")
    with pytest.raises(BenchmarkError, match=r"1 gold_docid\(s\) in .* are not in the clean corpus .*\['zzz'\]"):
        prepare_tables(_files(corpus, _queries(tmp_path / "q.jsonl", [_q(gold="zzz")])), tmp_path / "out")


def test_empty_and_fully_quarantined_corpora_stop_before_any_stage(tmp_path, ray_local):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(CorpusError, match=r"the corpus is empty: 0 rows read from 1 file"):
        prepare_tables(_files(empty, _queries(tmp_path / "q.jsonl", [_q(gold=None)])), tmp_path / "out1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"docid": "a", "title": "A", "text": ""}) + "\n" + json.dumps({"docid": "b c", "title": "B", "text": "x"}) + "\n")
    with pytest.raises(CorpusError, match=r"no usable passages: 2 row\(s\) read, 2 quarantined"):
        prepare_tables(_files(bad, _queries(tmp_path / "q.jsonl", [_q(gold=None)])), tmp_path / "out2")


@pytest.mark.parametrize("override,message", [
    ("search.query_batch_size=0", "search.query_batch_size=0: must be >= 1"),
    ("encoder.batch_size=0", "encoder.batch_size=0: must be >= 1"),
    ("generators.t5.batch_size=0", "generators.t5.batch_size=0: must be >= 1"),
    ("corpus.num_partitions=0", "corpus.num_partitions=0: must be >= 1"),
])
def test_zero_sizes_are_refused_when_the_config_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, [override])


def test_unknown_models_and_bad_factories_fail_before_any_work(tmp_path, ray_local, shared_datasets, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = [f"benchmark.source={shared_datasets}", "ray.progress=false"]
    for override, message in [
        ("encoder.model=no-such-org/no-such-model", "encoder.model: 'no-such-org/no-such-model' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"),
        ("generators.t5.model=tiny:tiny-nothing", "generators.t5.model: unknown tiny model 'tiny:tiny-nothing'"),
        ("index.factory=NoSuchIndex", "index.factory='NoSuchIndex' is not a FAISS index_factory string"),
    ]:
        out = tmp_path / override.split("=")[0]
        with pytest.raises(ConfigError, match=message):
            run(load_config(SMOKE, [*base, f"output_dir={out}", override]))
        assert not (out / "benchmark").exists(), override  # nothing ran
    out = tmp_path / "ivf"
    with pytest.raises(ConfigError, match=r"index.factory='IVF64,Flat' cannot be built or trained on the smallest shard \(\d+ passages, dim 32\)"):
        run(load_config(SMOKE, [*base, f"output_dir={out}", "index.factory=IVF64,Flat"]))
    assert (out / "benchmark" / "current.json").exists() and not (out / "generated").exists()  # before generation


def test_overlong_passage_and_string_answers_are_set_aside(tmp_path, ray_local):
    """A 100,001-character passage (corpus.max_passage_chars=100000) and "answers": "x" (not a list)."""
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"docid": "a", "title": "A", "text": "Ada wrote the first program."},
            {"docid": "big", "title": "B", "text": "b" * 100_001},
            {"docid": "edge", "title": "E", "text": "e" * 100_000}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    qs = [_q(), _q("q2", "de", "Was?", answers="x"), _q("q3", "de", "Wie?", answers=None), _q("q4", "de", "Wo?", answers=[])]
    m, t = prepare_tables(_files(corpus, _queries(tmp_path / "q.jsonl", qs)), tmp_path / "out")
    assert sorted(t["corpus"]["docid"].to_pylist()) == ["a", "edge"]
    assert [(r["source"], r["line"], r["docid"], r["reason"]) for r in t["quarantine"].to_pylist()] == [
        (str(tmp_path / "q.jsonl"), 2, "a", "answers is not a list of strings (str)"),
        (str(corpus), 2, "big", "text too long (100001 characters > corpus.max_passage_chars=100000)"),
    ]
    snap = json.loads((tmp_path / "out" / m["snapshot_file"]).read_text())
    assert snap["rows"]["read"] == 3 == snap["rows"]["kept"] + snap["rows"]["quarantined"]
    # no answers field and an empty list are still fine: retrieval needs no answers
    assert t["queries"]["qid"].to_pylist() == ["q1", "q3", "q4"] and t["queries"]["answers"].to_pylist() == [["Ada"], [], []]
    assert m["counts"]["quarantined"] == 2
