"""The whole job on a local Ray cluster with tiny random models (conf/smoke.yaml).

Checks the output contract, that sharded search equals one exact index over
the same vectors, that stored sums give the same vectors as re-encoding the
generated queries for any alpha, determinism, resume, and the unequal-count rule.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus_versions import current, read_trec
from xqg_ray.config import ConfigError, EncoderConfig, load_config
from xqg_ray.ids import passage_id
from xqg_ray.pipeline import run
from xqg_ray.retrieval.topk import exact_topk, ranked

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
SYSTEMS = ["baseline", "xqg", "xqg-a0.3", "causal-mean"]


def smoke_cfg(out: Path, shared: Path, *extra: str):
    return load_config(SMOKE, [f"output_dir={out}", f"benchmark.source={shared}", "ray.progress=false", *extra])


@pytest.fixture(scope="module")
def smoke(smoke_run):
    """conf/smoke.yaml as shipped, built once for this file and tests/test_recovery.py (conftest)."""
    return smoke_run


def corpus_table(out: Path) -> pa.Table:
    snap = json.loads((out / current(out, "benchmark")["snapshot_file"]).read_text())
    return pa.concat_tables([pq.read_table(out / p["file"]) for p in snap["partitions"]])


def query_vectors(out: Path) -> pa.Table:
    return pq.read_table(out / current(out, "queries")["sets"]["clean"]["file"])


def read_index_vectors(out: Path, system: str):
    """All (ids, vectors) stored in a system's shards, via its manifest."""
    m = current(out, f"index/{system}")
    ids, vecs = [], []
    for sh in m["shards"]:
        index = faiss.read_index(str(out / sh["file"]))
        assert index.ntotal == sh["ntotal"]
        inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
        ids.append(faiss.vector_to_array(index.id_map).astype(np.int64))
        vecs.append(inner.reconstruct_n(0, index.ntotal))
        side = pq.read_table(out / sh["ids"]["file"])
        assert sorted(side["id"].to_pylist()) == sorted(ids[-1].tolist())
    return np.concatenate(ids), np.concatenate(vecs), m


