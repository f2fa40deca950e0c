"""Preparing cross-lingual retrieval benchmarks (questions in L, English passages).

:func:`prepare_benchmark` turns one of three sources into the same prepared
tables, written under ``out_uri`` with :class:`~xqg_ray.storage.Storage`:

* ``corpus.parquet``     -- :data:`xqg_ray.corpus.CLEAN_SCHEMA`
* ``queries.parquet``    -- :data:`QUERIES_SCHEMA` (``gold_docid`` null for XOR-TyDi)
* ``quarantine.parquet`` -- :data:`xqg_ray.corpus.QUARANTINE_SCHEMA` (passages
  and queries set aside, with reasons)
* ``provided.parquet``   -- :data:`PROVIDED_SCHEMA`, only when produced (XQuAD
  with ``heldout_fraction > 0``): human questions that are never evaluated, usable
  as "provided" augmentation
* ``manifest.json``      -- written LAST; its presence marks a complete benchmark.

Kinds
    ``xquad``    SQuAD v1.1 dev paragraphs (2,067) as corpus, XQuAD translations as
                 queries, gold = the paragraph holding the question id (XQuAD ids are
                 SQuAD ids; mapped by id, never by text).
    ``xor-tydi`` the DPR-format English Wikipedia TSV + the XOR-Retrieve dev JSONL.
    ``files``    any corpus file(s) + a JSONL/Parquet query table.

Everything is deterministic: no RNG state, every sample is an order by
``ids.seed_for(cfg.seed, ...)``, so preparing twice gives identical bytes.
"""

from __future__ import annotations

import json
import posixpath
import re
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import pyarrow as pa

from .config import BenchmarkConfig
from .errors import UserError
from .corpus import (
    QUARANTINE_SCHEMA,
    collect_passages,
    decode_line,
    iter_lines,
)
from .ids import passage_id, seed_for
from .storage import Storage, join

QUERIES_SCHEMA = pa.schema(
    [
        ("qid", pa.string()),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("gold_docid", pa.string()),
    ]
)

PROVIDED_SCHEMA = pa.schema(
    [
        ("docid", pa.string()),
        ("id", pa.int64()),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("qid", pa.string()),
    ]
)

XQUAD_LANGUAGES: Tuple[str, ...] = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
XQUAD_URL_ROOT = "https://github.com/google-deepmind/xquad/raw/master"
SQUAD_DEV_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"
_XQUAD_NAME = re.compile(r"^xquad\.([A-Za-z]{2,3}(?:-[A-Za-z]+)?)\.json$")


class BenchmarkError(UserError):
    """The benchmark cannot be prepared or loaded; the message says why."""


@dataclass
class BenchmarkTables:
    """The prepared tables before they are written, plus what the manifest reports."""

    corpus: Optional[pa.Table]  # None: the corpus is in files the ingest stage reads
    queries: pa.Table
    quarantine: pa.Table
    provided: Optional[pa.Table] = None
    source: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)  # kind-specific manifest keys


# -- reading sources -----------------------------------------------------------
def _is_url(uri: str) -> bool:
    return uri.startswith("http://") or uri.startswith("https://")


