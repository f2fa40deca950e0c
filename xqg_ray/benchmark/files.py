"""The xor-tydi and files kinds: the question file (JSONL or Parquet), checked row by row.

The corpus of these kinds is read by the ingest stage; only questions are read here.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Set, Tuple

import pyarrow as pa

from .common import (
    QUERIES_SCHEMA,
    BenchmarkError,
    BenchmarkTables,
    first_n_ids,
    quarantine_table,
    raw_text,
    select_languages,
)
from ..config import BenchmarkConfig
from .corpus import decode_line, iter_lines
from ..store.storage import Storage

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
            raise BenchmarkError(f"{uri}:{line}: query record with an empty qid or lang: {raw_text(rec)}")
        # No answers field is fine (retrieval needs none); a bare string is not taken
        # for a one-answer list: "answers": "x" is usually a file in another layout.
        answers = rec.get("answers")
        if answers is None:
            answers = []
        gold = rec.get("gold_docid") if with_gold else None
        why = _query_problem(text, lang, answers)
        if why:
            quarantine.append({"source": uri, "line": line, "docid": None if gold in (None, "") else str(gold), "reason": why, "raw": raw_text(rec)})
            continue
        rows.append({"qid": str(qid), "lang": str(lang), "text": str(text),
                     "answers": [str(a) for a in answers], "gold_docid": None if gold in (None, "") else str(gold)})
    counts: Dict[str, int] = {}
    for r in rows:
        counts[r["qid"]] = counts.get(r["qid"], 0) + 1
    dups = sorted(q for q, c in counts.items() if c > 1)
    if dups:
        raise BenchmarkError(f"{uri}: {len(dups)} duplicated qid(s), e.g. {dups[:5]}")
    langs = select_languages((r["lang"] for r in rows), cfg.languages, uri)
    rows = [r for r in rows if r["lang"] in langs]
    if cfg.max_queries_per_language > 0:
        keep: Set[str] = set()
        for lang in langs:
            keep |= first_n_ids((r["qid"] for r in rows if r["lang"] == lang), cfg.max_queries_per_language) or set()
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
        quarantine=quarantine_table(qquarantine),
        source={"corpus": cfg.corpus, "queries": cfg.queries},
        notes=notes,
        extra={"golds": golds},
    )


