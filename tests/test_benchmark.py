"""Tests for xqg_ray.benchmark.build on the real XQuAD/SQuAD files and on tiny written files.

The real JSON is parsed once per module (fixtures ``raw`` and ``src``); the
variants (corpus limit, held-out split, language filters) reuse the parsed
source through :func:`build_xquad`, so the module stays within a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Set

import pyarrow as pa
import pytest

from xqg_ray.benchmark.build import (
    PROVIDED_SCHEMA,
    QUERIES_SCHEMA,
    SQUAD_DEV_URL,
    XQUAD_LANGUAGES,
    XQUAD_URL_ROOT,
    BenchmarkError,
    build_xquad,
    read_xquad_source,
    xquad_files,
)
from xqg_ray.config import BenchmarkConfig
from xqg_ray.benchmark.corpus import CLEAN_SCHEMA, QUARANTINE_SCHEMA
from xqg_ray.ids import passage_id, seed_for
from xqg_ray.store.integrity import IntegrityError, read_table_verified
from xqg_ray.store.storage import Storage, sha256_bytes

from helpers_data import shared_datasets, squad_json, write_lines, write_parquet
from prepared import prepare_tables

S = Storage()
DATA = shared_datasets()
needs_data = pytest.mark.skipif(
    DATA is None, reason="real XQuAD/SQuAD data not found at ../shared/datasets (set XQG_SHARED_DATASETS)"
)
NON_EN = [lang for lang in XQUAD_LANGUAGES if lang != "en"]


def base(qid: str) -> str:
    return qid.rsplit("-", 1)[0]


# -- module fixtures: parse the real JSON once ----------------------------------
@pytest.fixture(scope="module")
def raw() -> Dict[str, Any]:
    """Independent view of the real files: id -> (docid, paragraph text), English answers."""
    assert DATA is not None
    para: Dict[str, str] = {}
    id_doc: Dict[str, str] = {}
    for part in ("part1", "part2"):
        for art in json.loads((DATA / "squad-v1.1-dev" / f"{part}.json").read_bytes())["data"]:
            for i, p in enumerate(art["paragraphs"]):
                para[f"{art['title']}#{i}"] = p["context"]
                for qa in p["qas"]:
                    id_doc[qa["id"]] = f"{art['title']}#{i}"
    en = json.loads((DATA / "xquad" / "xquad.en.json").read_bytes())["data"]
    en_answer = {qa["id"]: qa["answers"][0]["text"] for a in en for p in a["paragraphs"] for qa in p["qas"]}
    return {"para": para, "id_doc": id_doc, "en_answer": en_answer}


@pytest.fixture(scope="module")
def src():
    assert DATA is not None
    return read_xquad_source(str(DATA), S)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, ray_local):
    assert DATA is not None
    out = tmp_path_factory.mktemp("bench")
    manifest, tables = prepare_tables(BenchmarkConfig(source=str(DATA)), out)
    return out, manifest, tables


# -- the real XQuAD benchmark ---------------------------------------------------
@needs_data
def test_xquad_counts_and_schemas(prepared) -> None:
    out, manifest, t = prepared
    assert set(t) == {"corpus", "queries", "quarantine"}  # no provided without heldout
    assert t["corpus"].schema.equals(CLEAN_SCHEMA)
    assert t["queries"].schema.equals(QUERIES_SCHEMA)
    assert t["quarantine"].schema.equals(QUARANTINE_SCHEMA)
    assert t["corpus"].num_rows == 2067
    assert t["quarantine"].num_rows == 0
    assert manifest["counts"]["passages"] == 2067
    assert manifest["counts"]["queries"] == {lang: 1190 for lang in NON_EN}
    assert manifest["counts"]["provided"] == 0
    langs = t["queries"].column("lang").to_pylist()
    assert {lang: langs.count(lang) for lang in set(langs)} == {lang: 1190 for lang in NON_EN}
    qids = t["queries"].column("qid").to_pylist()
    assert len(set(qids)) == len(qids)
    c = t["corpus"].to_pylist()
    assert [r["title"] for r in c if r["docid"] == "Super_Bowl_50#0"] == ["Super Bowl 50"]
    assert all(r["id"] == passage_id(r["docid"]) for r in c)


@needs_data
def test_manifest_hashes(prepared) -> None:
    out, manifest, t = prepared
    import hashlib

    assert manifest["kind"] == "xquad" and manifest["config"]["seed"] == 13
    for name, meta in manifest["files"].items():
        assert sha256_bytes((out / meta["file"]).read_bytes()) == meta["sha256"], name
    snap = json.loads((out / manifest["snapshot_file"]).read_text())
    for p in snap["partitions"]:
        part = pa.parquet.read_table(out / p["file"])
        digest = hashlib.sha256("".join(f"{i}:{h}\n" for i, h in zip(part["id"].to_pylist(), part["content_hash"].to_pylist())).encode()).hexdigest()
        assert p["digest"] == digest and sha256_bytes((out / p["file"]).read_bytes()) == p["sha256"]
    expected = hashlib.sha256("".join(f"{p['partition']}:{p['digest']}\n" for p in snap["partitions"]).encode()).hexdigest()
    assert manifest["corpus_hash"] == snap["corpus_hash"] == expected


@needs_data
def test_gold_and_answers(prepared, raw) -> None:
    _, _, t = prepared
    text = dict(zip(t["corpus"].column("docid").to_pylist(), t["corpus"].column("text").to_pylist()))
    failures = []
    for q in t["queries"].to_pylist():
        b = base(q["qid"])
        assert q["gold_docid"] == raw["id_doc"][b]  # mapped by id
        assert q["gold_docid"] in text
        assert q["answers"][0] == raw["en_answer"][b]  # xquad.en answer first
        assert len(q["answers"]) == len(set(q["answers"]))
        if q["answers"][0] not in text[q["gold_docid"]]:
            failures.append((q["qid"], q["answers"][0]))
    # Checked on the data at hand: every English answer occurs verbatim in its gold paragraph.
    assert failures == []


@needs_data
def test_languages_and_max_queries(src) -> None:
    cfg = BenchmarkConfig(source=str(DATA), languages=["zh", "de"], max_queries_per_language=10)
    t = build_xquad(cfg, src)
    q = t.queries.to_pylist()
    first10 = sorted({qq.base_id for qq in src.xquad["de"]})[:10]
    for lang in ("de", "zh"):
        assert sorted(base(r["qid"]) for r in q if r["lang"] == lang) == first10
    assert len(q) == 20
    with pytest.raises(BenchmarkError, match=r"\['xx'\] not in"):
        build_xquad(BenchmarkConfig(source=str(DATA), languages=["xx"]), src)


@needs_data
def test_corpus_limit_keeps_golds(src) -> None:
    cfg = BenchmarkConfig(source=str(DATA), max_queries_per_language=50, corpus_limit=300, languages=["de"])
    t = build_xquad(cfg, src)
    docids = t.corpus.column("docid").to_pylist()
    golds = set(t.queries.column("gold_docid").to_pylist())
    assert len(docids) == 300 and golds <= set(docids)
    assert t.extra["corpus_limit"]["exceeded_by_golds"] is False
    # deterministic, and a different seed picks other distractors
    assert build_xquad(cfg, src).corpus.equals(t.corpus)
    other = build_xquad(BenchmarkConfig(**{**cfg.__dict__, "seed": 14}), src).corpus.column("docid").to_pylist()
    assert set(other) != set(docids) and golds <= set(other)
    # input order kept
    order = {d: i for i, d in enumerate(src_docids(src))}
    assert [order[d] for d in docids] == sorted(order[d] for d in docids)
    # fewer slots than golds: every gold kept, and the manifest says so
    small = build_xquad(BenchmarkConfig(source=str(DATA), corpus_limit=100), src)
    assert small.corpus.num_rows == 240
    assert small.extra["corpus_limit"]["exceeded_by_golds"] is True and small.notes


def src_docids(src) -> list:
    return [p[2] for p in src.paragraphs]


@needs_data
def test_heldout_split(src) -> None:
    frac = 0.3
    t = build_xquad(BenchmarkConfig(source=str(DATA), heldout_fraction=frac), src)
    xquad_ids = {q.base_id for q in src.xquad["en"]}
    heldout = {b for b in xquad_ids if seed_for(13, "heldout", b) / 2**63 < frac}
    assert 0.2 < len(heldout) / len(xquad_ids) < 0.4
    q = t.queries.to_pylist()
    evaluated = {base(r["qid"]) for r in q}
    for lang in NON_EN:  # the same questions are removed in every language
        assert {base(r["qid"]) for r in q if r["lang"] == lang} == evaluated
    assert t.provided is not None and t.provided.schema.equals(PROVIDED_SCHEMA)
    p = t.provided.to_pylist()
    provided_bases = {base(r["qid"]) for r in p}
    assert not provided_bases & evaluated
    assert heldout | evaluated == xquad_ids and not heldout & evaluated  # a partition of XQuAD ids
    # XQuAD repeats some question texts under two ids; a held-out id whose text (in any
    # language) is also an evaluated question's text is not provided, or the text would leak.
    texts: Dict[str, set] = {}
    for lang, qs in src.xquad.items():
        for qq in qs:
            texts.setdefault(qq.base_id, set()).add((lang, qq.text))
    eval_texts = set().union(*(texts[b] for b in evaluated))
    twins = {b for b in heldout if texts[b] & eval_texts}
    assert 0 < len(twins) < 20
    assert provided_bases & xquad_ids == heldout - twins
    assert not {(r["lang"], r["text"]) for r in p} & {(r["lang"], r["text"]) for r in q}
    # every language version of a held-out question, English SQuAD questions of other paragraphs
    assert {r["lang"] for r in p if base(r["qid"]) in heldout} == set(XQUAD_LANGUAGES)
    assert {r["lang"] for r in p if base(r["qid"]) not in xquad_ids} == {"en"}
    assert len(p) == len({r["qid"] for r in p})
    corpus_docids = set(t.corpus.column("docid").to_pylist())
    assert all(r["docid"] in corpus_docids and r["id"] == passage_id(r["docid"]) for r in p)
    # with a corpus limit, provided questions only point at passages that are in the corpus
    lim = build_xquad(BenchmarkConfig(source=str(DATA), heldout_fraction=frac, corpus_limit=300), src)
    assert set(lim.provided.column("docid").to_pylist()) <= set(lim.corpus.column("docid").to_pylist())
    left_out = t.extra["provided_left_out"]
    assert left_out["not_in_corpus"] == 0
    assert len(p) + left_out["same_text_as_evaluated"] == len(heldout) * len(XQUAD_LANGUAGES) + len(
        set(src.squad) - xquad_ids
    )


@needs_data
def test_prepare_is_deterministic(prepared, tmp_path: Path) -> None:
    out, manifest, tables = prepared
    again, t2 = prepare_tables(BenchmarkConfig(source=str(DATA)), tmp_path / "b2")
    for name in ("queries", "quarantine"):
        assert (tmp_path / "b2" / again["files"][name]["file"]).read_bytes() == (out / manifest["files"][name]["file"]).read_bytes()
    assert again["files"] == manifest["files"] and again["corpus_hash"] == manifest["corpus_hash"]
    assert t2["corpus"].equals(tables["corpus"])


# -- xquad from a small synthetic source (edge cases the real data lacks) --------
def small_xquad(root: Path, dup_id: bool = False, single_dev: bool = False) -> Path:
    arts = [
        {"title": "Alpha_One", "paragraphs": [
            {"context": "Alpha is the first letter.", "qas": [("q1", "What is first?", "Alpha")]},
            {"context": "Beta comes second.", "qas": [("q2", "What is second?", "Beta")]},
        ]},
        {"title": "Gamma", "paragraphs": [
            {"context": "Gamma rays are energetic.", "qas": [("q3", "What is energetic?", "Gamma rays")]
             + ([("q1", "dup?", "x")] if dup_id else [])},
        ]},
    ]
    if single_dev:
        (root / "squad-v1.1-dev").mkdir(parents=True)
        (root / "squad-v1.1-dev" / "dev-v1.1.json").write_text(json.dumps(squad_json(arts)))
    else:
        write_lines(root / "squad-v1.1-dev" / "part1.json", [json.dumps(squad_json(arts[:1]))])
        write_lines(root / "squad-v1.1-dev" / "part2.json", [json.dumps(squad_json(arts[1:]))])
    xq = [{"title": "Alpha_One", "paragraphs": [
        {"context": "Alpha is the first letter.", "qas": [("q1", "{q1}", "Alpha")]},
        {"context": "Beta comes second.", "qas": [("q2", "{q2}", "Beta")]}]}]
    for lang, q1, q2 in (("en", "What is first?", "What is second?"), ("de", "Was ist zuerst?", "  ")):
        doc = json.dumps(squad_json(xq)).replace("{q1}", q1).replace("{q2}", q2)
        write_lines(root / "xquad" / f"xquad.{lang}.json", [doc])
    return root


def test_small_xquad_empty_question_quarantined(tmp_path: Path, ray_local) -> None:
    root = small_xquad(tmp_path / "src")
    m, t = prepare_tables(BenchmarkConfig(source=str(root)), tmp_path / "out")
    assert t["corpus"].column("docid").to_pylist() == ["Alpha_One#0", "Alpha_One#1", "Gamma#0"]
    assert t["queries"].to_pylist() == [
        {"qid": "q1-de", "lang": "de", "text": "Was ist zuerst?", "answers": ["Alpha"], "gold_docid": "Alpha_One#0"}
    ]
    quarantine = t["quarantine"].to_pylist()
    assert len(quarantine) == 1 and quarantine[0]["reason"] == "empty query text"
    assert quarantine[0]["source"].endswith("xquad.de.json") and quarantine[0]["docid"] == "Alpha_One#1"
    assert m["counts"]["quarantined"] == 1
    # a later prepare without provided must not leave a stale provided table behind
    m2, t2 = prepare_tables(BenchmarkConfig(source=str(root), heldout_fraction=0.5), tmp_path / "out")
    assert "provided" in t2 and (tmp_path / "out" / m2["files"]["provided"]["file"]).exists()
    m3, t3 = prepare_tables(BenchmarkConfig(source=str(root)), tmp_path / "out")
    assert set(t3) == {"corpus", "queries", "quarantine"} and not list((tmp_path / "out" / "benchmark").rglob("provided*"))


def test_small_xquad_id_in_two_paragraphs_raises(tmp_path: Path, ray_local) -> None:
    root = small_xquad(tmp_path / "src", dup_id=True, single_dev=True)
    with pytest.raises(BenchmarkError, match="do not map to exactly one SQuAD paragraph"):
        prepare_tables(BenchmarkConfig(source=str(root)), tmp_path / "out")


def test_tampered_file_is_detected(tmp_path: Path, ray_local) -> None:
    root = small_xquad(tmp_path / "src")
    m, _ = prepare_tables(BenchmarkConfig(source=str(root)), tmp_path / "out")
    rec = m["files"]["queries"]
    S.write_table(str(tmp_path / "out" / rec["file"]), pa.table({"qid": ["x"]}))
    with pytest.raises(IntegrityError, match="queries.parquet does not match its sha256"):
        read_table_verified(S, str(tmp_path / "out"), rec)


def test_xquad_url_mapping() -> None:
    f = xquad_files(XQUAD_URL_ROOT)
    assert f.squad == [SQUAD_DEV_URL]
    assert f.xquad["de"] == "https://github.com/google-deepmind/xquad/raw/master/xquad.de.json"
    assert sorted(f.xquad) == sorted(XQUAD_LANGUAGES)
    g = xquad_files("https://github.com/google-deepmind/xquad/", languages=["th"])
    assert g.xquad == {
        "en": "https://github.com/google-deepmind/xquad/raw/master/xquad.en.json",
        "th": "https://github.com/google-deepmind/xquad/raw/master/xquad.th.json",
    }


# -- xor-tydi and files kinds ------------------------------------------------------
def write_xor(root: Path) -> Dict[str, str]:
    tsv = write_lines(root / "psgs_w100.tsv", [
        b"id\ttext\ttitle",
        b'1\t"Aaron is the brother of ""Moses"""\tAaron',
        b"2\tTokyo is the capital of Japan.\tTokyo",
        b"3\tHelsinki is the capital of Finland.\tHelsinki",
        b"4\t\tEmpty",
    ])
    dev = write_lines(root / "xor_dev_retrieve_eng_span.jsonl", [
        {"id": "-100", "lang": "ja", "question": "日本の首都は？", "answers": ["Tokyo"]},
        {"id": "-050", "lang": "fi", "question": "Mikä on Suomen pääkaupunki?", "answers": ["Helsinki"]},
        {"id": "-020", "lang": "ja", "question": "アロンの兄弟は？", "answers": ["Moses"]},
        {"id": "-010", "lang": "fi", "question": "", "answers": ["x"]},
        {"id": "-001", "lang": "ko", "question": "한국의 수도는?", "answers": ["Seoul"]},
    ])
    return {"corpus": str(tsv), "queries": str(dev)}