def fetch_url(url: str, timeout: float = 120.0) -> bytes:
    """Download one file; the error says how to work offline instead."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (http(s) only, checked)
            return r.read()
    except Exception as e:  # URLError, HTTPError, timeouts: one actionable message
        raise BenchmarkError(
            f"could not download {url}: {e}. Download the files by hand and set "
            "benchmark.source to a directory holding xquad/ and squad-v1.1-dev/"
        ) from e


def _read_bytes(uri: str, storage: Storage) -> bytes:
    return fetch_url(uri) if _is_url(uri) else storage.read_bytes(uri)


@dataclass
class XQuADFiles:
    """Where the XQuAD language files and the SQuAD dev file(s) are."""

    xquad: Dict[str, str]  # lang -> URI (local/s3 path or URL)
    squad: List[str]  # one dev-v1.1.json, or part1 + part2 in that order


def xquad_files(source: str, storage: Optional[Storage] = None, languages: Sequence[str] = ()) -> XQuADFiles:
    """Map ``benchmark.source`` to the files to read.

    A URL is the root of the XQuAD repository's raw files (a bare
    ``https://github.com/OWNER/REPO`` gets ``/raw/master`` appended); SQuAD comes
    from :data:`SQUAD_DEV_URL`.  Files cannot be listed over HTTP, so the
    language list is ``languages`` (+ "en" for the answers) or all of
    :data:`XQUAD_LANGUAGES`.  A local/S3 directory is listed instead.
    """
    if _is_url(source):
        root = source.rstrip("/")
        if re.fullmatch(r"https://github\.com/[^/]+/[^/]+", root):
            root += "/raw/master"
        langs = sorted(set(languages) | {"en"}) if languages else list(XQUAD_LANGUAGES)
        return XQuADFiles({lang: f"{root}/xquad.{lang}.json" for lang in langs}, [SQUAD_DEV_URL])
    storage = storage or Storage()
    xdir = join(source, "xquad")
    if not storage.is_dir(xdir):
        raise BenchmarkError(f"no xquad/ directory under benchmark.source={source!r} ({xdir})")
    found: Dict[str, str] = {}
    for uri in storage.list_files(xdir, ".json"):
        m = _XQUAD_NAME.match(posixpath.basename(uri.replace("\\", "/")))
        if m:
            found[m.group(1)] = uri
    if not found:
        raise BenchmarkError(f"no xquad.LANG.json files in {xdir}")
    if languages:
        keep = set(languages) | {"en"}
        found = {k: v for k, v in found.items() if k in keep}
    sdir = join(source, "squad-v1.1-dev")
    candidates = [
        [join(sdir, "part1.json"), join(sdir, "part2.json")],
        [join(sdir, "dev-v1.1.json")],
        [join(source, "dev-v1.1.json")],
    ]
    for files in candidates:
        if storage.exists(files[0]):
            missing = [f for f in files if not storage.exists(f)]
            if missing:
                raise BenchmarkError(f"SQuAD dev set is incomplete: {missing} missing")
            return XQuADFiles(dict(sorted(found.items())), files)
    raise BenchmarkError(
        f"no SQuAD v1.1 dev set under {source!r}: expected squad-v1.1-dev/part1.json + part2.json "
        "or squad-v1.1-dev/dev-v1.1.json"
    )


@dataclass
class XQuADQuestion:
    base_id: str
    text: str
    answers: List[str]
    line: int  # 1-based ordinal of the question in its file (for quarantine rows)


@dataclass
class SquadQuestion:
    docid: str
    text: str
    answers: List[str]


@dataclass
class XQuADSource:
    """Parsed XQuAD + SQuAD dev, independent of any benchmark setting."""

    files: XQuADFiles
    paragraphs: List[Tuple[str, int, str, str, str]]  # (source, ordinal, docid, title, text)
    squad: Dict[str, SquadQuestion]  # SQuAD question id -> where and what (file order)
    id_docids: Dict[str, List[str]]  # question id -> every paragraph that holds it
    xquad: Dict[str, List[XQuADQuestion]]  # lang -> questions in file order
    context_mismatches: int = 0  # xquad.en contexts differing from the SQuAD paragraph


def _answers(qa: Dict[str, Any]) -> List[str]:
    return [str(a.get("text", "")) for a in qa.get("answers", []) if isinstance(a, dict)]


def read_xquad_source(source: str, storage: Optional[Storage] = None, languages: Sequence[str] = ()) -> XQuADSource:
    """Parse the SQuAD dev paragraphs and the XQuAD files (``languages`` + en; all if empty)."""
    storage = storage or Storage()
    files = xquad_files(source, storage, languages)
    paragraphs: List[Tuple[str, int, str, str, str]] = []
    squad: Dict[str, SquadQuestion] = {}
    id_docids: Dict[str, List[str]] = {}
    contexts: Dict[str, str] = {}
    for uri in files.squad:
        data = json.loads(_read_bytes(uri, storage))
        ordinal = 0
        for article in data["data"]:
            title = article["title"]
            for i, para in enumerate(article["paragraphs"]):
                ordinal += 1
                # Index within the article in the dev file: stable, readable docids.
                docid = f"{title}#{i}"
                paragraphs.append((uri, ordinal, docid, title.replace("_", " "), para["context"]))
                contexts[docid] = para["context"]
                for qa in para["qas"]:
                    id_docids.setdefault(qa["id"], []).append(docid)
                    squad.setdefault(qa["id"], SquadQuestion(docid, qa["question"], _answers(qa)))
    xquad: Dict[str, List[XQuADQuestion]] = {}
    mismatches = 0
    for lang, uri in files.xquad.items():
        data = json.loads(_read_bytes(uri, storage))
        qs: List[XQuADQuestion] = []
        for article in data["data"]:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    qs.append(XQuADQuestion(qa["id"], qa["question"], _answers(qa), len(qs) + 1))
                    if lang == "en":
                        docs = id_docids.get(qa["id"], [])
                        if len(docs) == 1 and contexts[docs[0]] != para["context"]:
                            mismatches += 1
        xquad[lang] = qs
    return XQuADSource(files, paragraphs, squad, id_docids, xquad, mismatches)


# -- shared steps ----------------------------------------------------------------
def _select_languages(present: Iterable[str], wanted: Sequence[str], what: str) -> List[str]:
    present = sorted(set(present))
    if not wanted:
        return present
    missing = [lang for lang in wanted if lang not in present]
    if missing:
        raise BenchmarkError(f"benchmark.languages {missing} not in {what} (present: {present})")
    return sorted(set(wanted))


def _first_n_ids(ids: Iterable[str], n: int) -> Optional[Set[str]]:
    """The first ``n`` ids in sorted order (None = keep all)."""
    return set(sorted(set(ids))[:n]) if n > 0 else None


def _limit_corpus(corpus: pa.Table, golds: Set[str], limit: int, seed: int) -> Tuple[pa.Table, Dict[str, Any]]:
    """Every gold passage plus deterministic distractors up to ``limit`` rows, input order kept."""
    if limit <= 0:
        return corpus, {}
    info: Dict[str, Any] = {"requested": limit, "golds": len(golds), "exceeded_by_golds": len(golds) > limit}
    if corpus.num_rows <= limit:
        return corpus, info
    docids = corpus.column("docid").to_pylist()
    gold_idx = [i for i, d in enumerate(docids) if d in golds]
    rest = [i for i, d in enumerate(docids) if d not in golds]
    # A hash order, not an RNG: the same passages are chosen on every machine.
    rest.sort(key=lambda i: (seed_for(seed, docids[i]), docids[i]))
    keep = sorted(gold_idx + rest[: max(0, limit - len(gold_idx))])
    return corpus.take(pa.array(keep, type=pa.int64())), info


def _quarantine_table(rows: List[Dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)


def _raw(obj: Any) -> str:
    return repr(obj)[:500]


# -- xquad ---------------------------------------------------------------------
def build_xquad(cfg: BenchmarkConfig, src: XQuADSource) -> BenchmarkTables:
    """The XQuAD-R style benchmark from a parsed source (no IO)."""
    notes: List[str] = []
    # Every XQuAD id must sit in exactly one SQuAD paragraph, or gold labels lie.
    n_paras = {q.base_id: len(src.id_docids.get(q.base_id, [])) for qs in src.xquad.values() for q in qs}
    bad = sorted((b, n) for b, n in n_paras.items() if n != 1)
    if bad:
        raise BenchmarkError(f"{len(bad)} XQuAD ids do not map to exactly one SQuAD paragraph, e.g. (id, paragraphs): {bad[:5]}")
    gold = {b: docs[0] for b, docs in src.id_docids.items() if len(docs) == 1}
    if src.context_mismatches:
        notes.append(f"{src.context_mismatches} xquad.en contexts differ from their SQuAD paragraph (gold mapped by id)")

    present = [lang for lang in src.xquad if lang != "en"] if not cfg.languages else list(src.xquad)
    langs = _select_languages(present, cfg.languages, "the XQuAD files")
    all_bases = sorted({q.base_id for qs in src.xquad.values() for q in qs})
    frac = cfg.heldout_fraction
    heldout = {b for b in all_bases if frac > 0 and seed_for(cfg.seed, "heldout", b) / 2**63 < frac}

    en_answers = {q.base_id: q.answers for q in src.xquad.get("en", [])}

    def answers_for(base: str) -> List[str]:
        # English answers only: passages are English.  xquad.en first, then SQuAD's.
        out: List[str] = []
        for a in en_answers.get(base, []) + src.squad[base].answers:
            if a not in out:
                out.append(a)
        return out

    qrows: List[Dict[str, Any]] = []
    quarantine: List[Dict[str, Any]] = []
    for lang in langs:
        cands = []
        for q in src.xquad[lang]:
            if not q.text.strip():
                quarantine.append(
                    {"source": src.files.xquad[lang], "line": q.line, "docid": gold[q.base_id],
                     "reason": "empty query text", "raw": _raw({"id": q.base_id, "lang": lang, "question": q.text})}
                )
            elif q.base_id not in heldout:
                cands.append(q)
        keep = _first_n_ids((q.base_id for q in cands), cfg.max_queries_per_language)
        for q in cands:
            if keep is None or q.base_id in keep:
                qrows.append({"qid": f"{q.base_id}-{lang}", "lang": lang, "text": q.text,
                              "answers": answers_for(q.base_id), "gold_docid": gold[q.base_id]})

    qids = [r["qid"] for r in qrows]
    if len(set(qids)) != len(qids):
        dups = sorted({q for q in qids if qids.count(q) > 1})
        raise BenchmarkError(f"duplicated XQuAD question ids within a language file, e.g. {dups[:5]}")

    read = collect_passages(src.paragraphs)
    golds = {r["gold_docid"] for r in qrows}
    clean_docids = set(read.clean.column("docid").to_pylist())
    lost = sorted(golds - clean_docids)
    if lost:
        raise BenchmarkError(f"{len(lost)} gold paragraphs were quarantined, e.g. {lost[:5]}; see the quarantine table")
    corpus, limit_info = _limit_corpus(read.clean, golds, cfg.corpus_limit, cfg.seed)
    if limit_info.get("exceeded_by_golds"):
        notes.append(f"corpus_limit={cfg.corpus_limit} < {len(golds)} gold passages: kept every gold passage")

    provided = None
    extra: Dict[str, Any] = {"heldout_base_ids": len(heldout)}
    if limit_info:
        extra["corpus_limit"] = limit_info
    if frac > 0:
        evaluated = {r["qid"].rsplit("-", 1)[0] for r in qrows}
        provided, dropped = _xquad_provided(src, heldout, evaluated, gold, set(corpus.column("docid").to_pylist()))
        extra["provided_left_out"] = dropped
        if dropped["not_in_corpus"]:
            notes.append(f"{dropped['not_in_corpus']} provided questions left out: their paragraph is not in the corpus")
        if dropped["same_text_as_evaluated"]:
            notes.append(
                f"{dropped['same_text_as_evaluated']} provided questions left out: their id shares a question "
                "text with an evaluated question"
            )
    queries = pa.Table.from_pylist(qrows, schema=QUERIES_SCHEMA)
    files = list(src.files.squad) + list(src.files.xquad.values())
    return BenchmarkTables(
        corpus=corpus,
        queries=queries,
        quarantine=pa.concat_tables([read.quarantine, _quarantine_table(quarantine)]),
        provided=provided,
        source={"root": None, "files": files},
        notes=notes,
        extra=extra,
    )


def _xquad_provided(
    src: XQuADSource, heldout: Set[str], evaluated: Set[str], gold: Dict[str, str], corpus_docids: Set[str]
) -> Tuple[pa.Table, Dict[str, int]]:
    """Human questions never evaluated: held-out XQuAD (all languages) + SQuAD English.

    Disjoint by base id is not enough: XQuAD/SQuAD repeat some question texts
    under different ids ("Who won Super Bowl XLIX?" twice, in every language).
    A base id sharing any (lang, text) with an evaluated base id is left out
    with all its language versions, so no evaluated question text leaks.
    Returns the table and the counts of rows left out by reason.
    """
    texts: Dict[str, Set[Tuple[str, str]]] = {}
    for lang, qs in src.xquad.items():
        for q in qs:
            texts.setdefault(q.base_id, set()).add((lang, q.text))
    for b, sq in src.squad.items():
        texts.setdefault(b, set()).add(("en", sq.text))
    evaluated_texts: Set[Tuple[str, str]] = set()
    for b in evaluated:
        evaluated_texts |= texts[b]

    rows: List[Dict[str, Any]] = []
    seen: Set[str] = set()
    dropped = {"not_in_corpus": 0, "same_text_as_evaluated": 0}

    def add(base: str, lang: str, text: str, docid: str) -> None:
        qid = f"{base}-{lang}"
        if qid in seen or not text.strip():
            return  # xquad.en and SQuAD hold the same English question once
        seen.add(qid)
        if docid not in corpus_docids:
            dropped["not_in_corpus"] += 1  # augmentation attaches to corpus passages only
        elif texts[base] & evaluated_texts:
            dropped["same_text_as_evaluated"] += 1
        else:
            rows.append({"docid": docid, "id": passage_id(docid), "lang": lang, "text": text, "qid": qid})

    for lang in sorted(src.xquad):
        for q in src.xquad[lang]:
            if q.base_id in heldout:
                add(q.base_id, lang, q.text, gold[q.base_id])
    for base, sq in src.squad.items():
        if base not in evaluated:
            add(base, "en", sq.text, sq.docid)
    # The point of the held-out split: an evaluated question never leaks into augmentation.
    leaked = {r["qid"].rsplit("-", 1)[0] for r in rows} & evaluated
    assert not leaked, f"provided questions overlap evaluated ones: {sorted(leaked)[:5]}"
    assert not {(r["lang"], r["text"]) for r in rows} & evaluated_texts, "provided text equals an evaluated one"
    return pa.Table.from_pylist(rows, schema=PROVIDED_SCHEMA), dropped


# -- xor-tydi / files ----------------------------------------------------------
_QUERY_ALIASES = {"qid": ("qid", "id"), "text": ("text", "question"), "lang": ("lang",)}


def _query_records(storage: Storage, uri: str) -> List[Tuple[int, Dict[str, Any]]]:
    """(line or row number, record) from a JSONL(.gz) or Parquet query file.

    Unlike passages, a broken query line stops preparation: the evaluation set
    must be exactly what the file says, or scores are not comparable.
    """
    low = uri.lower()
    if low.endswith(".parquet"):
        return list(enumerate(storage.read_table(uri).to_pylist(), start=1))
    if not (low.endswith(".jsonl") or low.endswith(".jsonl.gz")):
        raise BenchmarkError(f"{uri}: query files must be .jsonl, .jsonl.gz or .parquet")
    out: List[Tuple[int, Dict[str, Any]]] = []
    for line_no, offset, raw in iter_lines(storage, uri):
        s, why = decode_line(raw.removeprefix(b"\xef\xbb\xbf") if line_no == 1 else raw, offset)
        if s is None:
            raise BenchmarkError(f"{uri}:{line_no}: {why}")
        if not s.strip():
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"{uri}:{line_no}: invalid JSON: {e.msg}") from e
        if not isinstance(obj, dict):
            raise BenchmarkError(f"{uri}:{line_no}: not a JSON object")
        out.append((line_no, obj))
    return out


def _field(rec: Dict[str, Any], name: str, uri: str, line: int) -> Any:
    for key in _QUERY_ALIASES[name]:
        if key in rec:
            return rec[key]
    raise BenchmarkError(f"{uri}:{line}: query record has no {'/'.join(_QUERY_ALIASES[name])} field; keys: {sorted(rec)}")


def known_language(code: str) -> bool:
    """An ISO 639-1 code (pycountry): a misspelled code must not become a language of its own."""
    import pycountry

    return isinstance(code, str) and len(code) == 2 and pycountry.languages.get(alpha_2=code.lower()) is not None


def _query_problem(text: Any, lang: Any, answers: Any) -> str:
    """Why a query record cannot be evaluated, or "" if it can."""
    if text is None or not isinstance(text, str):
        return f"question text is not a string ({type(text).__name__})"
    if not text.strip():
        return "empty query text"
    if not isinstance(lang, str) or not known_language(lang):
        return f"unknown language code {lang!r} (use ISO 639-1, e.g. de, zh, ar)"
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        return f"answers is not a list of strings ({type(answers).__name__})"
    return ""


def _read_queries(
    cfg: BenchmarkConfig, storage: Storage, with_gold: bool
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(query rows after language/limit filters, quarantine rows) from cfg.queries."""
    uri = cfg.queries
    rows: List[Dict[str, Any]] = []
    quarantine: List[Dict[str, Any]] = []
    for line, rec in _query_records(storage, uri):
        qid, lang, text = (_field(rec, k, uri, line) for k in ("qid", "lang", "text"))
        if qid in (None, "") or lang in (None, ""):
            raise BenchmarkError(f"{uri}:{line}: query record with an empty qid or lang: {_raw(rec)}")
        answers = rec.get("answers") or []
        if isinstance(answers, str):
            answers = [answers]
        gold = rec.get("gold_docid") if with_gold else None
        why = _query_problem(text, lang, answers)
        if why:
            quarantine.append({"source": uri, "line": line, "docid": None if gold in (None, "") else str(gold), "reason": why, "raw": _raw(rec)})
            continue
        rows.append({"qid": str(qid), "lang": str(lang), "text": str(text),
                     "answers": [str(a) for a in answers], "gold_docid": None if gold in (None, "") else str(gold)})
    counts: Dict[str, int] = {}
    for r in rows:
        counts[r["qid"]] = counts.get(r["qid"], 0) + 1
    dups = sorted(q for q, c in counts.items() if c > 1)
    if dups:
        raise BenchmarkError(f"{uri}: {len(dups)} duplicated qid(s), e.g. {dups[:5]}")
    langs = _select_languages((r["lang"] for r in rows), cfg.languages, uri)
    rows = [r for r in rows if r["lang"] in langs]
    if cfg.max_queries_per_language > 0:
        keep: Set[str] = set()
        for lang in langs:
            keep |= _first_n_ids((r["qid"] for r in rows if r["lang"] == lang), cfg.max_queries_per_language) or set()
        rows = [r for r in rows if r["qid"] in keep]
    return rows, quarantine


