"""Building the benchmark tables (questions in L, English passages): the questions, held-out
human questions and, for XQuAD, the corpus passages.

:func:`build_benchmark` turns one of three sources into :class:`BenchmarkTables`;
the benchmark stage (``xqg_ray.stages.prepare``) writes them as committed files
and hands the corpus to the streaming ingest.

Kinds
    ``xquad``    SQuAD v1.1 dev paragraphs (2,067) as corpus, XQuAD translations as
                 queries, gold = the paragraph holding the question id (XQuAD ids are
                 SQuAD ids; mapped by id, never by text).
    ``xor-tydi`` the DPR-format English Wikipedia TSV + the XOR-Retrieve dev JSONL
                 (questions here, see ``benchmark_files``; the corpus goes to the ingest).
    ``files``    any corpus file(s) + a JSONL/Parquet query table.

Everything is deterministic: no RNG state, every sample is an order by
``ids.seed_for(cfg.seed, ...)``, so preparing twice gives identical bytes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

import pyarrow as pa

from .common import (
    PROVIDED_SCHEMA,
    QUERIES_SCHEMA,
    BenchmarkError,
    BenchmarkTables,
    first_n_ids,
    limit_corpus,
    quarantine_table,
    raw_text,
    select_languages,
)
from .files import build_from_files, known_language
from ..config import BenchmarkConfig
from .corpus import (
    collect_passages,
)
from ..ids import passage_id, seed_for
from ..store.storage import Storage
from .xquad import (
    SQUAD_DEV_URL,
    XQUAD_LANGUAGES,
    XQUAD_URL_ROOT,
    XQuADFiles,
    XQuADSource,
    fetch_url,
    read_xquad_source,
    xquad_files,
)


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
    langs = select_languages(present, cfg.languages, "the XQuAD files")
    all_bases = sorted({q.base_id for qs in src.xquad.values() for q in qs})
    frac = cfg.heldout_fraction
    heldout = {b for b in all_bases if frac > 0 and seed_for(cfg.seed, "heldout", b) / 2**63 < frac}
    dev = dev_bases(all_bases, heldout, cfg)

    en_answers = {q.base_id: q.answers for q in src.xquad.get("en", [])}

    def answers_for(base: str) -> List[str]:
        # English answers only: passages are English.  xquad.en first, then SQuAD's.
        out: List[str] = []
        for a in en_answers.get(base, []) + src.squad[base].answers:
            if a not in out:
                out.append(a)
        return out

    qrows: List[Dict[str, Any]] = []
    devrows: List[Dict[str, Any]] = []
    quarantine: List[Dict[str, Any]] = []
    for lang in langs:
        cands: Dict[bool, List[Any]] = {False: [], True: []}  # is a dev question -> candidates
        for q in src.xquad[lang]:
            if not q.text.strip():
                quarantine.append(
                    {"source": src.files.xquad[lang], "line": q.line, "docid": gold[q.base_id],
                     "reason": "empty query text", "raw": raw_text({"id": q.base_id, "lang": lang, "question": q.text})}
                )
            elif q.base_id not in heldout:
                cands[q.base_id in dev].append(q)
        for is_dev, rows in ((False, qrows), (True, devrows)):
            keep = first_n_ids((q.base_id for q in cands[is_dev]), cfg.max_queries_per_language)
            for q in cands[is_dev]:
                if keep is None or q.base_id in keep:
                    rows.append({"qid": f"{q.base_id}-{lang}", "lang": lang, "text": q.text,
                                 "answers": answers_for(q.base_id), "gold_docid": gold[q.base_id]})
    devrows, dev_dropped = drop_shared_texts(devrows, qrows)

    qids = [r["qid"] for r in qrows]
    if len(set(qids)) != len(qids):
        dups = sorted({q for q in qids if qids.count(q) > 1})
        raise BenchmarkError(f"duplicated XQuAD question ids within a language file, e.g. {dups[:5]}")

    read = collect_passages(src.paragraphs)
    golds = {r["gold_docid"] for r in qrows + devrows}
    clean_docids = set(read.clean.column("docid").to_pylist())
    lost = sorted(golds - clean_docids)
    if lost:
        raise BenchmarkError(f"{len(lost)} gold paragraphs were quarantined, e.g. {lost[:5]}; see the quarantine table")
    corpus, limit_info = limit_corpus(read.clean, golds, cfg.corpus_limit, cfg.seed)
    if limit_info.get("exceeded_by_golds"):
        notes.append(f"corpus_limit={cfg.corpus_limit} < {len(golds)} gold passages: kept every gold passage")

    provided = None
    extra: Dict[str, Any] = {"heldout_base_ids": len(heldout)}
    if cfg.dev_fraction > 0:
        extra["dev"] = {"base_ids": len({r["qid"].rsplit("-", 1)[0] for r in devrows}), "drawn_base_ids": len(dev),
                        "questions": len(devrows), "same_text_as_evaluated": dev_dropped}
        if dev_dropped:
            notes.append(f"{dev_dropped} dev questions left out: their id shares a question text with an evaluated question")
    if limit_info:
        extra["corpus_limit"] = limit_info
    if frac > 0:
        # Dev questions are protected like evaluated ones: a provided question must not leak into tuning either.
        evaluated = {r["qid"].rsplit("-", 1)[0] for r in qrows + devrows}
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
        quarantine=pa.concat_tables([read.quarantine, quarantine_table(quarantine)]),
        provided=provided,
        dev=pa.Table.from_pylist(devrows, schema=QUERIES_SCHEMA) if cfg.dev_fraction > 0 else None,
        source={"root": None, "files": files},
        notes=notes,
        extra=extra,
    )


def dev_bases(all_bases: List[str], heldout: Set[str], cfg: BenchmarkConfig) -> Set[str]:
    """The dev split: base ids drawn among the non-held-out ones with their own seeded key.

    The held-out draw is left exactly as it is (``seed_for(seed, "heldout", b)``),
    so ``dev_fraction=0`` changes no question's side; the conditional rate
    ``d / (1 - h)`` makes dev about ``dev_fraction`` of all base ids.  By base id,
    so no translation of a dev question is evaluated or provided.
    """
    d, h = cfg.dev_fraction, cfg.heldout_fraction
    if d <= 0:
        return set()
    rate = d / (1.0 - h)
    return {b for b in all_bases if b not in heldout and seed_for(cfg.seed, "dev", b) / 2**63 < rate}


def drop_shared_texts(devrows: List[Dict[str, Any]], qrows: List[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], int]:
    """Dev rows without the base ids that share any (lang, text) with an evaluated question, and how many rows went.

    XQuAD repeats some question texts under different ids; tuning on a dev copy
    of an evaluated question would be tuning on the evaluated question.
    """
    evaluated_texts = {(r["lang"], r["text"]) for r in qrows}
    twins = {r["qid"].rsplit("-", 1)[0] for r in devrows if (r["lang"], r["text"]) in evaluated_texts}
    kept = [r for r in devrows if r["qid"].rsplit("-", 1)[0] not in twins]
    return kept, len(devrows) - len(kept)


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
    "SQUAD_DEV_URL",
    "XQUAD_LANGUAGES",
    "XQUAD_URL_ROOT",
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