def test_xor_tydi(tmp_path: Path, ray_local) -> None:
    files = write_xor(tmp_path)
    cfg = BenchmarkConfig(kind="xor-tydi", **files, languages=["ja", "fi"], max_queries_per_language=1)
    m, t = prepare_tables(cfg, tmp_path / "out")
    assert t["corpus"].column("docid").to_pylist() == ["1", "2", "3"]
    assert t["corpus"].column("text")[0].as_py() == 'Aaron is the brother of "Moses"'
    # first query per language by qid sorted as strings (ja: "-020" < "-100"; fi: "-010" is
    # quarantined), then in file order; ko is filtered out by languages
    assert t["queries"].to_pylist() == [
        {"qid": "-050", "lang": "fi", "text": "Mikä on Suomen pääkaupunki?", "answers": ["Helsinki"], "gold_docid": None},
        {"qid": "-020", "lang": "ja", "text": "アロンの兄弟は？", "answers": ["Moses"], "gold_docid": None},
    ]
    reasons = {(r["source"], r["reason"]) for r in t["quarantine"].to_pylist()}
    assert reasons == {(files["corpus"], "empty text"), (files["queries"], "empty query text")}
    assert m["counts"] == {"passages": 3, "queries": {"fi": 1, "ja": 1}, "queries_total": 2,
                           "quarantined": 2, "provided": 0}