def build_from_files(cfg: BenchmarkConfig, storage: Storage) -> BenchmarkTables:
    """``xor-tydi`` (no gold passages) and ``files`` (optional gold_docid per query): the queries.

    The corpus itself is not read here: the ingest stage streams it through Ray
    Data (``xqg_ray.ingest``); ``extra["golds"]`` lists the gold docids it must keep.
    """
    if not cfg.corpus or not cfg.queries:
        raise BenchmarkError(f"benchmark.kind={cfg.kind} needs benchmark.corpus and benchmark.queries")
    rows, qquarantine = _read_queries(cfg, storage, with_gold=cfg.kind == "files")
    notes: List[str] = []
    if cfg.heldout_fraction > 0:
        notes.append(f"heldout_fraction ignored for kind={cfg.kind} (only xquad has held-out human questions)")
    golds = sorted({r["gold_docid"] for r in rows if r["gold_docid"] is not None})
    return BenchmarkTables(
        corpus=None,
        queries=pa.Table.from_pylist(rows, schema=QUERIES_SCHEMA),
        quarantine=_quarantine_table(qquarantine),
        source={"corpus": cfg.corpus, "queries": cfg.queries},
        notes=notes,
        extra={"golds": golds},
    )


def build_benchmark(cfg: BenchmarkConfig, storage: Optional[Storage] = None) -> BenchmarkTables:
    """The prepared tables for ``cfg.kind`` (reads inputs, writes nothing)."""
    storage = storage or Storage()
    if cfg.kind == "xquad":
        # Held-out questions are provided in *every* language: read them all then.
        langs = () if cfg.heldout_fraction > 0 else cfg.languages
        tables = build_xquad(cfg, read_xquad_source(cfg.source, storage, langs))
        tables.source["root"] = cfg.source
        return tables
    if cfg.kind in ("xor-tydi", "files"):
        return build_from_files(cfg, storage)
    raise BenchmarkError(f"benchmark.kind={cfg.kind!r}: use xquad, xor-tydi or files")


__all__ = [
    "BenchmarkError",
    "BenchmarkTables",
    "PROVIDED_SCHEMA",
    "QUERIES_SCHEMA",
    "XQuADFiles",
    "XQuADSource",
    "build_benchmark",
    "build_from_files",
    "build_xquad",
    "known_language",
    "fetch_url",
    "read_xquad_source",
    "xquad_files",
]