def test_output_contract(smoke):
    out, metrics = smoke
    for rel in ["config.yaml", "metrics.json", "report.md"]:
        assert (out / rel).is_file(), rel
    corpus = corpus_table(out)
    assert corpus.schema.names == ["docid", "id", "title", "text", "content_hash"]
    assert corpus.num_rows == 40 and corpus["id"].to_pylist() == [passage_id(d) for d in corpus["docid"].to_pylist()]
    bench = current(out, "benchmark")
    queries = pq.read_table(out / bench["files"]["queries"]["file"])
    assert queries.schema.names == ["qid", "lang", "text", "answers", "gold_docid"] and queries.num_rows == 24
    enc = query_vectors(out)
    assert enc.column_names == ["qid", "lang", "text", "vector"] and enc["text"].to_pylist() == queries["text"].to_pylist() and enc["qid"].to_pylist() == queries["qid"].to_pylist()
    for s in SYSTEMS:
        preds = json.loads((out / "runs" / f"{s}.xor.json").read_text())
        assert [p["id"] for p in preds] == queries["qid"].to_pylist() and set(preds[0]) == {"id", "lang", "ctxs"}
        assert all(isinstance(c, str) for c in preds[0]["ctxs"])
        pqt = pq.read_table(out / "per_query" / f"{s}.parquet")
        assert pqt.column_names == ["qid", "lang", "R@2kt", "R@5kt", "Recall@1", "Recall@5", "Recall@20", "MRR@10"]
        ids, _, m = read_index_vectors(out, s)
        assert sorted(ids.tolist()) == sorted(corpus["id"].to_pylist())
        assert m["corpus_hash"] == bench["corpus_hash"] and m["num_shards"] == 2 and m["dim"] == 32 and m["ntotal"] == 40
        assert all(len(sh["sha256"]) == 64 and not sh["file"].startswith("/") for sh in m["shards"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tokenizer"].startswith("nltk.word_tokenize")
    assert set(saved["systems"]) == set(SYSTEMS)
    assert saved["indexes"]["xqg-a0.3"]["alpha"] == 0.3 and saved["indexes"]["causal-mean"]["aggregation"] == "mean"
    for s in SYSTEMS:
        assert set(saved["systems"][s]["per_language"]) == {"de", "zh"}
    c = saved["comparisons"][0]
    assert {"baseline", "system", "metric", "lang", "mean_diff", "ci95", "p_value", "p_holm"} <= set(c)
    assert {c["lang"] for c in saved["comparisons"]} == {"de", "zh", "all"}
    assert [k for k, v in saved["stages"].items() if v["reused"]] == []
    assert saved["stages"]["generated/t5"]["rows"] == 40 and saved["stages"]["queries"]["rows"] == 24
    # dtype auto on this CPU-only run: every unit that generated says float32 on cpu.
    for gen in ("t5", "gpt2"):
        units = current(out, f"generated/{gen}")["units"]
        commits = [out / f"generated/{gen}/commits/p-{u['partition']:05d}-{u['key'][:16]}.json" for u in units]
        assert [json.loads(c.read_text())["computed_in"] for c in commits] == [{"dtype": "float32", "device": "cpu"}] * len(units) and units, gen
    assert "R@2kt" in (out / "report.md").read_text()
    assert (out / "plots" / "R_at_2kt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sharded_search_equals_exact_flat_index(smoke):
    out, _ = smoke
    enc = query_vectors(out)
    q = np.stack(enc["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
    corpus = corpus_table(out)
    docid_of = dict(zip(corpus["id"].to_pylist(), corpus["docid"].to_pylist()))
    for s in SYSTEMS:
        ids, vecs, m = read_index_vectors(out, s)
        assert all(sh["ntotal"] > 0 for sh in m["shards"])
        want = ranked(*exact_topk(q, vecs, ids, 20))
        got = read_trec(out / "runs" / f"{s}.trec")
        row_of = {docid_of[int(i)]: r for r, i in enumerate(ids)}
        same = total = 0
        for qi, (qid, hits) in enumerate(zip(enc["qid"].to_pylist(), want)):
            # The true score of what the sharded search put at each rank equals the
            # exact search's score there: a different docid is only ever a float32
            # near-tie (tiny random encoders make many), never a missed passage.
            true_scores = vecs[[row_of[d] for d, _ in got[qid]]] @ q[qi]
            np.testing.assert_allclose(true_scores, [sc for _, sc in hits], rtol=1e-5, atol=1e-5, err_msg=f"{s} {qid}")
            same += sum(d == docid_of[p] for (d, _), (p, _) in zip(got[qid], hits))
            total += len(hits)
        assert same / total > 0.9, (s, same, total)


def test_stored_sums_equal_reencoding_for_every_alpha(smoke):
    """The index vectors of xqg (alpha .01) and xqg-a0.3 equal the formula on freshly encoded queries."""
    from xqg_ray.models.encoder import Encoder, format_passage

    out, _ = smoke
    cfg = load_config(SMOKE, [f"output_dir={out}"])
    encoder = Encoder(EncoderConfig(**{k: getattr(cfg.encoder, k) for k in cfg.encoder.__dataclass_fields__}))
    gen = pa.concat_tables([pq.read_table(out / u["file"]) for u in current(out, "generated/t5")["units"]])
    corpus = corpus_table(out)
    text_of = {i: format_passage(cfg.encoder.passage_template, t, x) for i, t, x in zip(corpus["id"].to_pylist(), corpus["title"].to_pylist(), corpus["text"].to_pylist())}
    sample = gen.slice(0, 6)
    assert all(len(qs) == 4 for qs in sample["queries"].to_pylist())  # 2 languages x 2 queries
    p = encoder.encode([text_of[i] for i in sample["id"].to_pylist()], "passage")
    sums = np.stack([encoder.encode([q["text"] for q in qs], "query").sum(0) for qs in sample["queries"].to_pylist()])
    for system, alpha in (("xqg", 0.01), ("xqg-a0.3", 0.3)):
        ids, vecs, _ = read_index_vectors(out, system)
        row = {int(i): v for i, v in zip(ids, vecs)}
        got = np.stack([row[i] for i in sample["id"].to_pylist()])
        np.testing.assert_allclose(got, (1 - alpha) * p + alpha * sums, rtol=1e-4, atol=1e-5)
    base_ids, base_vecs, _ = read_index_vectors(out, "baseline")
    row = {int(i): v for i, v in zip(base_ids, base_vecs)}
    np.testing.assert_allclose(np.stack([row[i] for i in sample["id"].to_pylist()]), p, rtol=1e-4, atol=1e-5)


def test_rerun_resumes_and_reuses_every_stage(smoke, shared_datasets):
    out, metrics = smoke
    # the same output_dir: every stage is reused, outputs unchanged
    before = {s: (out / "runs" / f"{s}.trec").read_bytes() for s in SYSTEMS}
    again = run(smoke_cfg(out, shared_datasets))
    assert [k for k in ("benchmark", "generated/t5", "generated/gpt2", "embeddings", "queries", "index") if not again["stages"][k]["reused"]] == []
    assert {s: (out / "runs" / f"{s}.trec").read_bytes() for s in SYSTEMS} == before
    assert again["systems"] == metrics["systems"] and again["comparisons"] == metrics["comparisons"]
    # A fresh output directory gives identical outputs too: tests/test_incremental.py
    # compares a killed-and-resumed run in another directory with an uninterrupted one.


def test_sum_with_unequal_counts_is_refused(smoke, tmp_path, shared_datasets):
    out, _ = smoke
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    docids = sorted(corpus_table(work)["docid"].to_pylist())
    # a query log as JSONL: one query for the first passage, three for the second, none elsewhere
    rows = [{"docid": d, "lang": "de", "text": t} for d, t in zip([docids[0]] + [docids[1]] * 3, ["eins", "zwei", "drei", "vier"])]
    rows.append({"docid": "not-a-passage", "lang": "de", "text": "fünf"})
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = smoke_cfg(work, shared_datasets, "generators.logs.kind=provided", f"generators.logs.path={tmp_path / 'log.jsonl'}")
    from xqg_ray.config import SystemConfig

    cfg.systems.append(SystemConfig(name="logs", generator="logs", alpha=0.1, aggregation="sum"))
    with pytest.raises(ConfigError, match=r"system 'logs': aggregation=sum with unequal query counts per passage \(min 0, max 3, 38 passages with none\)"):
        run(cfg)
    cfg.systems[-1].aggregation = "mean"
    metrics = run(cfg)
    assert metrics["indexes"]["logs"]["query_counts"] == {"min": 0, "max": 3, "zero": len(docids) - 2, "passages": len(docids)}
    m = current(work, "generated/logs")
    set_aside = pa.concat_tables([pq.read_table(work / u["quarantine"]["file"]) for u in m["units"] if "quarantine" in u]).to_pylist()
    assert [(r["line"], r["docid"], r["reason"]) for r in set_aside] == [(5, "not-a-passage", "docid not in corpus")]
    assert m["set_aside"] == 1