def test_xor_tydi_duplicate_qid(tmp_path: Path, ray_local) -> None:
    files = write_xor(tmp_path)
    with open(files["queries"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "-100", "lang": "ja", "question": "again", "answers": []}) + "\n")
    with pytest.raises(BenchmarkError, match=r"duplicated qid.*'-100'"):
        prepare_tables(BenchmarkConfig(kind="xor-tydi", **files), tmp_path / "out")


def test_files_kind(tmp_path: Path, ray_local) -> None:
    corpus = write_lines(tmp_path / "c.jsonl", [
        {"docid": f"p{i}", "title": f"T{i}", "text": f"passage number {i}"} for i in range(10)
    ])
    queries = write_parquet(tmp_path / "q.parquet", {
        "qid": ["a", "b", "c"], "lang": ["de", "de", "sw"], "text": ["eins", "zwei", "tatu"],
        "answers": [["1"], [], ["3"]], "gold_docid": ["p3", "p7", None],
    })
    cfg = BenchmarkConfig(kind="files", corpus=str(corpus), queries=str(queries), corpus_limit=4)
    _, t = prepare_tables(cfg, tmp_path / "out")
    docids: Set[str] = set(t["corpus"].column("docid").to_pylist())
    assert len(docids) == 4 and {"p3", "p7"} <= docids
    assert t["queries"].column("gold_docid").to_pylist() == ["p3", "p7", None]

    bad = write_lines(tmp_path / "q.jsonl", [
        {"qid": "a", "lang": "de", "text": "eins", "answers": [], "gold_docid": "p3"},
        {"qid": "b", "lang": "de", "text": "zwei", "answers": [], "gold_docid": "nope1"},
        {"qid": "c", "lang": "de", "text": "drei", "answers": [], "gold_docid": "nope2"},
    ])
    cfg = BenchmarkConfig(kind="files", corpus=str(corpus), queries=str(bad))
    with pytest.raises(BenchmarkError, match=r"2 gold_docid\(s\).*\['nope1', 'nope2'\]"):
        prepare_tables(cfg, tmp_path / "out2")
    assert not (tmp_path / "out2" / "benchmark" / "current.json").exists()
